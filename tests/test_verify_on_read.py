"""Whatever reads a run's shards checks them against the manifest first: a damaged one is one line, exit 2."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import write_config
from tests.test_cli import assert_one_line_error, cli
from trace_builder.run.store import manifest_path, read_json
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    with ScriptedServer(respond) as server:
        config = write_config(tmp / "c.yaml", server.base_url, limit=10, shard_size=4)
        done = cli("run", "--config", config, "--out", str(tmp / "run"))
        assert done.returncode == 0, done.stderr
    return tmp / "run"


def _damaged_copy(built, tmp_path, relative: str):
    run = tmp_path / "run"
    shutil.copytree(built, run)
    shard = run / relative
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size and footer: only the checksum can tell
    shard.write_bytes(bytes(data))
    return run, shard


def test_final_has_a_manifest_that_lists_every_dataset(built):
    manifest = read_json(manifest_path(built, "final"))
    assert set(manifest["datasets"]) == {"sft", "dpo", "iopo", "eval"}
    assert all("crc32" in entry for files in manifest["datasets"].values() for entry in files.values())


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "{run}/final/sft"],
        ["inspect", "{run}/final/sft/part-00000.parquet"],
        ["view", "{run}/final/sft", "-o", "{tmp}/v.html"],
        ["export", "--out", "{run}", "--format", "trl", "--dest", "{tmp}/trl"],
        ["card", "--out", "{run}"],
        ["train", "--method", "sft", "--data", "{run}/final/sft", "--model", "gemma3-270m", "--output", "{tmp}/m"],
        ["eval", "--data", "{run}/final/eval", "--model", "x", "--out", "{tmp}/e"],
    ],
)
def test_a_damaged_final_dataset_is_one_line_naming_it_and_the_fix(built, tmp_path, command):
    run, shard = _damaged_copy(built, tmp_path, "final/sft/part-00000.parquet")
    if command[0] == "eval":
        run, shard = _damaged_copy(built, tmp_path / "e", "final/eval/part-00000.parquet")
    args = [a.format(run=run, tmp=tmp_path) for a in command]
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, f"{shard} is damaged (checksum mismatch)", f"--stage filter --out {run}")


@pytest.mark.parametrize("command", [["run", "--stage", "filter"], ["inspect", "{run}/perturb"]])
def test_a_damaged_stage_shard_is_one_line_naming_it_and_the_fix(built, tmp_path, command):
    run, shard = _damaged_copy(built, tmp_path, "perturb/part-00001.parquet")
    args = [a.format(run=run) for a in command]
    if command[0] == "run":
        args += ["--config", str(built.parent / "c.yaml"), "--out", str(run)]
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, f"{shard} is damaged (checksum mismatch)", f"trace-build run --out {run}")
