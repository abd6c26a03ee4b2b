"""Run the stages in order over a run directory: fingerprints, resume, and the end-of-run summary."""

from __future__ import annotations

import asyncio
import platform
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import pyarrow as pa
from rich.console import Console

from trace_builder import __version__
from trace_builder.config import STAGES, RunConfig, stage_fingerprints
from trace_builder.errors import UserError
from trace_builder.llm.cache import RequestCache
from trace_builder.llm.client import LLMClient
from trace_builder.llm.factory import make_backend, preflight
from trace_builder.pipeline import expand, perturb, respond
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.engine import extend_schema, run_row_stage
from trace_builder.pipeline.filter import run_filter
from trace_builder.pipeline.seeds_stage import PLAN_FIELDS, SEED_SCHEMA, plan_row, run_seeds
from trace_builder.progress import PipelineProgress
from trace_builder.prompts import prompts_digest
from trace_builder.store import StageStore, write_json_atomic

LLM_STAGES = {"expand", "respond", "perturb"}

# Each row-wise stage: the function applied to a live row, and the columns it adds.
_ROW_STAGES: dict[str, tuple[Callable[[StageContext, dict], Awaitable[dict]], list[pa.Field]]] = {}


async def _plan(ctx: StageContext, row: dict) -> dict:
    return plan_row(ctx, row)


_ROW_STAGES["taxonomy"] = (_plan, PLAN_FIELDS)
_ROW_STAGES["expand"] = (expand.expand_row, expand.FIELDS)
_ROW_STAGES["respond"] = (respond.respond_row, respond.FIELDS)
_ROW_STAGES["perturb"] = (perturb.perturb_row, perturb.FIELDS)


def stage_schema(stage: str) -> pa.Schema:
    schema = SEED_SCHEMA
    for name in STAGES[1 : STAGES.index(stage) + 1]:
        schema = extend_schema(schema, _ROW_STAGES[name][1])
    return schema


@dataclass
class RunSummary:
    run_dir: Path
    final_rows: dict[str, int] = field(default_factory=dict)
    failure_reasons: Counter = field(default_factory=Counter)
    tokens: dict[str, int] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _previous(stage: str) -> str | None:
    index = STAGES.index(stage)
    return STAGES[index - 1] if index else None


def _needs_llm(config: RunConfig, stage: str) -> bool:
    return stage in LLM_STAGES or (stage == "seeds" and config.seeds.synthesize_to > 0)


def check_fingerprints(run_dir: Path, stages: list[str], fingerprints: dict[str, str], fresh: bool) -> None:
    """Refuse to mix rows built under another config; --fresh clears the stages instead."""
    for stage in stages:
        store = StageStore(run_dir, stage)
        if fresh:
            # Everything downstream was built from what is about to be rebuilt.
            for later in STAGES[STAGES.index(stage) :]:
                StageStore(run_dir, later).clear()
            return
        if store.fingerprint and store.fingerprint != fingerprints[stage]:
            raise UserError(
                f"{run_dir}/{stage} was built with a different config (or prompts); rerun with --fresh to "
                f"rebuild from '{stage}' (the LLM cache is kept), or choose another --out"
            )


def _write_run_json(run_dir: Path, config: RunConfig, fingerprints: dict[str, str]) -> None:
    write_json_atomic(
        run_dir / "run.json",
        {
            "trace_build": __version__,
            "python": platform.python_version(),
            "config": config.model_dump(mode="json", exclude={"backend": {"api_key"}}),
            "fingerprints": fingerprints,
            "updated": time.time(),
        },
    )


def _summarize(run_dir: Path, summary: RunSummary) -> RunSummary:
    for stage in STAGES:
        store = StageStore(run_dir, stage)
        usage = store.manifest.get("usage") or {}
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        if tokens:
            summary.tokens[stage] = tokens
        summary.failure_reasons.update(store.manifest.get("failures") or {})
        summary.final_rows = store.manifest.get("final_rows", summary.final_rows)
    return summary


