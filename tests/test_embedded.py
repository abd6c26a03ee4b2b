"""One end-to-end run of the embedded model for real: every stage runs, rows fail honestly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trace_builder.run.store import manifest_path, read_parquet_dir


@pytest.mark.slow
def test_default_run_on_the_embedded_model(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "shard_size: 2\n"
        "backend: {kind: local, model: gemma3-270m, batch_size: 4}\n"
        "generation: {temperature: 0.0, max_tokens: 96, judge_tokens_per_constraint: 72}\n"
        "seeds: {source: builtin, limit: 2}\n"
        "taxonomy: {count_histogram: [1]}\n"
        "filter: {eval_size: 0, train_size: null}\n"
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "trace_builder", "run", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("seeds", "taxonomy", "expand", "respond", "perturb", "filter"):
        manifest = json.loads(manifest_path(out, stage).read_text())
        assert manifest["status"] == "done", stage
    expanded = read_parquet_dir(out / "expand")
    assert len(expanded) == 2
    # Structured answers come from constrained decoding: they parse. With this small token
    # budget one may still be cut short (a schema mismatch), never a reply that is not JSON.
    assert "invalid_json" not in set(expanded["reason"])
    assert expanded["description"].notna().any()
    failed = expanded[expanded["status"] != "ok"]
    assert (failed["reason"] != "").all()
    assert json.loads(manifest_path(out, "expand").read_text())["usage"]["requests"] >= 2
    for name in ("sft", "dpo", "iopo", "eval"):
        assert (out / "final" / name / "part-00000.parquet").exists()
