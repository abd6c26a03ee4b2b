"""The whole pipeline against the scripted server, through the real openai client and real Parquet."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from tests.conftest import write_config
from trace_builder.config import load_config
from trace_builder.errors import UserError
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.records import FINAL_SCHEMAS
from trace_builder.run.store import read_parquet_dir


def run(config_path, out, stages=("seeds", "taxonomy", "expand", "respond", "perturb", "filter"), fresh=False):
    return asyncio.run(run_pipeline(load_config(config_path), out, list(stages), fresh=fresh))


def test_a_small_plain_run_keeps_most_rows_for_training(tmp_path, scripted_server):
    # TRACE's eval_size (1000) would otherwise take every row of a small run, leaving sft empty.
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, eval_size=1000, eval_max_share=0.1)
    out = tmp_path / "run"
    run(cfg, out)
    sft, evaluation = read_parquet_dir(out / "final" / "sft"), read_parquet_dir(out / "final" / "eval")
    kept = len(sft) + len(evaluation)
    assert kept > 12 and len(evaluation) == int(0.1 * kept)


def test_each_stage_writes_its_rows(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url)
    out = tmp_path / "run"
    summary = run(cfg, out)

    seeds = read_parquet_dir(out / "seeds")
    assert len(seeds) == 24 and set(seeds["language"]) == {"en", "zh"}
    plans = read_parquet_dir(out / "taxonomy")
    assert (plans["planned_count"] == plans["planned_dimensions"].map(len)).all()

    expanded = read_parquet_dir(out / "expand")
    assert len(expanded) == 24  # failed rows are kept, with a reason
    ok = expanded[expanded["status"] == "ok"]
    assert len(ok) > 12
    assert (ok["constraint_count"] == ok["constraints"].map(len)).all()
    assert set(expanded.loc[expanded["status"] != "ok", "reason"]) <= {"quality_rejected"}
    # inclusion constraints carry a validated keyword check
    with_checks = ok[ok["dimensions"].map(lambda d: "inclusion" in list(d))]
    for _, row in with_checks.iterrows():
        spec = json.loads(next(c for c, d in zip(row["checks"], row["dimensions"]) if d == "inclusion"))
        assert spec["kind"] == "keyword_include"

    responded = read_parquet_dir(out / "respond")
    live = responded[responded["status"] == "ok"]
    assert len(live) == len(ok)  # the script's answers meet every constraint

    perturbed = read_parquet_dir(out / "perturb")
    assert (perturbed.loc[perturbed["status"] == "ok", "dpo_status"] == "ok").all()  # and its worse answers fail one
    groups = perturbed[perturbed["status"] == "ok"]
    assert set(groups["perturb_op"]) <= {"add", "delete", "revise"}
    # The script's DELETE also revises the first constraint, so y1 fails x2 whatever the operation
    kept = groups[groups["iopo_status"] == "ok"]
    assert len(kept) == len(groups) > 0
    # (x1, y2) is recorded, not filtered on: after ADD y2 still meets x1; after REVISE / DELETE y2 lacks
    # the mark of x1's first constraint, so it passes x1 only where a code check decides that constraint
    assert kept.loc[kept["perturb_op"] == "add", "x1_y2_passes"].all()
    others = kept[kept["perturb_op"] != "add"]
    passing = others[others["x1_y2_passes"].astype(bool)]
    assert all(row["checks"][0] is not None for _, row in passing.iterrows())
    assert not others["x1_y2_passes"].all()

    finals = {name: read_parquet_dir(out / "final" / name) for name in ("sft", "dpo", "iopo", "eval")}
    assert len(finals["eval"]) == 3
    assert len(finals["sft"]) + len(finals["eval"]) == len(live)
    for name, frame in finals.items():
        assert list(frame.columns) == FINAL_SCHEMAS[name].names
    assert summary.final_rows == {name: len(f) for name, f in finals.items()}
    # every prompt is laid out as the official file does
    row = finals["sft"].iloc[0]
    assert row["prompt"].startswith(row["description"] + "\n1. ")


def test_rerun_asks_nothing_and_changes_nothing(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=10)
    out = tmp_path / "run"
    run(cfg, out)
    before = scripted_server.stats_snapshot()["requests"]
    first = read_parquet_dir(out / "final" / "sft")
    summary = run(cfg, out)
    assert scripted_server.stats_snapshot()["requests"] == before
    assert summary.skipped == ["seeds", "taxonomy", "expand", "respond", "perturb", "filter"]
    pd.testing.assert_frame_equal(first, read_parquet_dir(out / "final" / "sft"))


def test_changed_config_is_refused_unless_fresh(tmp_path, scripted_server):
    out = tmp_path / "run"
    run(write_config(tmp_path / "a.yaml", scripted_server.base_url, limit=6), out)
    changed = write_config(tmp_path / "b.yaml", scripted_server.base_url, limit=6, perturb="{operations: [add]}")
    with pytest.raises(UserError, match="different config.*--fresh"):
        run(changed, out)
    assert len(read_parquet_dir(out / "final" / "sft")) > 0  # nothing written was harmed
    run(changed, out, stages=("perturb", "filter"), fresh=True)
    ops = set(read_parquet_dir(out / "perturb")["perturb_op"].dropna())
    assert ops <= {"add", "revise"}  # revise stands in for delete on one-constraint rows; here only add
    assert "delete" not in ops


def test_single_stage_needs_its_input(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=4)
    with pytest.raises(UserError, match="needs the output of 'expand'"):
        run(cfg, tmp_path / "run", stages=("respond",))
    run(cfg, tmp_path / "run", stages=("seeds",))
    run(cfg, tmp_path / "run", stages=("taxonomy",))
    assert len(read_parquet_dir(tmp_path / "run" / "taxonomy")) == 4


def test_faults_are_retried_or_recorded(tmp_path, faulty_server):
    cfg = write_config(tmp_path / "c.yaml", faulty_server.base_url, limit=16, timeout_s=1)
    out = tmp_path / "run"
    run(cfg, out)
    faults = faulty_server.stats_snapshot()["faults"]
    assert faults.get("429") and faults.get("500") and faults.get("hang") and faults.get("malformed")
    rows = read_parquet_dir(out / "perturb")
    reasons = (
        set(rows.loc[rows["status"] != "ok", "reason"])
        | set(rows["iopo_reason"].dropna())
        | set(rows["dpo_reason"].dropna())
    )
    # transient faults were retried away; malformed JSON was asked again with another seed, and answered well
    assert not reasons & {"timeout", "rate_limited", "http_500", "connection_error", "invalid_json"}
    assert (out / "final" / "sft" / "part-00000.parquet").exists()


def test_a_run_the_judge_let_no_row_through_says_what_to_change(tmp_path):
    from collections import Counter

    from trace_builder.pipeline.runner import RunSummary, empty_run_hint

    judged_out = RunSummary(
        tmp_path, final_rows={"sft": 0, "eval": 0}, failure_reasons=Counter({"respond: judge_below_10": 6})
    )
    assert "respond.attempts" in empty_run_hint(judged_out) and "--judge-model" in empty_run_hint(judged_out)
    some_rows = RunSummary(tmp_path, final_rows={"sft": 3}, failure_reasons=Counter({"respond: judge_below_10": 6}))
    other_reason = RunSummary(tmp_path, final_rows={"sft": 0}, failure_reasons=Counter({"expand: quality_rejected": 6}))
    assert empty_run_hint(some_rows) is None and empty_run_hint(other_reason) is None


def test_a_config_built_in_python_has_the_fingerprints_of_the_same_config_read_from_a_file():
    from trace_builder.config import RunConfig
    from trace_builder.pipeline.registry import stage_fingerprints

    built = RunConfig()
    read = RunConfig.model_validate(json.loads(built.model_dump_json()))
    assert stage_fingerprints(built, "digest") == stage_fingerprints(read, "digest")
