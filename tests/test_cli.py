"""The command line: bad inputs get one clear line and a non-zero exit; exports; status; inspect."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import write_config
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond


def cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "trace_builder", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    with ScriptedServer(respond) as server:
        config = write_config(tmp / "c.yaml", server.base_url, limit=12)
        done = cli("run", "--config", config, "--out", str(tmp / "run"))
        assert done.returncode == 0, done.stderr
        yield tmp / "run", config, server


def test_bad_inputs_get_one_line(tmp_path, finished_run):
    run_dir, config, _ = finished_run
    before = sorted(p.name for p in (run_dir / "final" / "sft").iterdir())
    assert_one_line_error(cli("run", "--stage", "bogus", "--out", str(run_dir)), "unknown stage", "use all or one of")
    assert_one_line_error(cli("run", "--config", str(tmp_path / "none.yaml")), "does not exist", "--config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [unclosed\n")
    assert_one_line_error(cli("run", "--config", str(bad)), "not valid YAML", "line")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("backend: {concurrency: -3}\n")
    assert_one_line_error(cli("run", "--config", str(wrong)), "backend.concurrency")
    assert_one_line_error(
        cli("run", "--config", config, "--out", str(tmp_path / "r1"), "--seeds", str(tmp_path / "missing.jsonl")),
        "does not exist",
        "--seeds",
    )
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("prompt\nWrite a poem.\n")
    assert_one_line_error(
        cli("run", "--config", config, "--out", str(tmp_path / "r2"), "--seeds", str(seeds)), "--seed-column"
    )
    assert_one_line_error(
        cli("run", "--config", config, "--out", str(tmp_path / "r3"), "--base-url", "http://127.0.0.1:9/v1"),
        "cannot reach",
        "--base-url",
    )
    assert_one_line_error(cli("run", "--backend", "gpt5", "--out", str(tmp_path / "r4")), "unknown backend")
    done = cli("run", "--concurrency", "0", "--out", str(tmp_path / "r5"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # the finished run was not touched by any of this
    assert sorted(p.name for p in (run_dir / "final" / "sft").iterdir()) == before


def test_rejected_api_key(tmp_path):
    with ScriptedServer(respond, api_key="right") as server:
        config = write_config(tmp_path / "c.yaml", server.base_url, limit=2)
        done = cli("run", "--config", config, "--out", str(tmp_path / "run"), env={"OPENAI_API_KEY": "wrong"})
    assert_one_line_error(done, "rejected the API key", "OPENAI_API_KEY")


def test_replicas_share_the_load(tmp_path):
    with ScriptedServer(respond) as one, ScriptedServer(respond) as two:
        config = write_config(tmp_path / "c.yaml", one.base_url, limit=8)
        done = cli(
            "run",
            "--config",
            config,
            "--out",
            str(tmp_path / "run"),
            "--base-url",
            one.base_url,
            "--base-url",
            two.base_url,
            "--model",
            "scripted",
        )
        assert done.returncode == 0, done.stderr
        a, b = one.stats_snapshot()["requests"], two.stats_snapshot()["requests"]
    assert a > 0 and b > 0 and 0.25 < a / (a + b) < 0.75


def test_status_inspect_and_exports(tmp_path, finished_run):
    run_dir, _, _ = finished_run
    status = cli("status", "--out", str(run_dir))
    assert status.returncode == 0 and "perturb" in status.stdout and "done" in status.stdout
    stats = json.loads(cli("inspect", str(run_dir / "perturb"), "--stats").stdout)
    assert stats["rows"]["total"] == 12 and "iopo_status" in stats and "check_share_by_dimension" in stats
    failed = cli("inspect", str(run_dir / "expand"), "--where", "status == 'failed'", "--limit", "50")
    assert failed.returncode == 0
    assert_one_line_error(cli("inspect", str(run_dir), "--where", "status ==="), "--where")

    dest = tmp_path / "eval.jsonl"
    assert cli("export", "--out", str(run_dir), "--format", "trace-jsonl", "--dest", str(dest)).returncode == 0
    record = json.loads(dest.read_text().splitlines()[0])
    official = json.loads(open(_official_path()).readline()) if _official_path() else None
    if official:
        assert set(record) == set(official)
    assert record["messages"][1]["content"].startswith(record["description"] + "\n1. ")
    assert record["constraints_num"] == len(record["constraints_splits"]) == len(record["levels2"])

    lf = tmp_path / "lf"
    assert cli("export", "--out", str(run_dir), "--format", "llamafactory", "--dest", str(lf)).returncode == 0
    info = json.loads((lf / "dataset_info.json").read_text())
    assert set(info) == {"trace_sft", "trace_eval", "trace_dpo", "trace_iopo"}
    lines = (lf / "trace_iopo.jsonl").read_text().splitlines()
    if lines:
        pair = json.loads(lines[0])
        assert [t["from"] for t in pair["conversations"]] == ["human"]  # x1: y1 > y2, then x2: y2 > y1
    trl = tmp_path / "trl"
    assert cli("export", "--out", str(run_dir), "--format", "trl", "--dest", str(trl)).returncode == 0
    first = json.loads((trl / "dpo.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected"}
    assert_one_line_error(cli("export", "--out", str(run_dir), "--format", "csv", "--dest", str(tmp_path / "x")), "csv")


def _official_path():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "trace_eval_official.jsonl"
    return path if path.exists() else None


def test_seed_synthesis_reaches_its_target(tmp_path, scripted_server):
    config = tmp_path / "c.yaml"
    write_config(config, scripted_server.base_url, limit=200)
    config.write_text(
        config.read_text().replace("  limit: 200\n", "  limit: 200\n  languages: [en]\n  synthesize_to: 140\n")
    )
    done = cli("run", "--stage", "seeds", "--config", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    seeds = pd.read_parquet(tmp_path / "run" / "seeds")
    builtin = (seeds["source"] == "builtin").sum()
    assert len(seeds) == 140 and 0 < builtin < 140
    assert (seeds.loc[seeds["source"] != "builtin", "source"] == "synthesized").all()
    assert not seeds["seed_id"].duplicated().any()


def test_version():
    from trace_builder import __version__

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"trace-build {__version__}"


def test_status_fits_80_columns_and_counts_failures_once(finished_run):
    from trace_builder.pipeline.failures import row_failure
    from trace_builder.run.store import StageStore, read_parquet_dir

    run_dir, _, _ = finished_run
    done = cli("status", "--out", str(run_dir), env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"stages of {run_dir}") and not lines[0].startswith("run ")
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in done.stdout  # no header or figure cut short
    header = lines[1].split()
    assert header[:2] == ["stage", "status"] and {"rows", "failed"} <= set(header)
    # the failed column is what the rows say (the one definition the progress bar shares)
    failed = {line.split()[0]: int(line.split()[header.index("failed")]) for line in lines[3:9]}
    for stage in ("expand", "respond", "perturb"):
        rows = read_parquet_dir(run_dir / stage).to_dict("records")
        manifest = StageStore(run_dir, stage).manifest
        expected = sum(row_failure(row, stage) is not None for row in rows)
        assert failed[stage] == expected == sum(manifest["failures"].values()), stage
    narrow = cli("status", "--out", str(run_dir), env={"COLUMNS": "50"})
    assert "hidden to fit 50 columns: cached" in narrow.stdout and "…" not in narrow.stdout


def test_a_failure_counts_where_its_stage_made_it():
    from trace_builder.pipeline.failures import failure_counts, row_failure

    expand_failed = {"status": "failed", "failed_stage": "expand", "reason": "quality_rejected"}
    no_group = {"status": "ok", "failed_stage": "", "dpo_status": "ok", "iopo_status": "failed", "iopo_reason": "y2"}
    no_rejected = {"status": "ok", "dpo_status": "failed", "dpo_reason": "rejected_passed_judge"}
    assert row_failure(expand_failed, "expand") == "expand: quality_rejected"
    assert row_failure(expand_failed, "respond") is None  # failed upstream: not respond's failure
    assert row_failure(no_group, "perturb") == "iopo: y2" and row_failure(no_group, "respond") is None
    assert failure_counts([expand_failed, no_group, no_rejected], "perturb") == {
        "iopo: y2": 1,
        "dpo: rejected_passed_judge": 1,
    }
    both = {**no_group, "dpo_status": "failed", "dpo_reason": "rejected_passed_judge"}
    assert row_failure(both, "perturb") == "iopo: y2"  # a row counts once at its stage


def test_status_figures_compact_only_when_needed():
    from trace_builder.report.status import compact, status_table

    assert [compact(v) for v in (0, 99_999, 412_475, 1_244_731, 312_456_789, 8.04, "1/1")] == [
        "0",
        "99,999",
        "412k",
        "1.24M",
        "312M",
        "8.0",
        "1/1",
    ]
    rows = [{"stage": "expand", "status": "done", "tokens": 412_475, "cached": 3, "secs": 8.0}]
    _, hidden = status_table(rows, "t", 80)
    assert hidden == []
    _, hidden = status_table(rows, "t", 24)
    assert hidden == ["cached", "secs"]


def test_a_model_that_cannot_load_is_one_line_and_exit_1(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    cache = tmp_path / "cache"
    done = cli(
        "run", "--backend", "local", "--model", str(broken), "--out", str(tmp_path / "r"),
        env={"TRACE_BUILD_CACHE": str(cache)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert_one_line_error(done, f"cannot load model {broken}", "config, weights, tokenizer", "traceback:")
    logs = list((cache / "logs").glob("model-load-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()


def test_model_load_errors_name_the_package_to_install():
    from trace_builder.errors import ModelLoadError

    raised = ValueError("accelerate is required when loading a GGUF file `pip install accelerate`.")
    assert ModelLoadError.of("gemma3-270m", raised, "reinstall").fix == "pip install accelerate"
    missing = ModuleNotFoundError("No module named 'llama_cpp'", name="llama_cpp")
    assert ModelLoadError.of("m", missing, "reinstall").fix == "pip install llama-cpp-python"
    assert ModelLoadError.of("m", RuntimeError("out of memory"), "use a smaller model").fix == "use a smaller model"
