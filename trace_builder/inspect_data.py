"""Look inside a run: rows of any stage or final dataset, and distributions with --stats."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from trace_builder.errors import UserError
from trace_builder.store import read_manifest, read_parquet_dir, verify_part
from trace_builder.taxonomy import dimension_for_label


def load_frame(path: Path) -> pd.DataFrame:
    """A Parquet file, a folder of part-*.parquet, or a run folder (its last finished stage)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run folder, a stage folder or a Parquet file")
    if path.is_file():
        verify_part(path)
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise UserError(
                f"{path} is not a readable Parquet file ({type(exc).__name__}): pass a .parquet file"
            ) from None
    if any(path.glob("part-*.parquet")):
        return read_parquet_dir(path)
    from trace_builder.pipeline.registry import STAGE_NAMES

    for stage in reversed(STAGE_NAMES):
        if any((path / stage).glob("part-*.parquet")):
            return read_parquet_dir(path / stage)
    raise UserError(f"{path} holds no Parquet shards: pass a run folder, a stage folder or a Parquet file")


def apply_where(frame: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return frame
    try:
        return frame.query(where, engine="python")
    except Exception as exc:
        raise UserError(
            f"--where {where!r} is not a valid filter ({exc}); use pandas query syntax, e.g. \"status == 'failed'\""
        ) from None


def _counter_of_lists(series: pd.Series) -> Counter:
    counter: Counter = Counter()
    for value in series.dropna():
        counter.update(list(value))
    return counter


def check_share(frame: pd.DataFrame) -> dict[str, str]:
    """Per dimension: how many constraints carry a deterministic check, of how many."""
    carried: Counter = Counter()
    total: Counter = Counter()
    for dims, checks in zip(frame["dimensions"], frame["checks"]):
        if dims is None or checks is None:
            continue
        for dim, check in zip(dims, checks):
            total[dim] += 1
            carried[dim] += check is not None
    rows = {dim: f"{carried[dim]}/{n} ({carried[dim] / n:.0%})" for dim, n in total.most_common()}
    if total:
        all_n = sum(total.values())
        rows["all"] = f"{sum(carried.values())}/{all_n} ({sum(carried.values()) / all_n:.0%})"
    return rows


def stats(frame: pd.DataFrame, manifest_dir: Path | None = None) -> dict[str, dict]:
    """Distributions a user wants first: counts, types, dimensions, statuses, reasons, tokens."""
    out: dict[str, dict] = {"rows": {"total": len(frame)}}
    if "constraint_count" in frame:
        out["constraint_count"] = dict(sorted(Counter(frame["constraint_count"].dropna().astype(int)).items()))
    if "dimensions" in frame:
        dims = _counter_of_lists(frame["dimensions"])
        out["dimensions"] = dict(dims.most_common())
        types: Counter = Counter()
        for dim_id, n in dims.items():
            dim = dimension_for_label(dim_id)
            types[dim.type if dim else "unknown"] += n
        out["types"] = dict(types.most_common())
    if "checks" in frame and "dimensions" in frame:
        out["check_share_by_dimension"] = check_share(frame)
    for column in ("status", "filter_status", "dpo_status", "iopo_status", "perturb_op", "language"):
        if column in frame:
            out[column] = dict(Counter(frame[column].fillna("-")).most_common())
    if "reason" in frame and "status" in frame:
        failed = frame[frame["status"] != "ok"]
        reasons = failed["failed_stage"].fillna("") + ": " + failed["reason"].fillna("")
        out["failure_reasons"] = dict(Counter(reasons).most_common(15))
    for side in ("dpo", "iopo"):
        column = f"{side}_reason"
        if column in frame:
            reasons = frame.loc[frame[f"{side}_status"] == "failed", column]
            if len(reasons):
                out[f"{side}_failure_reasons"] = dict(Counter(reasons).most_common(10))
    if manifest_dir is not None:
        folder = Path(manifest_dir)
        manifest = read_manifest(folder.parent, folder.name) or {}
        if manifest.get("usage"):
            out["tokens"] = manifest["usage"]
    return out
