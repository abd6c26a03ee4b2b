"""The run directory's storage: modes, where manifests live, verification on read, empty shards."""

from __future__ import annotations

import json
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trace_builder.errors import UserError
from trace_builder.run.store import StageStore, manifest_path, read_json, write_json_atomic, write_table_atomic

TABLE = pa.table({"n": [1, 2, 3], "s": ["a", "b", "c"]})


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_honour_the_umask(tmp_path, monkeypatch):
    import trace_builder.run.store as store

    monkeypatch.setattr(store, "_UMASK", 0o022)  # the umask is read once per process
    write_table_atomic(tmp_path / "t.parquet", TABLE)
    write_json_atomic(tmp_path / "j.json", {"a": 1})
    assert _mode(tmp_path / "t.parquet") == 0o644
    assert _mode(tmp_path / "j.json") == 0o644
    monkeypatch.setattr(store, "_UMASK", 0o077)
    write_json_atomic(tmp_path / "private.json", {"a": 1})
    assert _mode(tmp_path / "private.json") == 0o600


def test_stage_folders_hold_only_parquet_and_readers_read_them_whole(tmp_path):
    store = StageStore(tmp_path, "expand")
    store.begin("fp", 2)
    store.write_shard(0, TABLE)
    store.write_shard(1, TABLE)
    assert sorted(p.name for p in (tmp_path / "expand").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert manifest_path(tmp_path, "expand").is_file()
    assert pq.read_table(tmp_path / "expand").num_rows == 6  # pyarrow's directory read (pandas too)
    # the directory readers people reach for (issue: a manifest in the folder tripped the last three)
    import datasets
    import duckdb
    import polars

    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path / 'expand'}/**')").fetchall() == [(6,)]
    assert polars.read_parquet(tmp_path / "expand").height == 6
    assert datasets.load_dataset(str(tmp_path / "expand"), split="train").num_rows == 6


def test_an_old_runs_manifest_is_read_then_moved(tmp_path):
    (tmp_path / "expand").mkdir()
    write_table_atomic(tmp_path / "expand" / "part-00000.parquet", TABLE)
    legacy = {"stage": "expand", "status": "done", "fingerprint": "fp", "shards": {"0": {"rows": 3}}}
    legacy |= {"total_shards": 1, "usage": {}, "started": 1.0, "finished": 2.0, "elapsed_s": 1.0}
    (tmp_path / "expand" / "_manifest.json").write_text(json.dumps(legacy))
    store = StageStore(tmp_path, "expand")
    assert store.verified_status() == "done" and store.done_shards() == {0}
    store.save()
    assert not (tmp_path / "expand" / "_manifest.json").exists()
    assert read_json(manifest_path(tmp_path, "expand"))["shards"] == {"0": {"rows": 3}}


def test_a_damaged_shard_is_not_done_and_says_so(tmp_path, caplog):
    store = StageStore(tmp_path, "expand")
    store.begin("fp", 2)
    store.write_shard(0, TABLE)
    store.write_shard(1, TABLE)
    store.finish("done", {}, 0.0)
    path = tmp_path / "expand" / "part-00001.parquet"
    path.write_bytes(path.read_bytes()[:-20])  # truncated: the footer is gone
    again = StageStore(tmp_path, "expand")
    assert again.done_shards() == {0}
    assert again.verified_status() == "partial"
    assert "part-00001.parquet is damaged" in caplog.text


def test_a_shard_changed_in_place_fails_its_checksum(tmp_path):
    store = StageStore(tmp_path, "expand")
    store.write_shard(0, pa.table({"s": ["x" * 1000, "y" * 1000]}), extra=None)
    path = tmp_path / "expand" / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a data page: same size, same footer, same row count
    path.write_bytes(bytes(data))
    assert pq.read_metadata(path).num_rows == 2
    assert StageStore(tmp_path, "expand").done_shards() == set()


def test_a_damaged_manifest_is_forgotten_with_a_warning(tmp_path, caplog):
    store = StageStore(tmp_path, "expand")
    store.write_shard(0, TABLE)
    path = manifest_path(tmp_path, "expand")
    path.write_text(path.read_text().replace('"rows": 3', '"rows": 4'))  # valid JSON, wrong checksum
    assert StageStore(tmp_path, "expand").done_shards() == set()
    path.write_text("{not json")
    assert StageStore(tmp_path, "expand").status == "pending"
    assert "checksum mismatch" in caplog.text and "not JSON" in caplog.text


def test_a_zero_row_shard_has_no_file(tmp_path):
    store = StageStore(tmp_path, "expand")
    store.write_shard(0, TABLE.slice(0, 0))
    store.write_shard(1, TABLE)
    assert not (tmp_path / "expand" / "part-00000.parquet").exists()
    again = StageStore(tmp_path, "expand")
    assert again.done_shards() == {0, 1} and again.read_shard_rows(0) == [] and again.rows_written() == 3


def test_temp_files_of_a_killed_write_are_removed_when_a_stage_begins(tmp_path):
    store = StageStore(tmp_path, "expand")
    store.write_shard(0, TABLE)
    leftover = tmp_path / "expand" / ".part-00001.parquet.abc.tmp"
    leftover.write_bytes(b"half")
    StageStore(tmp_path, "expand").begin("fp", 2)
    assert not leftover.exists()


def test_a_failed_write_leaves_no_temp_file_and_the_old_file_intact(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / "run.json", {"ok": 1})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "run.json", {"ok": 2})
    assert read_json(tmp_path / "run.json") == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_damaged_json_file_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / "run.json").write_text('{"trace_build": ')
    with pytest.raises(UserError, match=r"run\.json is damaged .*move it aside"):
        read_json(tmp_path / "run.json")


def test_a_manifest_with_int_keys_and_floats_reads_back_as_written(tmp_path, caplog):
    store = StageStore(tmp_path, "seeds")
    # What a target run records: counts 1..15 as int keys (2 < 10 as ints, "10" < "2" as strings).
    store.manifest["rounds"] = [{"admitted": 700, "by_count": {c: c * 3 for c in range(1, 16)}}]
    store.manifest["quota"] = {c: {"need": c, "usable": 0.1 * c} for c in (2, 10, 15)}
    store.manifest["elapsed_s"] = 1 / 3
    store.write_shard(0, TABLE)
    again = StageStore(tmp_path, "seeds")
    assert again.done_shards() == {0} and again.manifest["rounds"][0]["by_count"]["10"] == 30
    assert "damaged" not in caplog.text
