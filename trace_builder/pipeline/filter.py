"""Stage 'filter': drop failures, duplicates and over-long items; split train/eval; write final/."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from trace_builder.config import FilterConfig, RunConfig
from trace_builder.fidelity import tv_distance
from trace_builder.pipeline.admission import largest_remainder, side_targets
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.decontaminate import Decontaminator, decontaminator
from trace_builder.pipeline.decontaminate import settings as decontamination_settings
from trace_builder.pipeline.dedup import near_duplicates
from trace_builder.pipeline.stage import Stage
from trace_builder.records import FINAL_SCHEMAS
from trace_builder.seeds import normalise
from trace_builder.store import FINAL, StageStore, save_manifest, shard_entry, shard_name, write_table_atomic


def mark_filtered(rows: pd.DataFrame, cfg: FilterConfig, checker: Decontaminator | None = None) -> pd.DataFrame:
    """Add `filter_status` (kept | failed | contaminated | too_long | exact_duplicate | near_duplicate; the
    filter later names kept rows that no split took `set_aside`),
    and `contaminated_by`: the known eval set a row's description or input overlaps (`checker`)."""
    rows = rows.copy()
    status = pd.Series("kept", index=rows.index, dtype="object")
    status[rows["status"] != "ok"] = "failed"
    found = pd.Series(None, index=rows.index, dtype="object")
    if checker is not None:
        live = rows.index[status == "kept"]
        found[live] = [
            checker.first_match(texts) for texts in zip(rows.loc[live, "description"], rows.loc[live, "input"])
        ]
        status[found.notna()] = "contaminated"
    rows["contaminated_by"] = found
    too_long = (rows["prompt"].fillna("").str.len() > cfg.max_prompt_chars) | (
        rows["response"].fillna("").str.len() > cfg.max_response_chars
    )
    status[(status == "kept") & too_long] = "too_long"

    live = rows.index[status == "kept"]
    keys = rows.loc[live, "prompt"].map(normalise)
    exact = keys.duplicated(keep="first")
    status[exact[exact].index] = "exact_duplicate"

    live = rows.index[status == "kept"]
    texts = rows.loc[live, "prompt"].tolist()
    for i in near_duplicates(texts, cfg.near_duplicate_threshold):
        status[live[i]] = "near_duplicate"
    rows["filter_status"] = status
    return rows


def stratified_quotas(counts: pd.Series, size: int) -> dict[int, int]:
    """`size` rows split over the constraint counts present, in proportion to how often each occurs."""
    sizes = Counter(int(c) for c in counts)
    present = sorted(sizes)
    shares = largest_remainder(size, [sizes[c] for c in present]) if present and size else {}
    return {present[i - 1]: n for i, n in shares.items()}


def split_by_seed(counts: pd.Series, seeds: pd.Series, eval_size: int, seed: int) -> set:
    """Row labels for the eval split: whole seeds (every row of a seed on one side), stratified by
    constraint count (largest remainder), seeds taken in a shuffled order while they fit the quotas."""
    quotas = stratified_quotas(counts, min(eval_size, len(counts)))
    groups: dict = defaultdict(list)
    for label, seed_id in seeds.items():
        groups[seed_id].append(label)
    order = sorted(groups, key=str)
    random.Random(seed).shuffle(order)
    taken: Counter = Counter()
    chosen: set = set()
    for seed_id in order:
        need = Counter(int(counts[label]) for label in groups[seed_id])
        if all(taken[c] + n <= quotas.get(c, 0) for c, n in need.items()):
            taken.update(need)
            chosen.update(groups[seed_id])
    return chosen


def split_by_count(counts: pd.Series, eval_size: int, seed: int) -> set:
    """Row labels for an eval split stratified by constraint count, rows chosen one by one."""
    return split_by_seed(counts, pd.Series(counts.index, index=counts.index), eval_size, seed)


def shaped_quota(rows: int, histogram: list[float], available: Counter, tolerance: float) -> dict[int, int]:
    """The largest split of at most `rows` rows whose constraint-count histogram stays within
    `tolerance` (total variation) of `histogram`, from the `available` rows per count: a short split
    keeps TRACE's shape instead of its size, trimming the counts that filled up. Where no size gets
    that close (a count with no row at all), the bound is the closest any size gets, plus a quarter
    of the tolerance: a shape barely better is not worth many rows."""
    sizes = []
    for total in range(rows, 0, -1):
        take = {c: min(n, available[c]) for c, n in largest_remainder(total, histogram).items()}
        distance = tv_distance(take, histogram)
        if distance is not None:
            sizes.append((distance, take))
    if not sizes:
        return {}
    bound = max(tolerance, min(distance for distance, _ in sizes) + tolerance / 4)
    return next(take for distance, take in sizes if distance <= bound)


def quota_split(
    kept: pd.DataFrame, targets: dict[str, tuple[int, list[float]]], seed: int, tolerance: float | None = 0.02
) -> tuple[dict[str, set], dict[str, dict[int, int]]]:
    """A target-size run's split: per side (the one each seed was admitted to) and constraint count,
    exactly its quota of rows; a side that falls short is trimmed to TRACE's shape within `tolerance`
    (`shaped_quota`), or (None) keeps every row it has. Returns the labels per side and the shortfall
    per side and count."""
    rng = random.Random(seed)
    chosen: dict[str, set] = {}
    short: dict[str, dict[int, int]] = {}
    for side, (rows, histogram) in targets.items():
        mine = kept[kept["split"] == side]["constraint_count"].astype(int)
        quota = largest_remainder(rows, histogram)
        available = Counter(mine)
        short_here = {c: n - available[c] for c, n in quota.items() if available[c] < n}
        if short_here:
            short[side] = short_here
            if tolerance is not None:
                quota = shaped_quota(rows, histogram, available, tolerance)
        chosen[side] = set()
        for count in sorted(quota):
            labels = sorted(mine.index[mine == count], key=str)
            rng.shuffle(labels)
            chosen[side].update(labels[: quota[count]])
    return chosen, short


