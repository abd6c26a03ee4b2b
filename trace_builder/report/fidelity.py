"""How close a run's data is to TRACE: count-histogram distance, type mix, IOPO yield per operation, check share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trace_builder.run.store import read_parquet_dir
from trace_builder.taxonomy import (
    EVAL_COUNT_HISTOGRAM,
    EVAL_DIMENSION_COUNTS,
    TRAIN_COUNT_HISTOGRAM,
    TYPES,
    dimension_for_label,
)


def tv_distance(observed: Mapping[int, int], reference: Sequence[float]) -> float | None:
    """Total-variation distance between the observed counts (by constraint count) and a histogram over 1..len."""
    width = max(len(reference), *observed) if observed else len(reference)
    row = np.zeros((1, width))
    for count, n in observed.items():
        row[0, count - 1] = n
    distance = tv_distances(row, reference)[0]
    return None if np.isnan(distance) else float(distance)


def tv_distances(observed: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """`tv_distance` of each row of `observed` (column i: rows of count i + 1), NaN for a row of none."""
    ref = np.zeros(observed.shape[1])
    ref[: len(reference)] = np.asarray(reference, dtype=float) / sum(reference)
    totals = observed.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * np.abs(observed / totals - ref).sum(axis=1)


def type_mix(dimension_lists: Iterable[Iterable[str]]) -> dict[str, float]:
    """Share of constraints per constraint type (labels outside the 26 count as 'unknown')."""
    counts: Counter = Counter()
    for dims in dimension_lists:
        for label in dims if dims is not None else ():
            dim = dimension_for_label(label)
            counts[dim.type if dim else "unknown"] += 1
    total = sum(counts.values())
    return {t: counts[t] / total for t in (*TYPES, "unknown") if counts[t]} if total else {}


def trace_type_mix() -> dict[str, float]:
    """TRACE's type mix: the dimension counts of its eval set (TRACE.md §2), summed by type."""
    return type_mix([[d for d, n in EVAL_DIMENSION_COUNTS.items() for _ in range(n)]])


def iopo_yield(perturb: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per operation: attempts, groups kept, and the yield, from the perturb stage's attempt log."""
    tried: Counter = Counter()
    kept: Counter = Counter()
    for attempts in perturb.get("perturb_attempts", pd.Series(dtype=object)).dropna():
        for attempt in attempts:
            tried[attempt["op"]] += 1
            kept[attempt["op"]] += attempt["outcome"] == "ok"
    return {
        op: {"attempts": tried[op], "kept": kept[op], "yield": round(kept[op] / tried[op], 3)} for op in sorted(tried)
    }


def decided_by_check(frame: pd.DataFrame) -> float | None:
    """Share of final scores that a deterministic check decided."""
    deciders = [d for row in frame.get("decided_by", pd.Series(dtype=object)).dropna() for d in row]
    return round(sum(d == "code" for d in deciders) / len(deciders), 3) if deciders else None


def _histogram(frame: pd.DataFrame) -> dict[int, int]:
    return dict(sorted(Counter(frame["constraint_count"].dropna().astype(int)).items())) if len(frame) else {}


def fidelity_report(run_dir: Path) -> dict[str, Any]:
    """The measures a user judges a run by, computed from final/ and the perturb stage."""
    run_dir = Path(run_dir)
    report: dict[str, Any] = {}
    for split, reference in (("sft", TRAIN_COUNT_HISTOGRAM), ("eval", EVAL_COUNT_HISTOGRAM)):
        # Only what is measured: a full-size run's texts would fill memory for nothing.
        frame = read_parquet_dir(run_dir / "final" / split, ["constraint_count", "dimensions", "decided_by"])
        histogram = _histogram(frame)
        tv = tv_distance(histogram, reference)
        report[split] = {
            "rows": len(frame),
            "constraint_histogram": histogram,
            "tv_to_trace": None if tv is None else round(tv, 4),
            "mean_constraints": round(float(frame["constraint_count"].mean()), 2) if len(frame) else None,
            "type_mix": {t: round(s, 3) for t, s in type_mix(frame.get("dimensions", [])).items()},
            "decided_by_check": decided_by_check(frame),
        }
    report["trace_type_mix"] = {t: round(s, 3) for t, s in trace_type_mix().items()}
    mix = report["sft"]["type_mix"]
    if mix:
        report["sft"]["type_mix_max_gap"] = round(
            max(abs(mix.get(t, 0) - s) for t, s in report["trace_type_mix"].items()), 3
        )
    report["iopo_rows"] = len(read_parquet_dir(run_dir / "final" / "iopo", ["constraint_count"]))
    report["iopo_yield_by_operation"] = iopo_yield(read_parquet_dir(run_dir / "perturb", ["perturb_attempts"]))
    return report
