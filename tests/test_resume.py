"""SIGKILL a running `trace-build run` mid-stage, rerun it: same finals, nothing answered is re-asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from tests.conftest import write_config
from trace_builder.run.store import manifest_path, read_parquet_dir
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond

CONCURRENCY = 8


def _cli(config: str, out) -> list[str]:
    return [sys.executable, "-m", "trace_builder", "run", "--config", config, "--out", str(out)]


def _finals(out) -> dict[str, pd.DataFrame]:
    return {
        name: read_parquet_dir(out / "final" / name).sort_values("id").reset_index(drop=True)
        for name in ("sft", "dpo", "iopo", "eval")
    }


def _shards_done(out, stage: str) -> int:
    try:
        return len(json.loads(manifest_path(out, stage).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_sigkill_mid_stage_then_resume(tmp_path):
    with ScriptedServer(respond, latency_s=0.02) as server:
        # transient_retries 0: the resumed run must equal a clean one exactly; rows re-asked after
        # transient failures are tested in test_reliability.py.
        config = write_config(
            tmp_path / "c.yaml", server.base_url, limit=48, shard_size=4, concurrency=CONCURRENCY, transient_retries=0
        )
        out = tmp_path / "killed"
        proc = subprocess.Popen(_cli(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _shards_done(out, "respond") < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (out / "final").exists()
        before = server.stats_snapshot()

        resumed = subprocess.run(_cli(config, out), capture_output=True, text=True, timeout=300)
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
        subprocess.run(_cli(config, clean), check=True, capture_output=True, timeout=300)

    killed, reference = _finals(out), _finals(clean)
    for name in reference:
        pd.testing.assert_frame_equal(killed[name], reference[name])
        assert not killed[name]["id"].duplicated().any()
    # every row of every stage is there exactly once
    for stage in ("expand", "respond", "perturb"):
        rows = read_parquet_dir(out / stage)
        assert len(rows) == 48 and not rows["seed_id"].duplicated().any()
