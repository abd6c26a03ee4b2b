"""Run the stages in order over a run directory: fingerprints, resume, and the end-of-run summary."""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
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
from trace_builder.progress import StageProgress
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
        for stage in stages:
            store = StageStore(run_dir, stage)
            if store.status == "done":
                summary.skipped.append(stage)
                console.print(f"[dim]{stage:<9} done already ({store.rows_written()} rows), skipped[/dim]")
                continue
            if client is None and any(_needs_llm(config, s) for s in stages[stages.index(stage) :]):
                client = await _open_client(config, run_dir, console)
            ctx = StageContext(config, run_dir, client)
            await _run_stage(ctx, stage, store, fingerprints[stage], console)
            summary.ran.append(stage)
    finally:
        if client is not None:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()
    return _summarize(run_dir, summary)


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
    await preflight(backend)
    console.print(f"[dim]backend {config.backend.kind}: model {config.backend.model}[/dim]")
    return LLMClient(backend, RequestCache(run_dir / "cache.sqlite"), concurrency=config.backend.concurrency)


async def _run_stage(ctx: StageContext, stage: str, store: StageStore, fingerprint: str, console: Console) -> None:
    started = time.monotonic()
    source = StageStore(ctx.run_dir, _previous(stage)) if stage != "seeds" else None
    store.begin(fingerprint, source.manifest["total_shards"] if source else 0)
    extra: dict = {}
    if stage == "seeds":
        await run_seeds(ctx, store)
    elif stage == "filter":
        extra = run_filter(source, store, ctx.config.filter, ctx.config.seed, ctx.run_dir)
    else:
        step, _ = _ROW_STAGES[stage]
        total_rows = sum(s["rows"] for s in source.manifest["shards"].values())
        # Rows, not requests, are admitted: each row holds one request at a time, so twice
        # the concurrency in rows keeps every request slot busy while rows change sub-step.
        in_flight = 2 * ctx.config.backend.concurrency if ctx.client else 1024
        with StageProgress(console, stage, total_rows, ctx.client) as bar:
            await run_row_stage(
                source,
                store,
                lambda row: step(ctx, row),
                stage_schema(stage),
                max_rows_in_flight=in_flight,
                on_row_done=bar.row_done,
            )
    elapsed = time.monotonic() - started
    usage = ctx.client.usage_for(stage) if ctx.client else {}
    store.finish("done", usage, elapsed, failures=_failure_counts(store, stage), **extra)


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
                "cache_hits": usage.get("cache_hits", 0),
                "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                "elapsed_s": store.manifest.get("elapsed_s", 0.0),
            }
        )
    return table


def dump_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=str)
