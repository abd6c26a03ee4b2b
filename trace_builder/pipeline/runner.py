"""Run the stages of the registry over a run directory: fingerprints, resume, row chains, the summary."""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from trace_builder.config import RunConfig
from trace_builder.errors import UserError
from trace_builder.llm.cache import RequestCache
from trace_builder.llm.client import LLMClient
from trace_builder.llm.factory import make_backend
from trace_builder.llm.reasons import ANSWER, is_transient
from trace_builder.llm.roles import (
    GENERATOR,
    ROLES,
    RoleClients,
    open_role_clients,
    rows_in_flight,
)
from trace_builder.pipeline.admission import QuotaAdmission, RowSource
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.engine import ChainStage, RowChain
from trace_builder.pipeline.failures import FAILURE_COLUMNS, failure_counts
from trace_builder.pipeline.registry import (
    STAGE_NAMES,
    STAGES,
    get_stage,
    stage_fingerprints,
    stage_schema,
    stages_from,
)
from trace_builder.pipeline.retry import reopen_retryable
from trace_builder.pipeline.stage import Stage, settled_stage
from trace_builder.prompts import prompts_digest
from trace_builder.report.status import per_train_row
from trace_builder.run.batches import pending_batches, pending_line
from trace_builder.run.lifecycle import holding, read_run_record, stale_stages, write_run_record
from trace_builder.run.progress import PipelineProgress
from trace_builder.run.redact import redact
from trace_builder.run.store import StageStore, verified_parts


@dataclass
class RunSummary:
    run_dir: Path
    final_rows: dict[str, int] = field(default_factory=dict)
    failure_reasons: Counter = field(default_factory=Counter)
    tokens: dict[str, int] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # quota fill, shortfalls, IOPO yields


def check_fingerprints(run_dir: Path, stages: list[Stage], fingerprints: dict[str, str], fresh: bool) -> None:
    """Refuse to mix rows built under another config; --fresh clears the stages instead."""
    if fresh:
        # Everything downstream was built from what is about to be rebuilt.
        for later in stages_from(stages[0].name):
            StageStore(run_dir, later.name).clear()
        return
    for name in stale_stages(run_dir, [stage.name for stage in stages], fingerprints):
        if get_stage(name).rebuilt_on_change:
            StageStore(run_dir, name).clear()  # asks nothing and nothing reads it: rebuilt with the new settings
            continue
        raise UserError(
            f"{run_dir}/{name} was built with a different config (or prompts); rerun with --fresh to "
            f"rebuild from '{name}' (the LLM cache is kept), or choose another --out"
        )


def _reopen_retryable(run_dir: Path, stages: list[Stage], config: RunConfig, console: Console) -> None:
    """Reopen the shards of rows that failed for a transient reason, so this run re-asks them.

    Only a finished run is reopened: a run that was stopped resumes as if it had never stopped
    (the same rows as an uninterrupted run), and re-asks its failures once it has finished.
    """
    if not all(StageStore(run_dir, s.name).status == "done" for s in stages):
        return
    chain = [s.name for s in stages if s.row_wise]
    after = [
        s.name for s in stages if not s.row_wise and chain and STAGE_NAMES.index(s.name) > STAGE_NAMES.index(chain[0])
    ]
    rows = reopen_retryable(run_dir, chain, after, config.transient_retries)
    if rows:
        console.print(
            f"re-asking {rows} rows that failed for a transient reason (docs/reliability.md)", highlight=False
        )


# What the servers told this run (llm/dialects.py), set once the clients open: kept across rewrites.
_FROM_SERVER = ("structured_output", "probe", "servers")


def _write_run_json(run_dir: Path, config: RunConfig, fingerprints: dict[str, str]) -> None:
    record = {
        "profile": config.profile,
        "settings": config.describe(),
        "config": redact(config.model_dump(mode="json", exclude={"backend": {"api_key"}})),
        "fingerprints": fingerprints,
        "prompts_digest": prompts_digest(),  # for the dataset card
    }
    write_run_record(run_dir, record, keep=_FROM_SERVER)


def _validate_taxonomy(config: RunConfig) -> None:
    from trace_builder.taxonomy import sample_constraint_plan

    tax = config.taxonomy
    try:
        sample_constraint_plan(random.Random(0), tax.count_histogram, tax.weights or None, tax.max_per_dimension)
    except ValueError as exc:
        raise UserError(f"taxonomy settings are invalid: {exc}") from None


def groups_of(stages: list[Stage], config: RunConfig) -> list[list[Stage]]:
    """Consecutive row-wise stages run together as one chain; whole stages stand alone.

    In a target-size run the seeds stage joins the chain after it: it admits seeds while
    the rows run, sized from the yields measured so far.
    """
    groups: list[list[Stage]] = []
    for stage in stages:
        joins = stage.row_wise and groups and (groups[-1][-1].row_wise or _admits(groups[-1][-1], config))
        if joins:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _admits(stage: Stage, config: RunConfig) -> bool:
    return stage.name == "seeds" and config.target.enabled


