"""The life of a run, whatever it runs (the pipeline, an eval): one run at a time per folder, the
settings checked against what the folder already holds, a record of them (run.json), and each
stage closed with what it spent.

The pipeline and eval differ only in what a stale stage means: the pipeline refuses to mix rows
built under other settings (`--fresh` rebuilds), eval starts over quietly while nothing is judged.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trace_builder import __version__
from trace_builder.run.folder import open_run_dir
from trace_builder.run.lock import RunLock
from trace_builder.run.store import StageStore, read_json, write_json_atomic

RUN_JSON = "run.json"


@contextlib.contextmanager
def holding(run_dir: Path) -> Iterator[Path]:
    """The run folder (made if needed, or one line saying why it cannot be one), held by this run's lock
    throughout: a second run on the same folder fails at once, naming this one."""
    run_dir = Path(run_dir)
    open_run_dir(run_dir)
    with RunLock(run_dir):
        yield run_dir


def stale_stages(run_dir: Path, names: Sequence[str], fingerprints: dict[str, str]) -> list[str]:
    """The stages of `names` whose recorded fingerprint is another than the one these settings give."""
    stale = []
    for name in names:
        recorded = StageStore(run_dir, name).fingerprint
        if recorded and recorded != fingerprints[name]:
            stale.append(name)
    return stale


def write_run_record(run_dir: Path, record: dict[str, Any], keep: Sequence[str] = ()) -> None:
    """run.json: `record`, the trace-build and Python versions and the time, and the keys in `keep`
    carried over from the record there (what a server told an earlier session of this run)."""
    previous = read_json(Path(run_dir) / RUN_JSON) or {}
    write_json_atomic(
        Path(run_dir) / RUN_JSON,
        {
            **{key: previous[key] for key in keep if key in previous},
            "trace_build": __version__,
            "python": platform.python_version(),
            **record,
            "updated": time.time(),
        },
    )


def read_run_record(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / RUN_JSON) or {}
