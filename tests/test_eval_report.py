"""Eval reports: Wilson intervals at small n, per-language rows, settings, item drill-down, the paired test."""

from __future__ import annotations

import random

import pytest

from trace_builder.evaluate.compare import paired_rows, render_comparison_html
from trace_builder.evaluate.metrics import ItemResult, compute_metrics, paired_bootstrap, wilson_interval
from trace_builder.evaluate.report import Run, render_html, render_markdown


def judgement(item_id: str, scores: list[int], language: str = "en", decided_by: list[str] | None = None) -> dict:
    """One judgement row as evaluate/stages.JUDGEMENT_SCHEMA has it."""
    return {
        "id": item_id,
        "language": language,
        "constraint_count": len(scores),
        "constraints": [f"constraint {i} of {item_id}" for i in range(len(scores))],
        "dimensions": ["theme", "numerical", "tone_style"][: len(scores)],
        "dimension_labels": None,
        "status": "ok",
        "reason": "",
        "scores": scores,
        "decided_by": decided_by or ["llm"] * len(scores),
        "details": [f"note {i}" for i in range(len(scores))],
        "followed": all(s == 10 for s in scores),
        "llm_scores": scores,
    }


def as_result(row: dict) -> ItemResult:
    return ItemResult(row["id"], tuple(row["dimensions"]), tuple(row["scores"]), language=row["language"])


def test_wilson_interval_is_honest_at_small_n():
    low, high = wilson_interval(0, 2)
    assert low == 0.0 and high == pytest.approx(0.658, abs=0.001)
    low, high = wilson_interval(2, 2)
    assert high == 1.0 and low == pytest.approx(0.342, abs=0.001)
    low, high = wilson_interval(300, 1000)  # close to the normal approximation at large n
    assert (low, high) == pytest.approx((0.272, 0.329), abs=0.002)


def test_zero_of_two_is_not_reported_as_a_point():
    results = [ItemResult("a", ("theme",), (3,)), ItemResult("b", ("theme",), (0,))]
    m = compute_metrics(results, resamples=200)
    assert m["if_s"]["value"] == 0.0 and m["if_s"]["high"] > 0.6
    assert m["csr"]["high"] > 0.6  # the bootstrap alone says [0, 0] here
    assert m["by_language"] == {}
    assert "[0.0, 65.8]" in render_markdown(Run("x", m))


def test_report_shows_languages_settings_and_each_items_constraints():
    items = [
        judgement("a1", [10], "en", ["code"]),
        judgement("a2", [10, 4], "zh", ["code", "llm"]),
        judgement("a3", [10, 10, 10], "zh"),
    ]
    metrics = compute_metrics([as_result(r) for r in items], resamples=100)
    settings = {"generation": {"temperature": 0.0, "max_tokens": 512}, "judge": {"model": "j"}, "limit": None}
    run = Run("sft", metrics, model="openai:m", judge="openai:j", data="d", settings=settings, items=tuple(items))

    md = render_markdown(run)
    assert "## Followed rate by language" in md and "| zh | 50.0 |" in md
    assert "| generation.max_tokens | 512 |" in md and "| limit | – |" in md
    assert "| a2 | zh | 2 | not followed | 10 4 |" in md

    page = render_html(run)
    assert "<h2>By language</h2>" in page and "generation.temperature" in page
    assert page.count('<details class="item">') == 3
    # a2's second constraint: its text, dimension label, score and who decided it
    assert "<td>constraint 1 of a2</td><td>Numerical</td><td>4</td><td>llm</td><td>note 1</td>" in page
    assert "<td>constraint 0 of a1</td><td>Theme</td><td>10</td><td>code</td>" in page


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = random.Random(0)
    base = [ItemResult(str(i), ("theme",), (10 if rng.random() < 0.5 else 0,)) for i in range(80)]
    better = [ItemResult(r.id, r.dimensions, (10,) if r.followed or rng.random() < 0.6 else (0,)) for r in base]
    test = paired_bootstrap(base, better, "overall", resamples=2000)
    assert test["difference"] > 0.2 and test["p_value"] < 0.01 and test["low"] > 0
    assert test["paired_items"] == 80
    same = paired_bootstrap(base, base, "csr", resamples=500)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert paired_bootstrap(base, better, resamples=500) == paired_bootstrap(base, better, resamples=500)  # seeded
    assert paired_bootstrap(base, [], resamples=50)["p_value"] is None  # nothing shared


def test_paired_bootstrap_p_values_hold_their_level_under_the_null():
    """Two runs drawn alike: about 5% of comparisons may come out at p < 0.05, not many more."""
    rng = random.Random(1)
    rejections = 0
    trials = 150
    for trial in range(trials):
        a = [ItemResult(str(i), ("theme",), (10 if rng.random() < 0.6 else 0,)) for i in range(60)]
        b = [ItemResult(str(i), ("theme",), (10 if rng.random() < 0.6 else 0,)) for i in range(60)]
        rejections += paired_bootstrap(a, b, resamples=400, seed=trial)["p_value"] < 0.05
    assert rejections / trials < 0.11


def test_compare_reports_the_paired_test():
    base_items = [judgement(f"i{k}", [10, 0] if k % 2 else [10]) for k in range(20)]
    other_items = [judgement(f"i{k}", [10, 10] if k % 2 else [10]) for k in range(20)]
    runs = [
        Run(name, compute_metrics([as_result(r) for r in items], resamples=100), items=tuple(items))
        for name, items in (("sft", base_items), ("dpo", other_items))
    ]
    rows = paired_rows(runs, resamples=500)
    assert [r[1] for r in rows] == ["IF (all)", "IF-S", "IF-M", "CSR"]
    overall = rows[0]
    assert overall[0] == "dpo" and overall[2] == "+50.0" and float(overall[4]) < 0.01 and overall[5] == "20"
    assert rows[1][2] == "+0.0" and rows[1][4] == "1"  # IF-S items did not change
    assert "Paired bootstrap against sft" in render_comparison_html(runs)
