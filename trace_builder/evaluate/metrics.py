"""TRACE's metrics from per-constraint scores: IF-S, IF-M, overall, per count / dimension / type, CSR, bootstrap CIs.

An instruction is followed when every one of its constraints scores 10 (TRACE.md §6).
Every item counts in every rate: an item whose answer failed (refused, timed out, empty) or
whose judgement failed scores 0 on each constraint, as IFEval and lm-eval count an empty
answer. Leaving failures out would make failing on hard items raise the score. How many
failed, and why, is reported beside the rates (`items`); a plain rerun re-asks what failed
for a transient reason.

Confidence intervals: an instruction-level rate (IF-S, IF-M, per count, language, dimension)
is a share of independent items, so it gets the Wilson score interval, which stays honest
at small n (0 of 2 followed gives [0, 66%], where a percentile bootstrap says [0, 0]).
A constraint-level rate (CSR) pools constraints that share an item, so its interval comes
from one nonparametric bootstrap over the judged items (percentile method: every resample
draws items with replacement and recomputes the ratio of sums), widened where needed to
the Wilson interval of its hits / n, which keeps it from collapsing when every constraint
scored alike. The mean score keeps the plain bootstrap interval.

`paired_bootstrap` compares two runs on the items both judged: the same resampled items
for both, a percentile interval of the difference and a two-sided p-value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
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

    @property
    def scored(self) -> tuple[int, ...]:
        """The scores the rates count: a failed item's constraints each score 0."""
        return self.scores if self.scores is not None else (0,) * self.constraint_count


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


def wilson_interval(hits: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion hits / n (n > 0)."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def with_wilson(entry: dict[str, Any], confidence: float, widen_only: bool) -> dict[str, Any]:
    """`entry` with the Wilson interval of its hits / n, or (widen_only) its interval widened to contain it."""
    if entry["value"] is None or entry["n"] <= 0:
        return entry
    low, high = wilson_interval(entry["hits"], entry["n"], confidence)
    if widen_only:
        low, high = min(low, entry["low"]), max(high, entry["high"])
    return {**entry, "low": low, "high": high}


def _as_counts(entry: dict[str, Any]) -> dict[str, Any]:
    # Counts of items / constraints are whole numbers; keep the JSON free of '12.0'.
    return {**entry, "hits": int(round(entry["hits"])), "n": int(round(entry["n"]))}


def compute_metrics(
    results: Sequence[ItemResult], resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Every reported number, JSON-ready. Rates are fractions in [0, 1] (None where undefined)."""
    judged = list(results)  # failures included, as zeros (`ItemResult.scored`)
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
            [sum(1 for d, s in zip(r.dimensions, r.scored) if select(d) and s >= FULL_MARKS) for r in judged],
            dtype=np.float64,
        )
        total = np.array([sum(1 for d in r.dimensions if select(d)) for r in judged], dtype=np.float64)
        return hits, total

    constraint_groups["csr"] = per_item(lambda d: True)
    for d in dimensions:
        constraint_groups[f"dim_csr:{d}"] = per_item(lambda x, d=d: x == d)
    for t in types:
        constraint_groups[f"type_csr:{t}"] = per_item(lambda x, t=t: dimension_type(x) == t)
    score_sums = np.array([float(sum(r.scored)) for r in judged])
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
    for name in item_groups:
        estimates[name] = with_wilson(estimates[name], confidence, widen_only=False)
    for name in constraint_groups:
        estimates[name] = with_wilson(estimates[name], confidence, widen_only=True)
    est = {k: _as_counts(v) for k, v in estimates.items() if k != "mean_score"}
    mean_score = {k: v for k, v in estimates["mean_score"].items() if k not in ("hits",)}
    mean_score["n"] = int(round(mean_score["n"]))

    return {
        "items": {
            "total": len(results),
            "judged": sum(1 for r in results if r.status == OK and r.scores is not None),
            "generation_failed": sum(1 for r in results if r.status == GENERATION_FAILED),
            "judge_failed": sum(1 for r in results if r.status == JUDGE_FAILED),
            "failure_reasons": dict(sorted(failures.items())),
            "constraints": int(constraint_totals.sum()) if n else 0,
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
        "intervals": {
            "instructions": "Wilson score",
            "constraints": "percentile bootstrap over items, widened to the Wilson interval",
            "mean_score": "percentile bootstrap over items",
        },
    }


# The rates a paired comparison tests, each a ratio of per-item sums (numerator, denominator).
PAIRED_METRICS = ("overall", "if_s", "if_m", "csr")


def item_fraction(result: ItemResult, metric: str) -> tuple[float, float]:
    """One judged item's share of `metric`: (numerator, denominator) of its ratio of sums."""
    count, followed = result.constraint_count, float(result.followed)
    if metric == "overall":
        return followed, 1.0
    if metric == "if_s":
        return followed * (count == 1), float(count == 1)
    if metric == "if_m":
        return followed * (count > 1), float(count > 1)
    if metric == "csr":
        return float(sum(s >= FULL_MARKS for s in result.scored)), float(count)
    raise ValueError(f"no paired test for {metric!r}: use one of {', '.join(PAIRED_METRICS)}")


def _by_id(results: Sequence[ItemResult]) -> dict[str, ItemResult]:
    return {r.id: r for r in results}


def paired_bootstrap(
    base: Sequence[ItemResult],
    other: Sequence[ItemResult],
    metric: str = "overall",
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """other - base on the items both runs hold (failures as zeros), resampling the same items for both.

    The p-value is two-sided, from the bootstrap distribution shifted to the null of no
    difference: the share of resampled differences at least as far from the observed one
    as the observed one is from 0 (with the +1 correction, so it is never exactly 0).
    """
    a, b = _by_id(base), _by_id(other)
    ids = sorted(set(a) & set(b))
    columns = np.array([item_fraction(a[i], metric) + item_fraction(b[i], metric) for i in ids]).reshape(-1, 4)
    num_a, den_a, num_b, den_b = columns.T
    out: dict[str, Any] = {"metric": metric, "paired_items": len(ids), "resamples": resamples, "seed": seed}
    if not ids or den_a.sum() <= 0:
        return {**out, "base": None, "other": None, "difference": None, "low": None, "high": None, "p_value": None}
    rate_a, rate_b = num_a.sum() / den_a.sum(), num_b.sum() / den_b.sum()
    difference = float(rate_b - rate_a)
    weights = bootstrap_weights(len(ids), resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = (weights @ num_b) / (weights @ den_b) - (weights @ num_a) / (weights @ den_a)
    resampled = resampled[~np.isnan(resampled)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    if difference == 0:
        p_value = 1.0
    else:
        p_value = (1 + np.sum(np.abs(resampled - difference) >= abs(difference))) / (resampled.size + 1)
    return {
        **out,
        "base": float(rate_a),
        "other": float(rate_b),
        "difference": difference,
        "low": float(low),
        "high": float(high),
        "p_value": float(p_value),
    }
