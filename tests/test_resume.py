"""SIGKILL a running `trace-build run` mid-stage, rerun it: same finals, nothing answered is re-asked."""

from __future__ import annotations

import pandas as pd

from tests.conftest import write_config
from tests.test_cli import cli
from trace_builder.run.store import read_parquet_dir
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.kills import run_and_kill, shards_written
from trace_builder.testing.scripted import respond

CONCURRENCY = 8


def _run_args(config: str, out) -> list[str]:
    return ["run", "--config", config, "--out", str(out)]


def _finals(out) -> dict[str, pd.DataFrame]:
    return {
        name: read_parquet_dir(out / "final" / name).sort_values("id").reset_index(drop=True)
        for name in ("sft", "dpo", "iopo", "eval")
    }


def test_sigkill_mid_stage_then_resume(tmp_path):
    with ScriptedServer(respond, latency_s=0.02) as server:
        # transient_retries 0: the resumed run must equal a clean one exactly; rows re-asked after
        # transient failures are tested in test_reliability.py.
        config = write_config(
            tmp_path / "c.yaml", server.base_url, limit=48, shard_size=4, concurrency=CONCURRENCY, transient_retries=0
        )
        out = tmp_path / "killed"
        killed = run_and_kill(_run_args(config, out), out, shards_written("respond", 3), timeout_s=120)
        assert killed, "the run finished before it could be killed: make it longer"
        assert not (out / "final").exists()
        before = server.stats_snapshot()

        resumed = cli(*_run_args(config, out), timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        after = server.stats_snapshot()

    # Only requests in flight at the kill (at most `concurrency`) may be asked twice.
    repeats = sum(n - 1 for n in after["repeated"].values())
    assert repeats <= CONCURRENCY, after["repeated"]
    assert after["requests"] > before["requests"]  # the rest of the work was done

    with ScriptedServer(respond) as server:
        config = write_config(
            tmp_path / "c2.yaml", server.base_url, limit=48, shard_size=4, concurrency=CONCURRENCY, transient_retries=0
        )
        clean = tmp_path / "clean"
        assert cli(*_run_args(config, clean), timeout=300).returncode == 0

    killed, reference = _finals(out), _finals(clean)
    for name in reference:
        pd.testing.assert_frame_equal(killed[name], reference[name])
        assert not killed[name]["id"].duplicated().any()
    # every row of every stage is there exactly once
    for stage in ("expand", "respond", "perturb"):
        rows = read_parquet_dir(out / stage)
        assert len(rows) == 48 and not rows["seed_id"].duplicated().any()