async def run_pipeline(
    config: RunConfig, run_dir: Path, stages: list[str], *, fresh: bool = False, console: Console | None = None
) -> RunSummary:
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = stage_fingerprints(config, prompts_digest())
    check_fingerprints(run_dir, stages, fingerprints, fresh)
    _validate_taxonomy(config)

    first = _previous(stages[0])
    if first is not None and StageStore(run_dir, first).status != "done":
        raise UserError(
            f"stage '{stages[0]}' needs the output of '{first}', which is not complete in {run_dir}: "
            f"run `trace-build run --stage {first}` (or --stage all) first"
        )
    _write_run_json(run_dir, config, fingerprints)

    summary = RunSummary(run_dir)
    client: LLMClient | None = None
    try:
        for wave in _waves(stages):
            pending = []
            for stage in wave:
                store = StageStore(run_dir, stage)
                if store.status == "done":
                    summary.skipped.append(stage)
                    console.print(f"[dim]{stage:<9} done already ({store.rows_written()} rows), skipped[/dim]")
                else:
                    pending.append(store)
            if not pending:
                continue
            if client is None and any(_needs_llm(config, store.stage) for store in pending):
                # Opened at the first stage that asks: a bad seed file fails before a model loads.
                client = await _open_client(config, run_dir, console)
            ctx = StageContext(config, run_dir, client)
            if pending[0].stage in _ROW_STAGES:
                await _run_row_stages(ctx, pending, fingerprints, console)
            else:
                await _run_whole_stage(ctx, pending[0], fingerprints[pending[0].stage])
            summary.ran.extend(store.stage for store in pending)
    finally:
        if client is not None:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()
    return _summarize(run_dir, summary)


def _waves(stages: list[str]) -> list[list[str]]:
    """Consecutive row-wise stages form one wave and run together; seeds and filter stand alone."""
    waves: list[list[str]] = []
    for stage in stages:
        if waves and stage in _ROW_STAGES and waves[-1][-1] in _ROW_STAGES:
            waves[-1].append(stage)
        else:
            waves.append([stage])
    return waves


def _validate_taxonomy(config: RunConfig) -> None:
    from trace_builder.taxonomy import sample_constraint_plan
    import random

    tax = config.taxonomy
    try:
        sample_constraint_plan(random.Random(0), tax.count_histogram, tax.weights or None, tax.max_per_dimension)
    except ValueError as exc:
        raise UserError(f"taxonomy settings are invalid: {exc}") from None


async def _open_client(config: RunConfig, run_dir: Path, console: Console) -> LLMClient:
    backend = make_backend(config.backend)
    console.print(f"[dim]backend {config.backend.kind}: model {config.backend.model}[/dim]")
    if config.backend.kind == "local":
        console.print("[dim]loading the model (the first time, the embedded one is converted: about a minute)[/dim]")
    await preflight(backend)
    return LLMClient(backend, RequestCache(run_dir / "cache.sqlite"), concurrency=config.backend.concurrency)


async def _run_whole_stage(ctx: StageContext, store: StageStore, fingerprint: str) -> None:
    """seeds or filter: stages that need all of their input at once."""
    started = time.monotonic()
    source = StageStore(ctx.run_dir, _previous(store.stage)) if store.stage != "seeds" else None
    store.begin(fingerprint, source.manifest["total_shards"] if source else 0)
    extra: dict = {}
    if store.stage == "seeds":
        await run_seeds(ctx, store)
    else:
        extra = run_filter(source, store, ctx.config.filter, ctx.config.seed, ctx.run_dir)
    usage = ctx.client.usage_for(store.stage) if ctx.client else {}
    store.finish("done", usage, time.monotonic() - started, failures=_failure_counts(store, store.stage), **extra)


