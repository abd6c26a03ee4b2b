"""TRACE's metrics from per-constraint scores: IF-S, IF-M, overall, per count / dimension / type, CSR, bootstrap CIs.

An instruction is followed when every one of its constraints scores 10 (TRACE.md §6).
Items whose answer or judgement failed are counted apart and left out of every rate:
a judge timeout says nothing about the model under test, so it must not count as a zero.

Confidence intervals come from one nonparametric bootstrap over the judged items
(percentile method): every resample draws the items with replacement, and each metric
is recomputed on it as a ratio of sums, so a subgroup rate (IF-S, one dimension's CSR)
varies with how many of its items a resample happens to hold, as it would in a new draw
of the evaluation set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trace_builder.records import FULL_MARKS
from trace_builder.taxonomy import DIMENSIONS, TYPES, dimension_order, get_dimension

OK = "ok"
GENERATION_FAILED = "generation_failed"
JUDGE_FAILED = "judge_failed"


@dataclass(frozen=True)
class ItemResult:
    """What the metrics need from one judged (or failed) item."""

    id: str
    dimensions: tuple[str, ...]
    scores: tuple[int, ...] | None  # None unless status == 'ok'
    status: str = OK
    reason: str = ""
    language: str = ""

    @property
    def constraint_count(self) -> int:
        return len(self.dimensions)

    @property
    def followed(self) -> bool:
        return self.scores is not None and all(s >= FULL_MARKS for s in self.scores)


def dimension_type(dimension: str) -> str:
    try:
        return get_dimension(dimension).type
    except KeyError:
        return "unknown"


def _dimension_sort_key(dimension: str) -> tuple[int, str]:
    try:
        return (dimension_order(dimension), dimension)
    except KeyError:
        return (len(DIMENSIONS), dimension)


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities: how often each item is drawn in each resample."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.int32)
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def ratio_estimates(
    numerators: np.ndarray, denominators: np.ndarray, weights: np.ndarray, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Point estimate and percentile interval of sum(num)/sum(den), one per column.

    `numerators` and `denominators` are (items, metrics); `weights` is (resamples, items).
    """
    hits = numerators.sum(axis=0)
    totals = denominators.sum(axis=0)
    resampled_hits = weights @ numerators
    resampled_totals = weights @ denominators
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(resampled_totals > 0, resampled_hits / resampled_totals, np.nan)
    tail = (1 - confidence) / 2 * 100
    out = []
    for j in range(numerators.shape[1]):
        if totals[j] <= 0:
            out.append({"value": None, "low": None, "high": None, "hits": 0.0, "n": 0.0})
            continue
        column = ratios[:, j]
        column = column[~np.isnan(column)]
        low, high = np.percentile(column, [tail, 100 - tail]) if column.size else (np.nan, np.nan)
        out.append(
            {
                "value": float(hits[j] / totals[j]),
                "low": float(low),
                "high": float(high),
                "hits": float(hits[j]),
                "n": float(totals[j]),
            }
        )
    return out


def _as_counts(entry: dict[str, Any]) -> dict[str, Any]:
    # Counts of items / constraints are whole numbers; keep the JSON free of '12.0'.
    return {**entry, "hits": int(round(entry["hits"])), "n": int(round(entry["n"]))}


