"""Kill a `trace-build` process with SIGKILL at a chosen point of its run, for resume tests and benchmarks.

A point is a condition on the run folder, polled every few milliseconds: what a user would see
if they pulled the plug at that moment. `POINTS` names the ones a target run goes through.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trace_builder.run.store import read_manifest

Condition = Callable[[Path], bool]


def _manifest(run_dir: Path, stage: str) -> dict:
    try:
        return read_manifest(run_dir, stage) or {}
    except Exception:  # noqa: BLE001 - a file mid-rename reads as nothing yet
        return {}


def shards_written(stage: str, shards: int) -> Condition:
    """`stage` has written at least `shards` shards."""
    return lambda run: len(_manifest(run, stage).get("shards", {})) >= shards


def in_chain(shards: int) -> Condition:
    """Rows are in the chain: the last row stage has written `shards` shards and is not done."""
    return lambda run: (
        len(_manifest(run, "perturb").get("shards", {})) >= shards
        and _manifest(run, "perturb").get("status") in ("running", "partial")
    )


def after_round(rounds: int) -> Condition:
    """Admission has just written round `rounds` (its rows not yet through the chain)."""
    return lambda run: len(_manifest(run, "seeds").get("rounds", [])) >= rounds


def in_filter(run: Path) -> bool:
    """The filter stage has begun and not finished."""
    return _manifest(run, "filter").get("status") == "running"


POINTS: dict[str, Condition] = {"chain": in_chain(3), "round 2": after_round(2), "filter": in_filter}


def run_and_kill(args: list[str], run_dir: Path, condition: Condition, timeout_s: float = 600.0) -> bool:
    """`trace-build ARGS` until `condition(run_dir)` holds, then SIGKILL; True if it was killed there,
    False if the run ended first. Bounded by `timeout_s`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trace_builder", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if condition(run_dir):
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
