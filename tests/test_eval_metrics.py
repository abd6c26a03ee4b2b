"""The metrics on hand-made judgements: exact values, failures counted as zeros, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from trace_builder.evaluate.metrics import (
    GENERATION_FAILED,
    JUDGE_FAILED,
    ItemResult,
    bootstrap_weights,
    compute_metrics,
    ratio_estimates,
)


def _results() -> list[ItemResult]:
    return [
        ItemResult("a", ("theme",), (10,), language="en"),
        ItemResult("b", ("numerical",), (9,), language="en"),
        ItemResult("c", ("inclusion", "numerical", "output_format"), (10, 10, 10), language="zh"),
        ItemResult("d", ("inclusion", "tone_style"), (10, 4), language="zh"),
        ItemResult("e", ("tone_style", "unknown"), (10, 10), language="zh"),
        ItemResult("f", ("theme", "numerical"), None, status=JUDGE_FAILED, reason="invalid_json"),
        ItemResult("g", ("theme",), None, status=GENERATION_FAILED, reason="timeout"),
    ]


def test_hand_computed_values():
    m = compute_metrics(_results(), resamples=200, seed=1)
    assert m["items"] == {
        "total": 7,
        "judged": 5,
        "generation_failed": 1,
        "judge_failed": 1,
        "failure_reasons": {"generation_failed:timeout": 1, "judge_failed:invalid_json": 1},
        "constraints": 12,
    }
    assert (m["if_s"]["hits"], m["if_s"]["n"]) == (1, 3)  # a yes, b no, g failed
    assert m["if_s"]["value"] == pytest.approx(1 / 3)
    assert (m["if_m"]["hits"], m["if_m"]["n"]) == (2, 4)  # c and e followed, d not, f failed
    assert m["overall"]["value"] == pytest.approx(3 / 7)
    assert (m["csr"]["hits"], m["csr"]["n"]) == (7, 12)  # a 1, b 0, c 3, d 1, e 2, f 0 of 2, g 0 of 1
    assert m["mean_score"]["value"] == pytest.approx(83 / 12)
    assert m["by_count"]["1"]["value"] == pytest.approx(1 / 3)
    assert m["by_count"]["2"]["value"] == pytest.approx(1 / 3)
    assert m["by_count"]["3"]["value"] == pytest.approx(1.0)
    dims = m["by_dimension"]
    assert list(dims) == ["theme", "inclusion", "numerical", "tone_style", "output_format", "unknown"]  # taxonomy order
    assert dims["numerical"]["csr"]["value"] == pytest.approx(1 / 3)
    assert dims["numerical"]["if"]["value"] == pytest.approx(1 / 3)  # b no, c yes, f failed
    assert dims["tone_style"]["csr"]["value"] == pytest.approx(1 / 2)
    assert dims["tone_style"]["type"] == "style"
    assert dims["unknown"]["type"] == "unknown"
    # a theme 10, b num 9, c inc 10, c num 10, d inc 10, f theme and num failed, g theme failed
    assert m["by_type"]["content"]["csr"]["value"] == pytest.approx(4 / 8)
    assert m["by_type"]["format"]["csr"]["value"] == pytest.approx(1.0)
    assert m["by_type"]["style"]["if"]["value"] == pytest.approx(1 / 2)  # d no, e yes
    assert m["by_language"]["zh"]["value"] == pytest.approx(2 / 3)


def test_failed_items_count_as_not_followed():
    """Failing on an item never raises a rate: it counts, with every constraint at 0."""
    judged_only = compute_metrics(_results()[:5], resamples=100, seed=3)
    with_failures = compute_metrics(_results(), resamples=100, seed=3)
    for key in ("overall", "if_s", "if_m", "csr"):
        assert with_failures[key]["hits"] == judged_only[key]["hits"]
        assert with_failures[key]["n"] > judged_only[key]["n"]
        assert with_failures[key]["value"] < judged_only[key]["value"]


def test_intervals_are_seeded_and_bracket_the_value():
    results = [
        ItemResult(str(i), ("theme",) * (1 + i % 4), (10,) * (1 + i % 4) if i % 3 else (10, 3, 3, 3)[: 1 + i % 4])
        for i in range(300)
    ]
    first = compute_metrics(results, resamples=500, seed=7)
    assert first == compute_metrics(results, resamples=500, seed=7)
    assert first != compute_metrics(results, resamples=500, seed=8)
    for key in ("overall", "if_s", "if_m", "csr"):
        rate = first[key]
        assert rate["low"] <= rate["value"] <= rate["high"]
    for key in ("overall", "if_m", "csr"):  # (every single-constraint item here is followed)
        assert first[key]["high"] - first[key]["low"] > 0


def test_bootstrap_interval_matches_the_binomial_width():
    """For a plain proportion the percentile interval is close to the normal approximation."""
    hits = np.array([1.0] * 300 + [0.0] * 700)[:, None]
    weights = bootstrap_weights(1000, 4000, seed=0)
    (estimate,) = ratio_estimates(hits, np.ones_like(hits), weights)
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / 1000)
    assert estimate["value"] == pytest.approx(0.3)
    assert estimate["low"] == pytest.approx(0.3 - half_width, abs=0.006)
    assert estimate["high"] == pytest.approx(0.3 + half_width, abs=0.006)
    assert weights.sum(axis=1).tolist() == [1000] * 4000  # every resample draws n items


def test_undefined_rates_are_none():
    m = compute_metrics([ItemResult("a", ("theme", "value"), (10, 10))], resamples=50)
    assert m["if_s"] == {"value": None, "low": None, "high": None, "hits": 0, "n": 0}
    assert m["if_m"]["value"] == 1.0
    failed = compute_metrics([ItemResult("x", ("theme",), None, status=JUDGE_FAILED, reason="timeout")], resamples=50)
    assert failed["overall"]["value"] == 0.0 and failed["items"]["judge_failed"] == 1
    assert compute_metrics([], resamples=50)["overall"]["value"] is None