def compute_metrics(
    results: Sequence[ItemResult], resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Every reported number, JSON-ready. Rates are fractions in [0, 1] (None where undefined)."""
    judged = [r for r in results if r.status == OK and r.scores is not None]
    failures = Counter(
        f"{r.status}:{r.reason or 'unknown'}" for r in results if not (r.status == OK and r.scores is not None)
    )
    n = len(judged)

    dimensions = sorted({d for r in judged for d in r.dimensions}, key=_dimension_sort_key)
    types = [t for t in TYPES if any(dimension_type(d) == t for d in dimensions)]
    types += sorted({dimension_type(d) for d in dimensions} - set(TYPES))
    counts = sorted({r.constraint_count for r in judged})
    languages = sorted({r.language for r in judged if r.language})

    # Instruction-level columns: numerator = followed & in group, denominator = in group.
    followed = np.array([r.followed for r in judged], dtype=np.float64)
    item_groups: dict[str, np.ndarray] = {
        "overall": np.ones(n),
        "if_s": np.array([r.constraint_count == 1 for r in judged], dtype=np.float64),
        "if_m": np.array([r.constraint_count > 1 for r in judged], dtype=np.float64),
    }
    for c in counts:
        item_groups[f"count:{c}"] = np.array([r.constraint_count == c for r in judged], dtype=np.float64)
    for lang in languages:
        item_groups[f"language:{lang}"] = np.array([r.language == lang for r in judged], dtype=np.float64)
    for d in dimensions:
        item_groups[f"dim_if:{d}"] = np.array([d in r.dimensions for r in judged], dtype=np.float64)
    for t in types:
        item_groups[f"type_if:{t}"] = np.array(
            [any(dimension_type(d) == t for d in r.dimensions) for r in judged], dtype=np.float64
        )

    # Constraint-level columns: numerator = constraints at full marks, denominator = constraints.
    constraint_groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def per_item(select) -> tuple[np.ndarray, np.ndarray]:
        hits = np.array(
            [sum(1 for d, s in zip(r.dimensions, r.scores) if select(d) and s >= FULL_MARKS) for r in judged],
            dtype=np.float64,
        )
        total = np.array([sum(1 for d in r.dimensions if select(d)) for r in judged], dtype=np.float64)
        return hits, total

    constraint_groups["csr"] = per_item(lambda d: True)
    for d in dimensions:
        constraint_groups[f"dim_csr:{d}"] = per_item(lambda x, d=d: x == d)
    for t in types:
        constraint_groups[f"type_csr:{t}"] = per_item(lambda x, t=t: dimension_type(x) == t)
    score_sums = np.array([float(sum(r.scores)) for r in judged])
    constraint_totals = np.array([float(r.constraint_count) for r in judged])

    names = list(item_groups) + list(constraint_groups) + ["mean_score"]
    numerators = (
        np.column_stack(
            [followed * g for g in item_groups.values()] + [h for h, _ in constraint_groups.values()] + [score_sums]
        )
        if n
        else np.zeros((0, len(names)))
    )
    denominators = (
        np.column_stack(list(item_groups.values()) + [t for _, t in constraint_groups.values()] + [constraint_totals])
        if n
        else np.zeros((0, len(names)))
    )
    weights = bootstrap_weights(n, resamples, seed)
    estimates = dict(zip(names, ratio_estimates(numerators, denominators, weights, confidence)))
    est = {k: _as_counts(v) for k, v in estimates.items() if k != "mean_score"}
    mean_score = {k: v for k, v in estimates["mean_score"].items() if k not in ("hits",)}
    mean_score["n"] = int(round(mean_score["n"]))

    return {
        "items": {
            "total": len(results),
            "judged": n,
            "generation_failed": sum(1 for r in results if r.status == GENERATION_FAILED),
            "judge_failed": sum(1 for r in results if r.status == JUDGE_FAILED),
            "failure_reasons": dict(sorted(failures.items())),
            "constraints_judged": int(constraint_totals.sum()) if n else 0,
        },
        "overall": est["overall"],
        "if_s": est["if_s"],
        "if_m": est["if_m"],
        "csr": est["csr"],
        "mean_score": mean_score,
        "by_count": {str(c): est[f"count:{c}"] for c in counts},
        "by_language": {lang: est[f"language:{lang}"] for lang in languages},
        "by_dimension": {
            d: {"type": dimension_type(d), "csr": est[f"dim_csr:{d}"], "if": est[f"dim_if:{d}"]} for d in dimensions
        },
        "by_type": {t: {"csr": est[f"type_csr:{t}"], "if": est[f"type_if:{t}"]} for t in types},
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "confidence": confidence,
            "method": "percentile, items resampled",
        },
    }
