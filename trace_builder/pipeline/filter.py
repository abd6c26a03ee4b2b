"""Stage 'filter': drop failures, duplicates and over-long items; split train/eval; write final/."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from trace_builder.config import FilterConfig, RunConfig
from trace_builder.pipeline.admission import count_quotas
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.dedup import near_duplicates
from trace_builder.pipeline.stage import Stage
from trace_builder.records import FINAL_SCHEMAS
from trace_builder.seeds import normalise
from trace_builder.store import StageStore, write_table_atomic


def mark_filtered(rows: pd.DataFrame, cfg: FilterConfig) -> pd.DataFrame:
    """Add `filter_status` (kept | failed | exact_duplicate | near_duplicate | too_long)."""
    rows = rows.copy()
    status = pd.Series("kept", index=rows.index, dtype="object")
    status[rows["status"] != "ok"] = "failed"
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


def split_by_count(counts: pd.Series, eval_size: int, seed: int) -> set:
    """Row labels for the eval split: stratified by constraint count (largest remainder)."""
    eval_size = min(eval_size, len(counts))
    if eval_size == 0:
        return set()
    groups: dict[int, list] = defaultdict(list)
    for label, count in counts.items():
        groups[int(count)].append(label)
    quotas = {c: eval_size * len(labels) / len(counts) for c, labels in groups.items()}
    take = {c: int(q) for c, q in quotas.items()}
    leftover = eval_size - sum(take.values())
    for c in sorted(quotas, key=lambda c: (-(quotas[c] - take[c]), c))[:leftover]:
        take[c] += 1
    rng = random.Random(seed)
    chosen: set = set()
    for c in sorted(groups):
        labels = sorted(groups[c], key=str)
        rng.shuffle(labels)
        chosen.update(labels[: take[c]])
    return chosen


def quota_split(
    counts: pd.Series, train_quota: dict[int, int], eval_quota: dict[int, int], seed: int
) -> tuple[set, set, dict[int, int]]:
    """A target-size run's split: per constraint count, exactly its quota of eval rows, then of train rows.

    Returns the eval labels, the train labels and the shortfall per count (what was missing).
    """
    rng = random.Random(seed)
    eval_labels: set = set()
    train_labels: set = set()
    short: dict[int, int] = {}
    for count in sorted(set(train_quota) | set(eval_quota)):
        labels = sorted(counts.index[counts == count], key=str)
        rng.shuffle(labels)
        want_eval, want_train = eval_quota.get(count, 0), train_quota.get(count, 0)
        eval_labels.update(labels[:want_eval])
        train_labels.update(labels[want_eval : want_eval + want_train])
        missing = want_eval + want_train - len(labels)
        if missing > 0:
            short[count] = missing
    return eval_labels, train_labels, short


def _scores(judgements: pd.Series) -> pd.Series:
    return judgements.map(lambda verdicts: None if verdicts is None else [int(v["score"]) for v in verdicts])


def _deciders(judgements: pd.Series) -> pd.Series:
    return judgements.map(lambda verdicts: None if verdicts is None else [v["decided_by"] for v in verdicts])


def final_tables(rows: pd.DataFrame, config: RunConfig) -> tuple[dict[str, pd.DataFrame], dict[int, int]]:
    """The final datasets, and the shortfall per constraint count of a target-size run."""
    cfg, seed = config.filter, config.seed
    kept = rows[rows["filter_status"] == "kept"]
    short: dict[int, int] = {}
    if config.target.enabled:
        train_quota, eval_quota = count_quotas(config)
        eval_labels, train_labels, short = quota_split(
            kept["constraint_count"].astype(int), train_quota, eval_quota, seed
        )
        is_eval = kept.index.isin(list(eval_labels))
        train = kept[kept.index.isin(list(train_labels))]
    else:
        eval_size = min(cfg.eval_size, int(cfg.eval_max_share * len(kept)))
        eval_labels = split_by_count(kept["constraint_count"], eval_size, seed)
        is_eval = kept.index.isin(list(eval_labels))
        train = kept[~is_eval]
        if cfg.train_size is not None and len(train) > cfg.train_size:
            train = train.sample(n=cfg.train_size, random_state=seed).sort_index()
    selections = {
        "sft": train,
        "dpo": train[train["dpo_status"] == "ok"] if "dpo_status" in train else train.iloc[:0],
        "iopo": train[train["iopo_status"] == "ok"] if "iopo_status" in train else train.iloc[:0],
        "eval": kept[is_eval],
    }
    tables = {}
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
    counts = {}
    for name, frame in tables.items():
        folder = run_dir / "final" / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("part-*.parquet"):
            stale.unlink()
        table = pa.Table.from_pandas(frame, schema=FINAL_SCHEMAS[name], preserve_index=False)
        write_table_atomic(folder / "part-00000.parquet", table)
        counts[name] = len(frame)
    return counts


async def run_filter(ctx: StageContext, source: StageStore, target: StageStore) -> dict:
    rows = source.read()
    marked = mark_filtered(rows, ctx.config.filter)
    target.manifest["total_shards"] = 1
    target.write_shard(0, pa.Table.from_pandas(marked, preserve_index=False))
    tables, short = final_tables(marked, ctx.config)
    counts = write_final(ctx.run_dir, tables)
    notes = []
    if short:
        notes.append(
            "final shortfall: " + ", ".join(f"{c} constraints {n} rows short" for c, n in sorted(short.items()))
        )
    return {
        "final_rows": counts,
        "filter_status": dict(Counter(marked["filter_status"])),
        "rows_in": len(marked),
        "shortfall": {str(c): n for c, n in short.items()},
        "notes": notes,
    }


STAGE = Stage(
    name="filter",
    reads="perturb",
    settings=lambda config: {
        "filter": config.filter.model_dump(),
        "target": config.target.model_dump(),
        "seed": config.seed,
    },
    whole=run_filter,
    description="drop failures, duplicates, over-long items; split; write final/",
)