def _tops_up(config: RunConfig, run_dir: Path, group: list[Stage], stores: dict[str, StageStore]) -> bool:
    """A finished target run asked for more (a larger target or budget): admission goes on."""
    if not _admits(group[0], config):
        return False
    admission = QuotaAdmission(StageContext(config, run_dir, None), stores["seeds"], stores[settled_stage(group).name])
    return admission.wants_more()


async def run_pipeline(config: RunConfig, run_dir: Path, stage_names: list[str], **options) -> RunSummary:
    """Run `stage_names` over `run_dir` (options: see `_run_locked`), holding the run directory's
    lock throughout: a second run on the same folder fails at once, naming this one."""
    with holding(run_dir) as held:
        return await _run_locked(config, held, stage_names, **options)


async def _run_locked(
    config: RunConfig,
    run_dir: Path,
    stage_names: list[str],
    *,
    fresh: bool = False,
    console: Console | None = None,
    client: LLMClient | None = None,
    card: bool = True,
) -> RunSummary:
    """Run `stage_names` over `run_dir`. `client`: one already open (a pilot's metered one), closed here;
    `card`: write final/README.md once the filter stage is done."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    stages = [get_stage(name) for name in stage_names]
    console.print(f"[bold]{config.describe()}[/bold]", highlight=False)
    fingerprints = stage_fingerprints(config, prompts_digest())
    _validate_taxonomy(config)
    if config.target.enabled and stage_names == ["seeds"]:
        raise UserError("a target-size run admits seeds while the row stages run: use --stage all")
    if fresh and client is None and any(stage.uses_llm(config) for stage in stages):
        # --fresh deletes nothing until the server has answered the preflight.
        client = await _open_client(config, run_dir, console)
    check_fingerprints(run_dir, stages, fingerprints, fresh)
    if not fresh:
        _reopen_retryable(run_dir, stages, config, console)

    first = stages[0].reads
    if first is not None and StageStore(run_dir, first).status == "done":
        verified_parts(run_dir / first)  # a damaged input shard: one line naming it and how to redo it
    if first is not None and StageStore(run_dir, first).status != "done":
        raise UserError(
            f"stage '{stages[0].name}' needs the output of '{first}', which is not complete in {run_dir}: "
            f"run `trace-build run --stage {first}` (or --stage all) first"
        )
    _write_run_json(run_dir, config, fingerprints)

    summary = RunSummary(run_dir)
    try:
        for group in groups_of(stages, config):
            stores = {stage.name: StageStore(run_dir, stage.name) for stage in group}
            if summary.ran and all(stage.rebuilt_on_change for stage in group):
                for store in stores.values():  # its input changed in this run
                    store.forget_shards({int(k) for k in store.manifest["shards"]})
            if all(store.verified_status() == "done" for store in stores.values()) and not _tops_up(
                config, run_dir, group, stores
            ):
                for stage in group:
                    summary.skipped.append(stage.name)
                    console.print(
                        f"[dim]{stage.name:<9} done already ({stores[stage.name].rows_written()} rows), skipped[/dim]"
                    )
                continue
            if client is None and any(stage.uses_llm(config) for stage in group):
                # Opened at the first stage that asks: a bad seed file fails before a model loads.
                client = await _open_client(config, run_dir, console)
            ctx = StageContext(config, run_dir, client)
            if len(group) == 1 and not group[0].row_wise:
                await _run_whole(ctx, group[0], stores[group[0].name], fingerprints[group[0].name])
            else:
                summary.notes += await _run_chain(ctx, group, stores, fingerprints, console)
            summary.ran.extend(stage.name for stage in group)
    finally:
        if client is not None:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()
        if (pending := pending_line(run_dir)) is not None:
            console.print(pending, highlight=False, soft_wrap=True)
    if card and StageStore(run_dir, "filter").status == "done":
        _write_card(run_dir, console)
    if not summary.ran:
        summary.notes.append("every stage was done already: nothing was asked")
    return _summarize(run_dir, summary)


def _write_card(run_dir: Path, console: Console) -> None:
    """final/README.md. The data is complete without it: a failure here is a warning, not a failed run."""
    from trace_builder.report.card import write_card

    try:
        write_card(run_dir)
    except Exception as exc:  # noqa: BLE001 - any card error leaves the datasets as they are
        console.print(f"[yellow]dataset card not written[/yellow] ({exc}): run `trace-build card --out {run_dir}`")


async def _open_client(config: RunConfig, run_dir: Path, console: Console) -> RoleClients:
    """The client of every role (one per distinct backend: checked, and probed for its dialect), with
    the cache; what each server speaks is printed and kept in run.json."""
    make = functools.partial(make_backend, batch=config.batch, run_dir=run_dir)
    if any(config.backend_for(role).kind == "local" for role in ROLES):
        console.print("[dim]loading the model (the first time, the embedded one is converted: about 20 s)[/dim]")
    servers: dict[str, dict] = {}

    def opened(role: str, backend) -> None:
        dialect = getattr(backend, "dialect", None)
        servers[role] = {
            "model": backend.model,
            "structured_output": dialect,
            "probe": getattr(backend, "probe_note", ""),
        }
        if dialect is not None:
            who = "" if role == GENERATOR else f" ({role}: {backend.model})"
            note = servers[role]["probe"]
            console.print(f"structured output{who}: {dialect}" + (f" ({note})" if note else ""), highlight=False)

    clients = await open_role_clients(config, RequestCache(run_dir / "cache.sqlite"), make, opened)
    generator = servers.get(GENERATOR, {})
    recorded = dict(zip(_FROM_SERVER, (generator.get("structured_output"), generator.get("probe"), servers)))
    record = read_run_record(run_dir)
    write_run_record(run_dir, {**{k: v for k, v in record.items() if k not in _FROM_SERVER}, **recorded})
    return clients


async def cancel_batches(config: RunConfig, run_dir: Path) -> list[str]:
    """Cancel the run's pending batches at their provider, holding the run's lock (no run follows them
    meanwhile): one line per batch. They stay recorded: the next run collects what they answered and
    submits the rest again."""
    pending = pending_batches(run_dir)
    if not pending:
        return [f"no pending batches in {run_dir}"]
    backends: dict[tuple[str, str], Any] = {}
    for role in ROLES:
        settings = config.backend_for(role)
        if settings.batch and settings.kind == "openai":
            backend = make_backend(settings, batch=config.batch, run_dir=run_dir)
            backends.setdefault((backend.model, backend.server), backend)
    lines = []
    try:
        with holding(run_dir):
            for entry in pending:
                backend = backends.get((entry.get("model"), entry.get("server")))
                if backend is None:
                    lines.append(
                        f"batch {entry['id']} went to {entry.get('model')} at {entry.get('server')}, which no role of "
                        "these settings asks in batch mode: pass the run's own settings (--config, --batch)"
                    )
                    continue
                info = await backend.cancel(entry["id"])
                lines.append(f"batch {entry['id']} ({entry.get('requests', 0):,} requests): {info}")
    finally:
        for backend in backends.values():
            await backend.aclose()
    return lines + ["the next run collects what they answered and submits the rest again"]


def _begin(ctx: StageContext, store: StageStore, fingerprint: str, total_shards: int | None) -> None:
    """Open a stage's store, and tell the client since when the store's usage counts run."""
    store.begin(fingerprint, total_shards)
    if ctx.client is not None:
        ctx.client.count_from(store.stage, store.manifest["started"])


async def _run_whole(ctx: StageContext, stage: Stage, store: StageStore, fingerprint: str) -> None:
    """seeds or filter: stages that need all of their input at once."""
    started = time.monotonic()
    source = StageStore(ctx.run_dir, stage.reads) if stage.reads else None
    _begin(ctx, store, fingerprint, source.manifest["total_shards"] if source else 0)
    extra = await stage.whole(ctx, source, store)
    _finish(ctx, stage, store, time.monotonic() - started, **extra)


async def _run_chain(
    ctx: StageContext, group: list[Stage], stores: dict[str, StageStore], fingerprints: dict[str, str], console: Console
) -> list[str]:
    """Row-wise stages in one chain: a row enters the next stage the moment it leaves one."""
    started = time.monotonic()
    admitting = _admits(group[0], ctx.config)
    row_stages = group[1:] if admitting else group
    if not admitting:  # stages finished by an earlier run are not run again
        row_stages = [
            s for i, s in enumerate(row_stages) if any(stores[t.name].status != "done" for t in row_stages[i:])
        ]
    source: RowSource
    if admitting:
        # The chain's own store of the stage after which rows' statuses are final: it knows every
        # shard the moment it is written, and the next round is planned while the rows go on.
        source = QuotaAdmission(ctx, stores["seeds"], stores[settled_stage(row_stages).name])
        _begin(ctx, stores["seeds"], fingerprints["seeds"], None)
    else:
        source = RowSource(StageStore(ctx.run_dir, row_stages[0].reads))
    await source.prepare()
    for stage in row_stages:
        _begin(ctx, stores[stage.name], fingerprints[stage.name], source.total_shards)
    # Rows, not requests, are admitted (how many: llm/roles.py).
    in_flight = rows_in_flight(ctx.config) if ctx.client else 1024

    with PipelineProgress(console, ctx.client, run_dir=ctx.run_dir, config=ctx.config) as progress:
        bars = {s.name: progress.stage(s.name, source.total_rows, stores[s.name].rows_written()) for s in row_stages}
        source.on_growth = lambda rows: [bar.grow(rows) for bar in bars.values()]
        chain = [
            ChainStage(s, stores[s.name], stage_schema(s.name), on_row_done=bars[s.name].row_done) for s in row_stages
        ]
        engine = RowChain(
            ctx,
            chain,
            source.store,
            max_rows_in_flight=in_flight,
            window=8 + in_flight // max(ctx.config.shard_size, 1),
            on_shard_done=source.shard_done,
        )
        await engine.run(source.shards())

    elapsed = time.monotonic() - started
    notes = source.finish()
    for stage in row_stages:
        stores[stage.name].manifest["total_shards"] = source.total_shards
        _finish(ctx, stage, stores[stage.name], elapsed)
    return notes


def _finish(ctx: StageContext, stage: Stage, store: StageStore, elapsed: float, **extra) -> None:
    """Close a stage: its token usage (per task too), failure reasons and summary figures.

    Only the columns those figures need are read back: reading a stage whole (prompts, answers,
    judgements) at the end of a 50K-seed run held every row at once (+150 MiB through expand).
    """
    wanted = set(FAILURE_COLUMNS) | set(stage.summary_columns)
    frame = store.read([c for c in store.columns() if c in wanted])
    usage = ctx.client.usage_for(stage.name) if ctx.client else {}
    by_task = ctx.client.usage_by_task(stage.name) if ctx.client else {}
    if stage.summary is not None:
        extra["summary"] = stage.summary(frame)
    failures = failure_counts(frame.to_dict("records"), stage.name)
    store.finish("done", usage, elapsed, failures=failures, usage_by_task=by_task, **extra)


def _summarize(run_dir: Path, summary: RunSummary) -> RunSummary:
    for stage in STAGES:
        store = StageStore(run_dir, stage.name)
        usage = store.manifest.get("usage") or {}
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        if tokens:
            summary.tokens[stage.name] = tokens
        summary.failure_reasons.update(store.manifest.get("failures") or {})
        summary.final_rows = store.manifest.get("final_rows", summary.final_rows)
        summary.notes += store.manifest.get("notes") or []
    kept = (StageStore(run_dir, "perturb").manifest.get("summary") or {}).get("IOPO groups kept per attempt")
    if kept:
        summary.notes.append(f"IOPO groups kept per attempt: {kept}")
    if (line := per_train_row(run_dir)) is not None:
        summary.notes.append(line)
    return summary


def failed_on_requests(summary: RunSummary) -> bool:
    """No final row, and every row that failed did so on a request the server did not answer (not on an
    answer or on content): a run that built nothing because it could not ask anything is no success."""
    if sum(summary.final_rows.values()) or not summary.failure_reasons:
        return False
    reasons = [key.split(": ", 1)[-1] for key in summary.failure_reasons]
    return all((is_transient(r) and r not in ANSWER) or r.startswith("http_") for r in reasons)


def empty_run_hint(summary: RunSummary) -> str | None:
    """What to change when a run built no row because the judge gave none full marks (the common
    end of a small model judging its own answers), or None."""
    if sum(summary.final_rows.values()) or not summary.failure_reasons:
        return None
    reason, _ = summary.failure_reasons.most_common(1)[0]
    if not reason.endswith("judge_below_10"):
        return None
    return (
        "no answer earned full marks from the judge on every constraint, as a small model judging its own "
        "answers rarely gives: ask more answers per row (respond.attempts, with generation.temperature > 0) "
        "or use a stronger judge (--judge-model, --judge-base-url)"
    )


def describe_summary(summary: RunSummary, console: Console) -> None:
    """The short report at the end of a run."""
    finals = ", ".join(f"{name} {n}" for name, n in summary.final_rows.items()) or "none yet"
    console.print(f"[bold]final datasets:[/bold] {finals}")
    for note in dict.fromkeys(summary.notes):
        console.print(note, highlight=False)
    if summary.failure_reasons:
        top = ", ".join(f"{reason} ({n})" for reason, n in summary.failure_reasons.most_common(5))
        console.print(f"[bold]top failure reasons:[/bold] {top}")
        if (hint := empty_run_hint(summary)) is not None:
            console.print(hint, highlight=False)
    if summary.tokens:
        console.print(
            "[bold]tokens:[/bold] "
            + ", ".join(f"{s} {n:,}" for s, n in summary.tokens.items())
            + f" (total {sum(summary.tokens.values()):,})"
        )
    console.print(
        f"[bold]files:[/bold] {summary.run_dir / 'final'}  (inspect with `trace-build status --out {summary.run_dir}`)"
    )
