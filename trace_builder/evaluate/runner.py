"""Run an evaluation on the pipeline's store and engine: stage folders, fingerprints, resume, progress.

The items are written first (<out>/items/, shards of `chunk_size` rows); then every item
goes answer -> judge through the row engine with no barrier between the two, and each
stage writes its shard (<out>/predictions/part-XXXXX.parquet, <out>/judgements/...) as
soon as all of its rows passed it. A finished shard is never redone, and every LLM answer
is cached in <out>/cache.sqlite, so an interrupted run re-asks nothing that was answered.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from trace_builder.errors import UserError
from trace_builder.evaluate.metrics import GENERATION_FAILED, JUDGE_FAILED
from trace_builder.evaluate.settings import EvalConfig
from trace_builder.evaluate.stages import (
    FAILURE_SIDES,
    GENERATE_TAG,
    ITEMS,
    JUDGE_TAG,
    JUDGEMENTS,
    PREDICTIONS,
    SCHEMAS,
    STAGES,
    EvalContext,
    JudgeFn,
)
from trace_builder.pipeline.engine import ChainStage, RowChain, shard_range
from trace_builder.pipeline.registry import stage_fingerprints
from trace_builder.pipeline.retry import reopen_retryable
from trace_builder.run.lifecycle import holding, read_run_record, stale_stages, write_run_record
from trace_builder.run.progress import PipelineProgress
from trace_builder.run.store import StageStore

# What a mismatched fingerprint means, by the first stage that differs.
_DIFFERS = {"items": "the items", "predictions": "the model or its sampling", "judgements": "the judge or its settings"}


@dataclass
class EvalRunStats:
    items: int = 0
    skipped_items: int = 0  # in shards judged by an earlier run
    chunks_written: int = 0
    generation_failed: int = 0
    judge_failed: int = 0
    wall_s: float = 0.0
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(u.get("requests", 0) for u in self.usage.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class EvalOutcome:
    stats: EvalRunStats
    metrics: dict[str, Any]


def eval_fingerprints(ctx: EvalContext) -> dict[str, str]:
    """One fingerprint per stage, chained as the pipeline's (the judge prompt is in the judgements' settings)."""
    return stage_fingerprints(ctx, "", STAGES)


def check_resumable(out_dir: Path, fingerprints: dict[str, str], fresh: bool) -> list[str]:
    """The stages to start over; refuses to mix results of other data or settings unless `fresh`."""
    stores = [StageStore(out_dir, stage.name) for stage in STAGES]
    if fresh:
        return [store.stage for store in stores]
    results = [s for s in stores if s.stage != ITEMS.name]
    if any(s.fingerprint is None and any(s.dir.glob("part-*.parquet")) for s in results):
        raise UserError(
            f"{out_dir} holds an eval written by an earlier trace-build: pass a new --out, or --fresh to "
            "replace it (the LLM cache is kept, so nothing answered is asked again)"
        )
    stale_names = stale_stages(out_dir, [s.stage for s in stores], fingerprints)
    if not stale_names:
        return []
    stale = [s.stage for s in stores].index(stale_names[0])
    if any(s.done_shards() for s in stores[stale:] if s in results):
        run = read_run_record(out_dir)
        raise UserError(
            f"{out_dir} holds an eval with other data or settings ({_DIFFERS[stores[stale].stage]} differ; model "
            f"{run.get('model', {}).get('model')!r}, judge {run.get('judge', {}).get('model')!r}): pass a new --out, "
            "or --fresh to replace it"
        )
    return [s.stage for s in stores[stale:]]  # nothing judged yet: start over quietly


def _write_run_json(ctx: EvalContext, fingerprints: dict[str, str], data_path: str) -> None:
    config = ctx.config
    record = {
        "data": data_path,
        "items": len(ctx.items),
        "model": {"kind": config.model.kind, "model": config.model.model},
        "judge": {"kind": config.judge.kind, "model": config.judge.model},
        "config": config.model_dump(mode="json", exclude={"model": {"api_key"}, "judge": {"api_key"}}),
        "fingerprints": fingerprints,
    }
    write_run_record(ctx.run_dir, record)


class _StageUsage:
    """Usage per progress bar: the predictions bar reads the model's client, the judgements bar the judge's."""

    def __init__(self, ctx: EvalContext):
        self._by_stage = {PREDICTIONS.name: (ctx.model, GENERATE_TAG), JUDGEMENTS.name: (ctx.judge, JUDGE_TAG)}

    def usage_for(self, stage: str) -> dict[str, Any]:
        client, tag = self._by_stage[stage]
        return client.usage_for(tag)


async def _write_items(ctx: EvalContext, store: StageStore, fingerprint: str) -> None:
    if store.status == "done":  # the chunking of the first run is kept
        return
    store.clear()
    started = time.monotonic()
    size = ctx.config.chunk_size
    store.begin(fingerprint, -(-len(ctx.items) // size))
    extra = await ITEMS.whole(ctx, None, store)
    store.finish("done", {}, time.monotonic() - started, **extra)


def _finish(store: StageStore, status: str, failed: str, usage: dict[str, Any], tag: str, elapsed: float) -> None:
    """Close a stage: this run's usage, and the reasons of the rows it failed (over every run)."""
    frame = store.read(["status", "reason"])
    failures = Counter(f"{failed}:{reason}" for reason in frame.loc[frame["status"] == failed, "reason"])
    store.finish(status, usage, elapsed, usage_by_task={tag: usage}, failures=dict(failures))


