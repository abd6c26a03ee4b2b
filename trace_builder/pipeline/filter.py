"""Stage 'filter': drop failures, duplicates and over-long items; split train/eval; write final/."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from trace_builder.config import FilterConfig
from trace_builder.pipeline.dedup import near_duplicates
from trace_builder.records import FINAL_SCHEMAS
from trace_builder.seeds import normalise
from trace_builder.store import StageStore, write_table_atomic

FINAL_DATASETS = ("sft", "dpo", "iopo", "eval")

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


def final_tables(rows: pd.DataFrame, cfg: FilterConfig, seed: int) -> dict[str, pd.DataFrame]:
    kept = rows[rows["filter_status"] == "kept"]
    eval_labels = split_by_count(kept["constraint_count"], cfg.eval_size, seed)
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
        if name == "dpo":
            frame = frame.assign(chosen=frame["response"])
        columns = FINAL_SCHEMAS[name].names
        tables[name] = frame.reindex(columns=columns)
    return tables


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


def run_filter(source: StageStore, target: StageStore, cfg: FilterConfig, seed: int, run_dir: Path) -> dict:
    rows = source.read()
    marked = mark_filtered(rows, cfg)
    target.manifest["total_shards"] = 1
    target.write_shard(0, pa.Table.from_pandas(marked, preserve_index=False))
    counts = write_final(run_dir, final_tables(marked, cfg, seed))
    return {"final_rows": counts, "filter_status": dict(Counter(marked["filter_status"])), "rows_in": len(marked)}
