"""The run directory: Parquet shards written atomically and verified on read, a manifest per stage, run.json.

Layout: `<run>/<stage>/part-*.parquet` holds nothing but Parquet, so pandas, polars, DuckDB and
`datasets` can read a stage folder as a directory; each stage's manifest lives beside the
folders in `<run>/manifests/<stage>.json` (runs made before kept it in `<stage>/_manifest.json`,
which is still read, and moved on the next save).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trace_builder.errors import UserError

log = logging.getLogger("trace_builder")

MANIFESTS = "manifests"
FINAL = "final"
LEGACY_MANIFEST = "_manifest.json"
TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, before any thread writes files.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in `path`'s folder (so the rename is atomic), with the mode a plain open would give.

    mkstemp creates 0600; files of a shared run must honour the umask (0644 under 022).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, tmp


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` when the block ends without an error,
    removed when it does not: readers never see half a file. Every file trace-build writes goes
    through here (a model folder, renamed whole, is the one exception: llm/model_files.py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise with_path(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table_atomic(path: Path, table: pa.Table | pd.DataFrame) -> None:
    """Write Parquet to a temp name beside `path`, then rename (`atomic_file`)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def with_path(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path` and its errno: pyarrow's write errors carry neither, only '[Errno 28] ...'."""
    if exc.errno is not None and exc.filename is not None:
        return exc
    found = re.search(r"\[Errno (\d+)\]", str(exc))
    code = exc.errno if exc.errno is not None else int(found[1]) if found else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2, default=str)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content; `default` if it is missing; a damaged file is a one-line UserError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is damaged ({type(exc).__name__}: {str(exc)[:80]}): move it aside; "
            "`trace-build run` with the same settings writes it again"
        ) from None


def read_parquet_dir(directory: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A folder's Parquet shards as one frame, in shard order (empty frame if none); for a stage
    folder or final dataset of a run, the shards its manifest lists, each verified (`verified_parts`)."""
    return read_parts(verified_parts(directory), columns)


def read_parts(parts: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)


def verified_parts(directory: Path) -> list[Path]:
    """The part files of `directory` to read, in order.

    In a run (a stage folder, or a dataset under final/), that is the shards its manifest lists,
    each checked against its entry (size, crc32, rows): a damaged or missing one is a one-line
    UserError naming it and the command that rebuilds it; a file the manifest does not list
    (left by a run that was stopped) is not read. Elsewhere, every part-*.parquet file.
    """
    directory = Path(directory)
    listed = _listed_shards(directory)
    if listed is None:
        return sorted(directory.glob("part-*.parquet"))
    entries, rebuild = listed
    parts = []
    for name, entry in entries:
        path = directory / name
        problem = shard_problem(path, entry)
        if problem is not None:
            raise UserError(f"{path} is damaged ({problem}): {rebuild}")
        if path.exists():  # a 0-row shard has no file
            parts.append(path)
    return parts


def verify_part(path: Path) -> None:
    """A single part file of a run checked against its manifest entry (nothing to check elsewhere)."""
    path = Path(path)
    listed = _listed_shards(path.parent)
    if listed is not None:
        entries, rebuild = listed
        entry = dict(entries).get(path.name)
        problem = shard_problem(path, entry) if entry is not None else None
        if problem is not None:
            raise UserError(f"{path} is damaged ({problem}): {rebuild}")


def _listed_shards(directory: Path) -> tuple[list[tuple[str, dict]], str] | None:
    """(file name, manifest entry) of each shard a run's manifest lists for `directory`, in order,
    and how to rebuild a damaged one; None when `directory` is not a stage or final dataset of a run."""
    run, name = directory.parent, directory.name
    if run.name == FINAL and (run.parent / MANIFESTS / f"{FINAL}.json").is_file():
        manifest = read_manifest(run.parent, FINAL) or {}
        files = (manifest.get("datasets") or {}).get(name)
        if files is None:
            return None
        return sorted(files.items()), f"run `trace-build run --stage filter --out {run.parent}` to write final/ again"
    if (run / MANIFESTS / f"{name}.json").is_file() or (directory / LEGACY_MANIFEST).is_file():
        manifest = read_manifest(run, name)
        if manifest is None:
            return None  # damaged (warned): nothing to check against
        entries = sorted((int(index), entry) for index, entry in manifest["shards"].items())
        return [(shard_name(i), e) for i, e in entries], f"rerun `trace-build run --out {run}` to redo it"
    return None


def _add(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    return {key: total.get(key, 0) + more.get(key, 0) for key in {*total, *more}}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def manifest_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / MANIFESTS / f"{stage}.json"


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own checksum, in a canonical form.

    The form is the one the file reads back as: a JSON round trip first turns int keys into
    strings (and tuples into lists), which changes how keys sort ({2, 10} vs {"10", "2"}), so
    hashing the in-memory dict directly gave a digest that its own file could never match.
    """
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "checksum"}, default=str))
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def save_manifest(run_dir: Path, stage: str, manifest: dict[str, Any]) -> None:
    """Write `<run>/manifests/<stage>.json` atomically, with its checksum."""
    manifest["checksum"] = manifest_checksum(manifest)
    write_json_atomic(manifest_path(run_dir, stage), manifest)


def shard_entry(path: Path) -> dict[str, int]:
    """What a manifest records of a written shard: rows, bytes and crc32."""
    return {"rows": pq.read_metadata(path).num_rows, "bytes": path.stat().st_size, "crc32": file_crc32(path)}


def read_manifest(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """A stage's manifest (new location first, then the old one), None if there is none or it is damaged.

    A damaged manifest (not JSON, or its checksum does not match) is reported and forgotten:
    the stage's shards are then redone (the LLM cache makes that cheap).
    """
    for path in (manifest_path(run_dir, stage), Path(run_dir) / stage / LEGACY_MANIFEST):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (ValueError, UnicodeDecodeError):
            _warn_once(f"{path} is damaged (not JSON): stage '{stage}' will be redone")
            return None
        if not isinstance(manifest, dict) or (
            "checksum" in manifest and manifest["checksum"] != manifest_checksum(manifest)
        ):
            _warn_once(f"{path} is damaged (checksum mismatch): stage '{stage}' will be redone")
            return None
        return manifest
    return None


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def shard_problem(path: Path, entry: dict[str, Any]) -> str | None:
    """Why the shard at `path` does not match its manifest entry (None: it does).

    Checked: it exists, its size and crc32 (when recorded), its Parquet footer and row count.
    A 0-row shard has no file (see StageStore.write_shard).
    """
    if entry.get("rows") == 0 and entry.get("bytes") is None:
        return None
    try:
        size = path.stat().st_size
        if entry.get("bytes") is not None and size != entry["bytes"]:
            return f"{size} bytes, expected {entry['bytes']}"
        if entry.get("crc32") is not None and file_crc32(path) != entry["crc32"]:
            return "checksum mismatch"
        rows = pq.read_metadata(path).num_rows
    except FileNotFoundError:
        return "missing"
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable Parquet ({str(exc)[:60]})"
    if rows != entry.get("rows"):
        return f"{rows} rows, expected {entry.get('rows')}"
    return None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning per process: several stores may look at the same damaged file."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _empty_manifest(stage: str) -> dict[str, Any]:
    return {
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


class StageStore:
    """One stage's folder (its shards) and its manifest.

    The manifest is the stage's memory across runs: which shards are done (with row counts,
    sizes and checksums), the stage status, its fingerprint, timings and token usage. A shard
    counts as done only if its file matches its entry; one that does not is redone.
    """

    def __init__(self, run_dir: Path, stage: str):
        self.stage = stage
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / stage
        self.manifest_path = manifest_path(self.run_dir, stage)
        self.manifest: dict[str, Any] = read_manifest(self.run_dir, stage) or _empty_manifest(stage)
        self._verified: set[int] | None = None  # done shards, checked once per store

    # -- state ----------------------------------------------------------------
    @property
    def status(self) -> str:
        """The recorded status (cheap: only the manifest is read, unless shards were verified)."""
        return self.manifest["status"]

    def verified_status(self) -> str:
        """The status once every shard is checked: a 'done' stage with a damaged shard is 'partial'."""
        self.done_shards()
        return self.manifest["status"]

    @property
    def fingerprint(self) -> str | None:
        return self.manifest["fingerprint"]

    def done_shards(self) -> set[int]:
        if self._verified is None:
            self._verified = set()
            for key, entry in self.manifest["shards"].items():
                index = int(key)
                problem = shard_problem(self.dir / shard_name(index), entry)
                if problem is None:
                    self._verified.add(index)
                else:
                    if problem != "missing":
                        _warn_once(f"{self.dir / shard_name(index)} is damaged ({problem}): it will be redone")
                    if self.manifest["status"] == "done":
                        self.manifest["status"] = "partial"  # in memory: saved when the shard is redone
        return set(self._verified)

    def rows_written(self) -> int:
        """Rows of the shards written (of those that verify, once they were checked)."""
        shards = self.manifest["shards"]
        if self._verified is None:
            return sum(s["rows"] for s in shards.values())
        return sum(shards[str(i)]["rows"] for i in self._verified if str(i) in shards)

    # -- writes ---------------------------------------------------------------
    def begin(self, fingerprint: str, total_shards: int | None) -> None:
        self.remove_temp_files()
        self.manifest.update(
            fingerprint=fingerprint,
            total_shards=total_shards,
            status="partial" if self.manifest["shards"] else "running",
        )
        self.manifest["started"] = self.manifest["started"] or time.time()
        self.save()

    def write_shard(self, index: int, table: pa.Table, extra: dict[str, Any] | None = None) -> None:
        """Write shard `index` atomically and record it.

        A 0-row shard gets no file: `datasets` cannot open a 0-row Parquet file, and it would
        fail a whole folder read; the manifest alone records it.
        """
        path = self.dir / shard_name(index)
        if table.num_rows == 0:
            path.unlink(missing_ok=True)
            entry = {"rows": 0}
        else:
            write_table_atomic(path, table)
            entry = shard_entry(path)
        self.manifest["shards"][str(index)] = {**entry, **(extra or {})}
        self.done_shards()  # verify what was there before, so this shard is not checked again
        assert self._verified is not None
        self._verified.add(index)
        self.save()

    def forget_shards(self, indices: set[int]) -> None:
        """Mark shards as not done (their files stay until rewritten): they are redone on the next run."""
        for index in indices:
            self.manifest["shards"].pop(str(index), None)
            if self._verified is not None:
                self._verified.discard(index)
        if self.manifest["status"] == "done":
            self.manifest["status"] = "partial"
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
        save_manifest(self.run_dir, self.stage, self.manifest)
        (self.dir / LEGACY_MANIFEST).unlink(missing_ok=True)  # moved to manifests/

    def remove_temp_files(self) -> None:
        """Temp files of writes a killed run left behind (only the run holding the lock calls this)."""
        for path in self.dir.glob(f".*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in self.dir.glob("*.parquet"):
            path.unlink()
        self.remove_temp_files()
        self.manifest_path.unlink(missing_ok=True)
        (self.dir / LEGACY_MANIFEST).unlink(missing_ok=True)
        self.__init__(self.run_dir, self.stage)

    # -- reads ----------------------------------------------------------------
    def columns(self) -> list[str]:
        """The columns of this stage's shards (none before the first is written)."""
        parts = [self.dir / shard_name(i) for i in sorted(self.done_shards())]
        parts = [p for p in parts if p.exists()]
        return pq.read_schema(parts[0]).names if parts else []

    def read_shard_rows(self, index: int) -> list[dict[str, Any]]:
        """One shard's rows as plain Python values (a 0-row shard has no file)."""
        entry = self.manifest["shards"].get(str(index)) or {}
        path = self.dir / shard_name(index)
        if entry.get("rows") == 0 and not path.exists():
            return []
        # pyarrow gives plain Python lists for list columns (pandas would give numpy arrays).
        return pq.read_table(path).to_pylist()

    def read_shard_table(self, index: int, columns: list[str] | None = None) -> pa.Table:
        """One shard as an Arrow table (a 0-row shard has no file: an empty table)."""
        path = self.dir / shard_name(index)
        if (self.manifest["shards"].get(str(index)) or {}).get("rows") == 0 and not path.exists():
            return pa.table({c: pa.array([], pa.null()) for c in columns or []})
        return pq.read_table(path, columns=columns)

    def read_shard_columns(self, index: int, columns: list[str]) -> dict[str, list]:
        """Some columns of one shard (only those are read), as plain Python lists; absent ones all None."""
        path = self.dir / shard_name(index)
        present = set(pq.read_schema(path).names) if path.exists() else set()
        table = self.read_shard_table(index, [c for c in columns if c in present])
        return {c: table[c].to_pylist() if c in present else [None] * table.num_rows for c in columns}

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The done shards (verified once per store), in order; a damaged one is left to be redone."""
        parts = [self.dir / shard_name(i) for i in sorted(self.done_shards())]
        return read_parts([p for p in parts if p.exists()], columns)