async def run_eval(
    ctx: EvalContext,
    *,
    fresh: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    data_path: str = "",
) -> EvalRunStats:
    """Answer and judge every item not in a shard judged by an earlier run; returns what this run did."""
    out_dir = Path(ctx.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = eval_fingerprints(ctx)
    for name in check_resumable(out_dir, fingerprints, fresh):
        StageStore(out_dir, name).clear()
    _write_run_json(ctx, fingerprints, data_path)
    if StageStore(out_dir, JUDGEMENTS.name).status == "done":  # a finished eval, run again
        chain = [PREDICTIONS.name, JUDGEMENTS.name]
        retried = reopen_retryable(out_dir, chain, [], ctx.config.transient_retries, sides=FAILURE_SIDES)
        if retried and console is not None:
            console.print(f"re-asking {retried} items that failed for a transient reason", highlight=False)
    stores = {stage.name: StageStore(out_dir, stage.name) for stage in STAGES}
    items = stores[ITEMS.name]
    await _write_items(ctx, items, fingerprints[ITEMS.name])

    total_shards = items.manifest["total_shards"]
    judged_before = stores[JUDGEMENTS.name].done_shards()
    rows = {int(i): shard["rows"] for i, shard in items.manifest["shards"].items()}
    stats = EvalRunStats(items=sum(n for i, n in rows.items() if i not in judged_before))
    stats.skipped_items = sum(rows.values()) - stats.items
    for stage in (PREDICTIONS, JUDGEMENTS):
        stores[stage.name].begin(fingerprints[stage.name], total_shards)
    config = ctx.config
    # Enough items in flight to keep both the model's and the judge's slots busy: an item
    # holds one request at a time, so twice the two concurrencies together.
    in_flight = max(4, 2 * (config.model.concurrency + config.judge.concurrency))
    chunk = max(1, items.manifest.get("chunk_size") or config.chunk_size)
    started = time.perf_counter()
    status = "partial"
    try:
        with PipelineProgress(console if show_progress else Console(quiet=True), _StageUsage(ctx)) as progress:
            bars = {
                s: progress.stage(s, sum(rows.values()), stores[s].rows_written())
                for s in (PREDICTIONS.name, JUDGEMENTS.name)
            }

            def judged(row: dict) -> None:
                bars[JUDGEMENTS.name].row_done(row)
                if row["status"] == GENERATION_FAILED:
                    stats.generation_failed += 1
                elif row["status"] == JUDGE_FAILED:
                    stats.judge_failed += 1

            chain = [
                ChainStage(
                    PREDICTIONS, stores[PREDICTIONS.name], SCHEMAS[PREDICTIONS.name], bars[PREDICTIONS.name].row_done
                ),
                ChainStage(JUDGEMENTS, stores[JUDGEMENTS.name], SCHEMAS[JUDGEMENTS.name], judged),
            ]
            engine = RowChain(ctx, chain, items, max_rows_in_flight=in_flight, window=8 + in_flight // chunk)
            await engine.run(shard_range(total_shards))
        status = "done"
    finally:
        stats.wall_s = time.perf_counter() - started
        stats.usage = {GENERATE_TAG: ctx.model.usage_for(GENERATE_TAG), JUDGE_TAG: ctx.judge.usage_for(JUDGE_TAG)}
        stats.chunks_written = len(stores[JUDGEMENTS.name].done_shards() - judged_before)
        for stage, failed, tag in (
            (PREDICTIONS, GENERATION_FAILED, GENERATE_TAG),
            (JUDGEMENTS, JUDGE_FAILED, JUDGE_TAG),
        ):
            _finish(stores[stage.name], status, failed, stats.usage[tag], tag, stats.wall_s)
    return stats


async def evaluate_path(
    data: Path | str,
    out_dir: Path | str,
    config: EvalConfig,
    *,
    fresh: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    judge_fn: JudgeFn | None = None,
) -> EvalOutcome:
    """The whole eval, holding the folder's run lock: load the items, open both backends, run, then
    metrics.json and the reports."""
    with holding(out_dir) as held:  # one run per folder, as for the pipeline
        return await _evaluate_locked(data, held, config, fresh, show_progress, console, judge_fn)


async def _evaluate_locked(
    data: Path | str,
    out_dir: Path,
    config: EvalConfig,
    fresh: bool,
    show_progress: bool,
    console: Console | None,
    judge_fn: JudgeFn | None,
) -> EvalOutcome:
    from trace_builder.evaluate.loading import load_items
    from trace_builder.evaluate.results import finalize
    from trace_builder.llm.cache import RequestCache
    from trace_builder.llm.client import LLMClient
    from trace_builder.llm.factory import make_backend, preflight

    ctx = EvalContext(config, out_dir, load_items(data, limit=config.limit, sample=config.sample))
    if judge_fn is not None:
        ctx.judge_fn = judge_fn
    # Settings are checked before any backend loads a model: a wrong --out fails in a second.
    check_resumable(out_dir, eval_fingerprints(ctx), fresh)
    model_backend = make_backend(config.model)
    same = config.judge == config.model
    judge_backend = model_backend if same else make_backend(config.judge)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = RequestCache(out_dir / "cache.sqlite")
    try:
        await preflight(model_backend)
        if not same:
            try:
                await preflight(judge_backend)
            except UserError as exc:
                # The backend's advice names --model/--base-url; for the judge they are --judge-*.
                advice = str(exc).replace("--model", "--judge-model").replace("--base-url", "--judge-base-url")
                raise UserError(f"judge: {advice}") from None
        ctx.model = LLMClient(model_backend, cache, concurrency=config.model.concurrency)
        # One server, one limit: a judge on the same backend shares the model's client.
        ctx.judge = ctx.model if same else LLMClient(judge_backend, cache, concurrency=config.judge.concurrency)
        stats = await run_eval(ctx, fresh=fresh, show_progress=show_progress, console=console, data_path=str(data))
    finally:
        await model_backend.aclose()
        if not same:
            await judge_backend.aclose()
        cache.close()
    boot = config.bootstrap
    metrics = finalize(out_dir, resamples=boot.resamples, seed=boot.seed, confidence=boot.confidence)
    return EvalOutcome(stats, metrics)
