"""Stage 'filter': drop failures, duplicates and over-long items; split train/eval; write final/."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import random
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trace_builder.config import FilterConfig, RunConfig
from trace_builder.pipeline.admission import largest_remainder, largest_remainders, side_targets
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.decontaminate import Decontaminator, decontaminator
from trace_builder.pipeline.decontaminate import settings as decontamination_settings
from trace_builder.pipeline.dedup import NearDuplicates
from trace_builder.pipeline.stage import Stage
from trace_builder.records import FINAL_SCHEMAS, final_layout
from trace_builder.report.fidelity import tv_distances
from trace_builder.run.store import FINAL, TEMP_SUFFIX, StageStore, atomic_file, save_manifest, shard_entry, shard_name
from trace_builder.seeds import normalise

# What the filter decides on and the splits need, besides the texts it screens: read for every row;
# the rest of a row is read again, one shard at a time, only to write it into its final dataset.
DECISION_COLUMNS = ("id", "seed_id", "split", "language", "constraint_count", "status", "dpo_status", "iopo_status")
_SCREENED = ("prompt", "description", "input", "response")


class Screen:
    """The filter's row-by-row verdicts, in row order: failed, contaminated (overlaps a known eval set),
    too_long, exact_duplicate, near_duplicate, else kept. Keeps per row seen only what the duplicate
    checks need (a prompt's hash; an original's MinHash bands and hashed shingles, in SQLite at
    `scratch` when given, so a run's worth of rows does not grow the process)."""

    def __init__(self, cfg: FilterConfig, checker: Decontaminator | None = None, scratch: Path | None = None):
        self.cfg, self.checker = cfg, checker
        self._prompts: set[bytes] = set()
        self._near = NearDuplicates(cfg.near_duplicate_threshold, path=scratch or ":memory:")

    def close(self) -> None:
        self._near.close()

    def verdicts(self, rows: dict[str, list]) -> tuple[list[str], list[str | None]]:
        """`filter_status` and `contaminated_by` of each row of `rows` (columns as lists)."""
        cfg = self.cfg
        status, found = [], []
        for i, ok in enumerate(rows["status"]):
            contaminated = None
            if ok != "ok":
                verdict = "failed"
            elif self.checker is not None and (
                contaminated := self.checker.first_match([rows["description"][i], rows["input"][i]])
            ):
                verdict = "contaminated"
            elif len(rows["prompt"][i] or "") > cfg.max_prompt_chars or (
                len(rows["response"][i] or "") > cfg.max_response_chars
            ):
                verdict = "too_long"
            else:
                key = hashlib.blake2b(normalise(rows["prompt"][i]).encode("utf-8"), digest_size=16).digest()
                verdict = "exact_duplicate" if key in self._prompts else "kept"
                self._prompts.add(key)
            status.append(verdict)
            found.append(contaminated)
        live = [i for i, verdict in enumerate(status) if verdict == "kept"]
        for i, original in zip(live, self._near.check_all([rows["prompt"][i] for i in live])):
            if original is not None:
                status[i] = "near_duplicate"
        return status, found


def mark_filtered(rows: pd.DataFrame, cfg: FilterConfig, checker: Decontaminator | None = None) -> pd.DataFrame:
    """`rows` with `filter_status` and `contaminated_by` (`Screen`'s verdicts)."""
    with contextlib.closing(Screen(cfg, checker)) as screen:
        status, found = screen.verdicts({c: rows[c].tolist() for c in ("status", *_SCREENED)})
    return rows.assign(filter_status=status, contaminated_by=found)


def screen_stage(source: StageStore, config: RunConfig, scratch: Path) -> pd.DataFrame:
    """One row per input row: its decision columns, verdict and place (`shard`, `row`), read shard by
    shard with only the columns screening needs (a run's texts are never all in memory at once, and
    what the duplicate checks remember lives in a SQLite file at `scratch`, removed afterwards)."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.unlink(missing_ok=True)
    try:
        with contextlib.closing(Screen(config.filter, decontaminator(config), scratch)) as screen:
            frames = [screened_shard(screen, source, index) for index in sorted(source.done_shards())]
    except sqlite3.Error as exc:  # said as the file it is, not as the LLM cache (run/exits.py)
        cause = errno.ENOSPC if "full" in str(exc) else errno.EIO
        raise OSError(cause, f"the filter's duplicate index: {exc}", str(scratch)) from exc
    finally:
        scratch.unlink(missing_ok=True)
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*DECISION_COLUMNS, "filter_status"])
    )


def screened_shard(screen: Screen, source: StageStore, index: int) -> pd.DataFrame:
    """`screen_stage`'s rows for shard `index` of `source`."""
    rows = source.read_shard_columns(index, [*DECISION_COLUMNS, *_SCREENED])
    status, found = screen.verdicts(rows)
    decided = {c: rows[c] for c in DECISION_COLUMNS}
    size = len(status)
    return pd.DataFrame(
        {**decided, "filter_status": status, "contaminated_by": found, "shard": [index] * size, "row": range(size)}
    )


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
    counts = range(1, len(histogram) + 1)
    quotas = largest_remainders(np.arange(rows, 0, -1), histogram)  # every size, the largest first
    takes = np.minimum(quotas, [available[c] for c in counts])
    distances = tv_distances(takes, histogram)
    reached = ~np.isnan(distances)
    if not reached.any():
        return {}
    bound = max(tolerance, distances[reached].min() + tolerance / 4)
    # Sizes whose distances differ only by rounding count as equally close: the largest wins.
    best = np.flatnonzero(reached & (distances <= bound + 1e-12))[0]
    return {c: int(takes[best, c - 1]) for c in counts if quotas[best, c - 1] > 0}


def side_quota(rows: int, histogram: list[float], available: Counter, tolerance: float | None) -> dict[int, int]:
    """Rows to take per constraint count for one side of a target-size run: its quota when the
    `available` rows meet it; when short, TRACE's shape within `tolerance` (`shaped_quota`), or (None)
    every row it has up to the quota."""
    quota = largest_remainder(rows, histogram)
    if all(available[c] >= n for c, n in quota.items()):
        return quota
    if tolerance is not None:
        return shaped_quota(rows, histogram, available, tolerance)
    return {c: min(n, available[c]) for c, n in quota.items()}


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
        available = Counter(mine)
        short_here = {c: n - available[c] for c, n in largest_remainder(rows, histogram).items() if available[c] < n}
        if short_here:
            short[side] = short_here
        quota = side_quota(rows, histogram, available, tolerance)
        chosen[side] = set()
        for count in sorted(quota):
            chosen[side].update(pairs_first(kept.loc[mine.index[mine == count]], rng)[: quota[count]])
    return chosen, short


def pairs_first(rows: pd.DataFrame, rng: random.Random) -> list:
    """`rows`' labels in the order a split that cannot take them all takes them: rows with both
    preference pairs (DPO and IOPO ok) first, then one, then none; shuffled by `rng` among equals.
    A kept train row's pairs were already paid for: a split that drops rows drops incomplete ones."""
    labels = sorted(rows.index, key=str)
    rng.shuffle(labels)
    pairs = ((rows["dpo_status"] == "ok").astype(int) + (rows["iopo_status"] == "ok").astype(int)).to_dict()
    return sorted(labels, key=lambda label: -pairs[label])  # stable: the shuffle orders equals


def _scores(judgements: pd.Series) -> pd.Series:
    # A score is None where the constraint was not judged (a check or an earlier verdict had already failed the response).
    return judgements.map(
        lambda verdicts: (
            None if verdicts is None else [None if v["score"] is None else int(v["score"]) for v in verdicts]
        )
    )


def _deciders(judgements: pd.Series) -> pd.Series:
    return judgements.map(lambda verdicts: None if verdicts is None else [v["decided_by"] for v in verdicts])


def final_selections(decided: pd.DataFrame, config: RunConfig) -> tuple[dict[str, pd.Index], dict[str, dict[int, int]]]:
    """Which screened rows each final dataset takes, and `set_aside`: the kept rows no split took (a
    target met, a short split trimmed to TRACE's shape, train_size); with the shortfall per side and
    constraint count of a target-size run."""
    cfg, seed = config.filter, config.seed
    kept = decided[decided["filter_status"] == "kept"]
    short: dict[str, dict[int, int]] = {}
    if config.target.enabled:
        chosen, short = quota_split(kept, side_targets(config), seed, config.target.shortfall_tolerance)
        evals = kept[kept.index.isin(list(chosen["eval"]))]
        train = kept[kept.index.isin(list(chosen["train"]))]
    else:
        eval_size = min(cfg.eval_size, int(cfg.eval_max_share * len(kept)))
        evals = kept[kept.index.isin(list(split_by_seed(kept["constraint_count"], kept["seed_id"], eval_size, seed)))]
        train = kept[~kept.index.isin(evals.index)]
        if cfg.train_size is not None and len(train) > cfg.train_size:
            train = train.loc[pairs_first(train, random.Random(seed))[: cfg.train_size]].sort_index()
    selections = {
        "sft": train.index,
        "dpo": train.index[train["dpo_status"] == "ok"],
        "iopo": train.index[train["iopo_status"] == "ok"],
        "eval": evals.index,
        "set_aside": kept.index.difference(train.index).difference(evals.index),
    }
    return selections, short


def final_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the perturb stage as final dataset `name`: scores and deciders read off the judgements."""
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
    return frame.reindex(columns=FINAL_SCHEMAS[name].names)


def write_final(
    run_dir: Path, source: StageStore, decided: pd.DataFrame, selections: dict[str, pd.Index]
) -> dict[str, int]:
    """final/<dataset>/part-00000.parquet for each dataset, written shard by shard of the input (each
    shard read once, whole rows only for the rows it gives), renamed into place when complete; and
    manifests/final.json listing them (checked by every reader of final/, as a stage's manifest is)."""
    names = [name for name in selections if name != "set_aside"]
    places = {name: decided.loc[selections[name], ["shard", "row"]] for name in names}
    paths = {name: run_dir / FINAL / name / shard_name(0) for name in names}
    counts = dict.fromkeys(names, 0)
    with contextlib.ExitStack() as files:
        writers = {}
        for name, path in paths.items():
            temp = files.enter_context(atomic_file(path))
            writers[name] = files.enter_context(pq.ParquetWriter(temp, FINAL_SCHEMAS[name], compression="zstd"))
        for index in sorted(set(decided["shard"])):
            wanted = {name: place.loc[place["shard"] == index, "row"].tolist() for name, place in places.items()}
            if not any(wanted.values()):
                continue
            table = source.read_shard_table(index)
            for name, rows in wanted.items():
                if rows:
                    frame = final_frame(name, table.take(rows).to_pandas())
                    writers[name].write_table(
                        pa.Table.from_pandas(frame, schema=FINAL_SCHEMAS[name], preserve_index=False)
                    )
                    counts[name] += len(rows)
    for path in paths.values():  # other files of an earlier layout: final/ holds only what its manifest lists
        for stale in set(path.parent.glob("part-*.parquet")) - {path}:
            stale.unlink()
    datasets = {name: {path.name: shard_entry(path)} for name, path in paths.items()}
    save_manifest(run_dir, FINAL, {"stage": FINAL, "datasets": datasets})
    return counts


async def run_filter(ctx: StageContext, source: StageStore, target: StageStore) -> dict:
    decided = screen_stage(source, ctx.config, target.dir / f".screen{TEMP_SUFFIX}")
    selections, short = final_selections(decided, ctx.config)
    decided.loc[selections["set_aside"], "filter_status"] = "set_aside"
    counts = write_final(ctx.run_dir, source, decided, selections)
    target.manifest["total_shards"] = 1
    target.write_shard(0, pa.Table.from_pandas(decided.drop(columns=["shard", "row"]), preserve_index=False))
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
        "filter_status": dict(Counter(decided["filter_status"])),
        "rows_in": len(decided),
        "shortfall": {side: {str(c): n for c, n in by.items()} for side, by in short.items()},
        "seeds_by_side": seeds_by_side(decided, selections),
        "decontaminated": dict(Counter(decided["contaminated_by"].dropna())),
        "notes": notes,
    }


def seeds_by_side(decided: pd.DataFrame, selections: dict[str, pd.Index]) -> dict[str, int]:
    """Distinct seeds behind the train datasets and behind eval, and how many are behind both (0)."""
    train = set(decided.loc[selections["sft"], "seed_id"])
    evals = set(decided.loc[selections["eval"], "seed_id"])
    return {"train": len(train), "eval": len(evals), "both": len(train & evals)}


STAGE = Stage(
    name="filter",
    reads="perturb",
    settings=lambda config: {
        "filter": config.filter.model_dump(),
        "target": config.target.model_dump(exclude={"max_seeds"}),
        "seed": config.seed,
        "decontamination": decontamination_settings(config),
        "layout": final_layout(),
    },
    whole=run_filter,
    description="drop failures, duplicates, over-long items; split; write final/",
    rebuilt_on_change=True,
)