async def _run_row_stages(
    ctx: StageContext, stores: list[StageStore], fingerprints: dict[str, str], console: Console
) -> None:
    """Run consecutive row-wise stages at once, each consuming its input shard by shard.

    A shard of respond starts the moment expand has written it, so the backend never idles
    at a stage boundary waiting for the slowest row of the previous stage.
    """
    seeds = StageStore(ctx.run_dir, "seeds")
    total_shards = seeds.manifest["total_shards"] or 0
    total_rows = seeds.rows_written()
    written: dict[tuple[str, int], asyncio.Event] = defaultdict(asyncio.Event)
    running = {store.stage for store in stores}
    # Rows, not requests, are admitted: each row holds one request at a time, so twice the
    # concurrency in rows keeps every request slot busy while rows change sub-step.
    in_flight = 2 * ctx.config.backend.concurrency if ctx.client else 1024

    async def run_one(store: StageStore, bar) -> None:
        started = time.monotonic()
        source_stage = _previous(store.stage)
        source = StageStore(ctx.run_dir, source_stage)
        store.begin(fingerprints[store.stage], total_shards)

        async def input_ready(index: int) -> None:
            if source_stage in running:
                await written[(source_stage, index)].wait()

        step, _ = _ROW_STAGES[store.stage]
        await run_row_stage(
            source,
            store,
            lambda row: step(ctx, row),
            stage_schema(store.stage),
            total_shards=total_shards,
            max_rows_in_flight=in_flight,
            input_ready=input_ready,
            on_row_done=bar.row_done,
            on_shard_written=lambda index: written[(store.stage, index)].set(),
        )
        usage = ctx.client.usage_for(store.stage) if ctx.client else {}
        store.finish("done", usage, time.monotonic() - started, failures=_failure_counts(store, store.stage))

    with PipelineProgress(console, ctx.client) as progress:
        for store in stores:  # shards finished in an earlier run are ready already
            for index in store.done_shards():
                written[(store.stage, index)].set()
        tasks = [asyncio.create_task(run_one(store, progress.stage(store.stage, total_rows, store.rows_written()))) for store in stores]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


def _failure_counts(store: StageStore, stage: str) -> dict[str, int]:
    """Reasons of the rows this stage failed (and, for respond/perturb, its DPO/IOPO side)."""
    frame = store.read()
    if frame.empty:
        return {}
    counts: Counter = Counter()
    if "failed_stage" in frame:
        mine = frame[(frame["status"] != "ok") & (frame["failed_stage"] == stage)]
        counts.update(f"{stage}: {r}" for r in mine["reason"])
    for side in ("dpo", "iopo"):
        column = f"{side}_status"
        if stage == {"dpo": "respond", "iopo": "perturb"}[side] and column in frame:
            failed = frame[frame[column] == "failed"]
            counts.update(f"{side}: {r}" for r in failed[f"{side}_reason"])
    return dict(counts)


def describe_summary(summary: RunSummary, console: Console) -> None:
    """The short report at the end of a run."""
    finals = ", ".join(f"{name} {n}" for name, n in summary.final_rows.items()) or "none yet"
    console.print(f"[bold]final datasets:[/bold] {finals}")
    if summary.failure_reasons:
        top = ", ".join(f"{reason} ({n})" for reason, n in summary.failure_reasons.most_common(5))
        console.print(f"[bold]top failure reasons:[/bold] {top}")
    if summary.tokens:
        console.print(
            "[bold]tokens:[/bold] "
            + ", ".join(f"{s} {n:,}" for s, n in summary.tokens.items())
            + f" (total {sum(summary.tokens.values()):,})"
        )
    console.print(f"[bold]files:[/bold] {summary.run_dir / 'final'}  (inspect with `trace-build status --out {summary.run_dir}`)")


def stage_rows(run_dir: Path) -> list[dict]:
    """One line per stage for `trace-build status`."""
    table = []
    for stage in STAGES:
        store = StageStore(run_dir, stage)
        usage = store.manifest.get("usage") or {}
        table.append(
            {
                "stage": stage,
                "status": store.status,
                "shards": f"{len(store.done_shards())}/{store.manifest.get('total_shards') or '?'}",
                "rows": store.rows_written(),
                "failed": sum((store.manifest.get("failures") or {}).values()),
                "requests": usage.get("requests", 0),
                "cached": usage.get("cache_hits", 0),
                "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                "secs": round(store.manifest.get("elapsed_s", 0.0), 1),
            }
        )
    return table
