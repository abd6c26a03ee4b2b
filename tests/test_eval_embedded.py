"""The eval end to end with the real embedded model (gemma-3-270m) as model under test and judge."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from tests.test_eval_support import known_rows, write_jsonl
from trace_builder.evaluate.runner import evaluate_path
from trace_builder.evaluate.settings import EvalConfig


@pytest.mark.slow
def test_embedded_model_runs_the_eval_end_to_end(tmp_path):
    # Two short English items: the point is that every step runs for real, not the scores.
    rows = [known_rows()[0], known_rows()[3]]
    data = write_jsonl(tmp_path / "two.jsonl", rows)
    backend = {"kind": "local", "model": "gemma3-270m", "batch_size": 2}
    config = EvalConfig.model_validate(
        {
            "model": backend,
            "judge": backend,
            "generation": {"max_tokens": 24},
            "judging": {"tokens_per_constraint": 96},
            "bootstrap": {"resamples": 100},
        }
    )
    out = tmp_path / "eval"
    outcome = asyncio.run(evaluate_path(data, out, config, show_progress=False))
    m = outcome.metrics
    assert m["items"]["total"] == 2
    assert m["items"]["judged"] + m["items"]["generation_failed"] + m["items"]["judge_failed"] == 2
    predictions = pd.read_parquet(out / "predictions")
    assert predictions["status"].eq("ok").all() and predictions["completion_tokens"].gt(0).all()
    judgements = pd.read_parquet(out / "judgements")
    for row in judgements[judgements["status"] == "ok"].itertuples():
        assert len(row.scores) == row.constraint_count and all(0 <= s <= 10 for s in row.scores)
    assert json.loads((out / "metrics.json").read_text())["items"]["total"] == 2
    assert (out / "report.html").is_file()
    # A rerun answers from the finished chunk: no model call at all.
    again = asyncio.run(evaluate_path(data, out, config, show_progress=False))
    assert again.stats.items == 0 and again.metrics == m