def _scores(judgements: pd.Series) -> pd.Series:
    # A score is None where the constraint was not judged (a check had already failed the response).
    return judgements.map(
        lambda verdicts: (
            None if verdicts is None else [None if v["score"] is None else int(v["score"]) for v in verdicts]
        )
    )


def _deciders(judgements: pd.Series) -> pd.Series:
    return judgements.map(lambda verdicts: None if verdicts is None else [v["decided_by"] for v in verdicts])


def final_tables(rows: pd.DataFrame, config: RunConfig) -> tuple[dict[str, pd.DataFrame], dict[str, dict[int, int]]]:
    """The final datasets, the kept rows no split took (`set_aside`: a target met, a short split trimmed
    to TRACE's shape, train_size), and the shortfall per side and constraint count of a target-size run."""
    cfg, seed = config.filter, config.seed
    kept = rows[rows["filter_status"] == "kept"]
    short: dict[str, dict[int, int]] = {}
    if config.target.enabled:
        tolerance = config.target.shape_tolerance if config.target.on_shortfall == "keep_shape" else None
        chosen, short = quota_split(kept, side_targets(config), seed, tolerance)
        is_eval = kept.index.isin(list(chosen["eval"]))
        train = kept[kept.index.isin(list(chosen["train"]))]
    else:
        eval_size = min(cfg.eval_size, int(cfg.eval_max_share * len(kept)))
        is_eval = kept.index.isin(list(split_by_seed(kept["constraint_count"], kept["seed_id"], eval_size, seed)))
        train = kept[~is_eval]
        if cfg.train_size is not None and len(train) > cfg.train_size:
            train = train.sample(n=cfg.train_size, random_state=seed).sort_index()
    selections = {
        "sft": train,
        "dpo": train[train["dpo_status"] == "ok"] if "dpo_status" in train else train.iloc[:0],
        "iopo": train[train["iopo_status"] == "ok"] if "iopo_status" in train else train.iloc[:0],
        "eval": kept[is_eval],
    }
    tables = {"set_aside": kept.loc[~kept.index.isin(train.index) & ~is_eval]}
    for name, frame in selections.items():
        frame = frame.assign(scores=_scores(frame["judgement"]), decided_by=_deciders(frame["judgement"]))
        if name == "dpo":
            frame = frame.assign(chosen=frame["response"], scores_rejected=_scores(frame["rejected_judgement"]))
        if name == "iopo":
            frame = frame.assign(
                scores_x1_y1=frame["scores"],
                scores_x2_y2=_scores(frame["judgement_x2_y2"]),
                scores_x1_y2=_scores(frame["judgement_x1_y2"]),
                scores_x2_y1=_scores(frame["judgement_x2_y1"]),
                decided_by_2=_deciders(frame["judgement_x2_y2"]),
            )
        tables[name] = frame.reindex(columns=FINAL_SCHEMAS[name].names)
    return tables, short


def write_final(run_dir: Path, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """final/<dataset>/part-00000.parquet for each dataset, and manifests/final.json listing them
    (checked by every reader of final/, as a stage's manifest is)."""
    counts, datasets = {}, {}
    for name, frame in tables.items():
        folder = run_dir / FINAL / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("part-*.parquet"):
            stale.unlink()
        path = folder / shard_name(0)
        write_table_atomic(path, pa.Table.from_pandas(frame, schema=FINAL_SCHEMAS[name], preserve_index=False))
        counts[name] = len(frame)
        datasets[name] = {path.name: shard_entry(path)}
    save_manifest(run_dir, FINAL, {"stage": FINAL, "datasets": datasets})
    return counts


async def run_filter(ctx: StageContext, source: StageStore, target: StageStore) -> dict:
    rows = source.read()
    marked = mark_filtered(rows, ctx.config.filter, decontaminator(ctx.config))
    tables, short = final_tables(marked, ctx.config)
    marked.loc[tables.pop("set_aside").index, "filter_status"] = "set_aside"
    target.manifest["total_shards"] = 1
    target.write_shard(0, pa.Table.from_pandas(marked, preserve_index=False))
    counts = write_final(ctx.run_dir, tables)
    sides = seeds_by_side(tables)
    notes = []
    if short:
        notes.append(
            "final shortfall: "
            + ", ".join(
                f"{side} {c} constraints {n} rows short" for side, by in short.items() for c, n in sorted(by.items())
            )
        )
    return {
        "final_rows": counts,
        "filter_status": dict(Counter(marked["filter_status"])),
        "rows_in": len(marked),
        "shortfall": {side: {str(c): n for c, n in by.items()} for side, by in short.items()},
        "seeds_by_side": sides,
        "decontaminated": dict(Counter(marked["contaminated_by"].dropna())),
        "notes": notes,
    }


def seeds_by_side(tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Distinct seeds behind the train datasets and behind eval, and how many are behind both (0)."""
    train = set().union(*(set(tables[name]["seed_id"]) for name in ("sft", "dpo", "iopo")))
    evals = set(tables["eval"]["seed_id"])
    return {"train": len(train), "eval": len(evals), "both": len(train & evals)}


STAGE = Stage(
    name="filter",
    reads="perturb",
    settings=lambda config: {
        "filter": config.filter.model_dump(),
        "target": config.target.model_dump(exclude={"max_seeds"}),
        "seed": config.seed,
        "decontamination": decontamination_settings(config),
    },
    whole=run_filter,
    description="drop failures, duplicates, over-long items; split; write final/",
    rebuilt_on_change=True,
)
