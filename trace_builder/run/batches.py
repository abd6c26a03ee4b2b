"""The record of a run's pending batches: written before the run waits on one, read by the next session and `status`.

One file per batch, `<run>/batches/<batch id>.json`: the batch, the model and server it went to,
and the custom_id of every line (a stable hash of the request, llm/batch.py), so that a later
session collects the batch instead of submitting its lines again. Written atomically; removed
once the batch's answers have been handed over.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from trace_builder.run.store import read_json, write_json_atomic

BATCHES = "batches"
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")


def batch_path(run_dir: Path, batch_id: str) -> Path:
    if not _SAFE_ID.fullmatch(batch_id):  # an id from the server names a file: no path may hide in it
        raise ValueError(f"unexpected batch id {batch_id!r}")
    return Path(run_dir) / BATCHES / f"{batch_id}.json"


def record_batch(
    run_dir: Path, batch_id: str, *, model: str, server: str, input_file_id: str, custom_ids: list[str]
) -> None:
    """Remember a batch just created, before anything waits on it."""
    write_json_atomic(
        batch_path(run_dir, batch_id),
        {
            "id": batch_id,
            "model": model,
            "server": server,
            "input_file_id": input_file_id,
            "submitted": time.time(),
            "status": "validating",
            "status_at": time.time(),
            "requests": len(custom_ids),
            "custom_ids": custom_ids,
        },
    )


def note_status(run_dir: Path, batch_id: str, status: str) -> None:
    """The batch's last known status, for `status` (another process)."""
    entry = read_json(batch_path(run_dir, batch_id))
    if entry is not None and entry.get("status") != status:
        write_json_atomic(batch_path(run_dir, batch_id), {**entry, "status": status, "status_at": time.time()})


def forget_batch(run_dir: Path, batch_id: str) -> None:
    """The batch's answers were handed over: nothing waits on it any more."""
    batch_path(run_dir, batch_id).unlink(missing_ok=True)


def pending_batches(run_dir: Path, model: str | None = None) -> list[dict[str, Any]]:
    """The batches recorded and not yet collected (of `model`, when given), oldest first."""
    folder = Path(run_dir) / BATCHES
    entries = [read_json(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    found = [e for e in entries if e and (model is None or e.get("model") == model)]
    return sorted(found, key=lambda e: e.get("submitted", 0))


def pending_line(run_dir: Path) -> str | None:
    """One line on the batches left pending, or None when there are none."""
    pending = pending_batches(run_dir)
    if not pending:
        return None
    requests = sum(e.get("requests", 0) for e in pending)
    return (
        f"{len(pending)} batches ({requests:,} requests) left pending at the provider: rerun the same command to "
        f"collect them (nothing is submitted twice), or cancel them with `trace-build run --cancel-batches --out {run_dir}`"
    )
