"""The run directory: Parquet shards written atomically, a manifest per stage, run.json."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_table_atomic(path: Path, table: pa.Table | pd.DataFrame) -> None:
    """Write Parquet to a temp name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2, default=str)
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def read_parquet_dir(directory: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All part-*.parquet files of a folder, in shard order (empty frame if none)."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)


def _add(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    return {key: total.get(key, 0) + more.get(key, 0) for key in {*total, *more}}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class StageStore:
    """One stage's folder: its shards and its _manifest.json.

    The manifest is the stage's memory across runs: which shards are done (with row
    counts), the stage status, its fingerprint, timings and token usage.
    """

    def __init__(self, run_dir: Path, stage: str):
        self.stage = stage
        self.dir = Path(run_dir) / stage
        self.manifest_path = self.dir / "_manifest.json"
        self.manifest: dict[str, Any] = read_json(self.manifest_path) or {
            "stage": stage,
            "status": "pending",
            "fingerprint": None,
            "shards": {},
            "total_shards": None,
            "usage": {},
            "started": None,
            "finished": None,
            "elapsed_s": 0.0,
        }

    # -- state ----------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def fingerprint(self) -> str | None:
        return self.manifest["fingerprint"]

    def done_shards(self) -> set[int]:
        return {int(i) for i in self.manifest["shards"] if (self.dir / shard_name(int(i))).exists()}

    def rows_written(self) -> int:
        return sum(s["rows"] for s in self.manifest["shards"].values())

    # -- writes ---------------------------------------------------------------
    def begin(self, fingerprint: str, total_shards: int | None) -> None:
        self.manifest.update(
            fingerprint=fingerprint,
            total_shards=total_shards,
            status="partial" if self.manifest["shards"] else "running",
        )
        self.manifest["started"] = self.manifest["started"] or time.time()
        self.save()

    def write_shard(self, index: int, table: pa.Table, extra: dict[str, Any] | None = None) -> None:
        write_table_atomic(self.dir / shard_name(index), table)
        self.manifest["shards"][str(index)] = {"rows": table.num_rows, **(extra or {})}
        self.save()

    def finish(
        self, status: str, usage: dict[str, Any], elapsed_s: float, usage_by_task: dict | None = None, **extra: Any
    ) -> None:
        """Close the stage; `usage` (and per task) is this run's and adds to what earlier runs spent."""
        by_task = dict(self.manifest.get("usage_by_task") or {})
        for task, counts in (usage_by_task or {}).items():
            by_task[task] = _add(by_task.get(task, {}), counts)
        self.manifest.update(
            status=status,
            usage=_add(self.manifest.get("usage") or {}, usage),
            usage_by_task=by_task,
            finished=time.time(),
            **extra,
        )
        self.manifest["elapsed_s"] = round(self.manifest.get("elapsed_s", 0.0) + elapsed_s, 3)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest)

    def clear(self) -> None:
        for path in self.dir.glob("*.parquet"):
            path.unlink()
        self.manifest_path.unlink(missing_ok=True)
        self.__init__(self.dir.parent, self.stage)

    # -- reads ----------------------------------------------------------------
    def columns(self) -> list[str]:
        """The columns of this stage's shards (none before the first is written)."""
        parts = sorted(self.dir.glob("part-*.parquet"))
        return pq.read_schema(parts[0]).names if parts else []

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return read_parquet_dir(self.dir, columns)
