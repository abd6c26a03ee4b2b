"""Checks decide the constraints they cover, even against an LLM judge that says 10 to everything."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import write_config
from trace_builder.config import load_config
from trace_builder.judge import ConstraintVerdict, judge_response
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.run.store import read_parquet_dir
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import lenient_respond


def test_checker_overrules_a_wrong_llm_score(tmp_path):
    weights = "{weights: {inclusion: 30, exclusion: 0, numerical: 0}, count_histogram: [0, 1]}"
    with ScriptedServer(lenient_respond) as server:
        # Every judgement audited: the LLM is asked even where a check already failed the answer.
        audit = "{audit_share: 1.0}"
        config = load_config(
            write_config(tmp_path / "c.yaml", server.base_url, limit=12, taxonomy=weights, judge=audit)
        )
        asyncio.run(run_pipeline(config, tmp_path / "run", ["seeds", "taxonomy", "expand", "respond", "perturb"]))
    rows = read_parquet_dir(tmp_path / "run" / "perturb")
    rows = rows[rows["status"] == "ok"]
    overruled = 0
    for _, row in rows.iterrows():
        verdicts = list(row["rejected_judgement"])  # Parquet structs, not JSON strings
        for verdict, check in zip(verdicts, row["checks"]):
            if check is None:
                assert verdict["decided_by"] == "llm" and verdict["score"] == 10  # the lenient judge
            else:
                assert verdict["decided_by"] == "code"
                assert verdict["detail"].startswith("keyword_include")
        # the worse answer drops the first constraint's keyword: only code can notice
        if row["checks"][0] is not None:
            assert verdicts[0]["score"] == 0
            assert verdicts[0]["llm_score"] == 10  # the LLM's view is kept beside the check's
            assert row["disputes"] >= 1  # and the disagreement is counted
            assert row["dpo_status"] == "ok"
            overruled += 1
        else:
            assert row["dpo_status"] == "failed" and row["dpo_reason"] == "rejected_passed_judge"
    assert overruled >= 3


def test_a_failed_check_spares_the_llm_judge_but_for_the_audit_sample(tmp_path):
    weights = "{weights: {inclusion: 30, exclusion: 0, numerical: 0}, count_histogram: [0, 1]}"
    asked = {}
    for audit in (0.0, 1.0):
        with ScriptedServer(lenient_respond) as server:
            cfg = write_config(tmp_path / f"c{audit}.yaml", server.base_url, limit=12, taxonomy=weights)
            config = load_config(cfg)
            config.judge.audit_share = audit
            asyncio.run(
                run_pipeline(config, tmp_path / f"run{audit}", ["seeds", "taxonomy", "expand", "respond", "perturb"])
            )
            asked[audit] = server.stats_snapshot()["by_task"].get("perturb.judge_rejected", 0)
        rows = read_parquet_dir(tmp_path / f"run{audit}" / "perturb")
        rows = rows[(rows["status"] == "ok") & rows["checks"].map(lambda c: c[0] is not None)]
        assert len(rows) >= 3 and (rows["dpo_status"] == "ok").all()  # the check alone fails the worse answer
        if audit == 0.0:
            skipped = [v for verdicts in rows["rejected_judgement"] for v in verdicts if v["decided_by"] == "skipped"]
            assert skipped and all(v["score"] is None for v in skipped)
    assert asked[0.0] < asked[1.0]


class _Unasked:
    """An LLM client the judge must not reach; counts the attempts."""

    def __init__(self):
        self.asked = 0

    async def chat_json(self, *args, **kwargs):
        self.asked += 1
        raise AssertionError("the LLM judge was asked")


def _judge(client, constraints, response, checks, **kwargs):
    return asyncio.run(
        judge_response(
            client,
            language="en",
            description="Write about bees.",
            constraints=constraints,
            input_text="NULL",
            response=response,
            checks=checks,
            **kwargs,
        )
    )


def test_the_llm_judge_is_not_asked_what_checks_and_earlier_verdicts_already_decide():
    bees = {"kind": "keyword_include", "params": {"keywords": ["bees"]}}
    client = _Unasked()
    # Every constraint checked and passed: the pass is decided without the LLM.
    judged = _judge(client, ["Mention bees."], "Bees and more bees.", [bees], verdict_only=True)
    assert judged.passed and judged.decided_by == ["code"]
    # A constraint an earlier judgement of this response passed (x2 against y1 after DELETE or
    # REVISE keeps it): reused, so a checked constraint plus a known one need no request either.
    earlier = ConstraintVerdict(10, "llm", "clear", 10)
    judged = _judge(
        client, ["Mention bees.", "Be friendly."], "Bees!", [bees, None], verdict_only=True, known=[None, earlier]
    )
    assert judged.passed and judged.decided_by == ["code", "llm"] and client.asked == 0
    # A known failure fails the response at once, the rest unjudged.
    failed = ConstraintVerdict(3, "llm", "rude", 3)
    judged = _judge(client, ["Be friendly.", "Be brief."], "x", [None, None], verdict_only=True, known=[failed, None])
    assert not judged.passed and judged.decided_by == ["llm", "skipped"] and client.asked == 0
    # Without verdict_only (eval, the audit sample) the LLM scores everything.
    with pytest.raises(AssertionError):
        _judge(client, ["Mention bees."], "Bees.", [bees])
    assert client.asked == 1
