"""`status`: what a run has done and spent, read from its manifests; the table laid out for the terminal
(compact numbers, columns hidden by name rather than cut) and the lines under it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from trace_builder.config import RunConfig
from trace_builder.llm.roles import ROLES, cost_of, role_of, usage_by_role
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.retry import retryable_by_shard
from trace_builder.run.batches import pending_batches
from trace_builder.run.lock import is_held, read_holder
from trace_builder.run.progress import format_duration
from trace_builder.run.store import StageStore, read_json

TEXT_COLUMNS = ("stage", "status")  # left-aligned; every other column is a figure
# Hidden in this order, only when the table would not fit the terminal otherwise: a header
# cut to "cach…" or "se…" says nothing, a named hidden column says where the figure went.
HIDE_FIRST = ("cached", "secs", "requests", "shards")
_EXACT_BELOW = 100_000  # figures below this are printed whole, with separators


def compact(value: object) -> str:
    """A figure in at most 6 characters: 99,999 whole, then 412k, 1.24M, 312M."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < _EXACT_BELOW else compact(round(value))
    if abs(value) < _EXACT_BELOW:
        return f"{value:,}"
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(value) >= size:
            scaled = value / size
            return f"{scaled:.3g}{unit}" if scaled < 1000 else f"{scaled:,.0f}{unit}"
    return str(value)


def exact(value: object) -> str:
    """A figure as it is, with thousands separators."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _table(rows: list[dict], columns: list[str], title: str, figure: Callable[[object], str]) -> Table:
    # No vertical rules and no outer padding: two spaces between columns is what lets nine
    # figures fit 80 columns; the rule under the header keeps it readable.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.padding = (0, 1, 0, 0)
    for column in columns:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[figure(row.get(column, "")) for column in columns])
    return table


def _natural_width(table: Table) -> int:
    wide = Console(width=10_000)  # measured unconstrained: a console's own width caps the measure
    return Measurement.get(wide, wide.options, table).maximum


def status_table(rows: list[dict], title: str, width: int) -> tuple[Table, list[str]]:
    """The table of `rows` (one dict per stage) within `width` columns, and the columns hidden to fit.

    Figures are exact where they fit, else compact (412k); columns are hidden, named, only
    when compact figures do not fit either.
    """
    columns = list(rows[0]) if rows else []
    table = _table(rows, columns, title, exact)
    if _natural_width(table) <= width:
        return table, []
    hidden: list[str] = []
    table = _table(rows, columns, title, compact)
    for name in HIDE_FIRST:
        if _natural_width(table) <= width:
            break
        if name in columns:
            columns.remove(name)
            hidden.append(name)
            table = _table(rows, columns, title, compact)
    return table, hidden


def stage_rows(run_dir: Path) -> list[dict]:
    """One line per stage for `trace-build status`."""
    table = []
    for name in STAGE_NAMES:
        store = StageStore(run_dir, name)
        usage = store.manifest.get("usage") or {}
        table.append(
            {
                "stage": name,
                "status": store.status,
                "shards": f"{len(store.manifest['shards'])}/{store.manifest.get('total_shards') or '?'}",
                "rows": store.rows_written(),
                "failed": sum((store.manifest.get("failures") or {}).values()),
                "requests": usage.get("requests", 0),
                "cached": usage.get("cache_hits", 0),
                "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                "secs": round(store.manifest.get("elapsed_s", 0.0), 1),
            }
        )
    return table


def run_state_lines(run_dir: Path) -> list[str]:
    """Whether a run holds the folder now, and how many rows a plain rerun would re-ask."""
    lines = []
    holder = read_holder(run_dir)
    if is_held(run_dir):
        lines.append(f"running now: {holder.describe() if holder else 'a run is starting'}")
    cap = ((read_json(run_dir / "run.json") or {}).get("config") or {}).get("transient_retries", 2)
    retryable = {}
    for name in STAGE_NAMES:
        store = StageStore(run_dir, name)
        tried = store.manifest.get("retries") or {}
        found = retryable_by_shard(store, verify=False)
        retryable[name] = sum(n for index, n in found.items() if tried.get(str(index), 0) < cap)
    if any(retryable.values()):
        where = ", ".join(f"{name} {n}" for name, n in retryable.items() if n)
        lines.append(
            f"retryable: {sum(retryable.values())} rows failed for a transient reason ({where}); "
            "a plain rerun re-asks them"
        )
    return lines


def batch_lines(run_dir: Path) -> list[str]:
    """Batch mode: the run's pending batches, one line each (run/batches.py)."""
    pending = pending_batches(run_dir)
    if not pending:
        return []
    now = time.time()
    requests = sum(e.get("requests", 0) for e in pending)
    lines = [
        f"pending batches: {len(pending)} ({requests:,} requests); a run collects them, "
        f"`trace-build run --cancel-batches --out {run_dir}` cancels them"
    ]
    for entry in pending:
        lines.append(
            f"  {entry['id']}: {entry.get('requests', 0):,} requests to {entry.get('model')}, "
            f"{entry.get('status')} {format_duration(now - entry.get('status_at', now))} ago, "
            f"submitted {format_duration(now - entry.get('submitted', now))} ago"
        )
    return lines


def run_usage_by_task(run_dir: Path) -> dict[str, dict[str, int]]:
    """What every task of the run asked so far (manifests: finished sessions), summed over stages."""
    total: dict[str, dict[str, int]] = {}
    for name in STAGE_NAMES:
        for tag, usage in (StageStore(run_dir, name).manifest.get("usage_by_task") or {}).items():
            into = total.setdefault(tag, {})
            for key, value in usage.items():
                into[key] = into.get(key, 0) + value
    return total


def per_train_row(run_dir: Path) -> str | None:
    """Requests, tokens and cost per kept train row (sft), over everything the run asked."""
    rows = (StageStore(run_dir, "filter").manifest.get("final_rows") or {}).get("sft")
    if not rows:
        return None
    by_task = run_usage_by_task(run_dir)
    requests = sum(u.get("requests", 0) for u in by_task.values())
    tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in by_task.values())
    config = RunConfig.model_validate((read_json(run_dir / "run.json") or {}).get("config") or {})
    cost = cost_of(by_task, config)
    money = f", ${cost / rows:,.4f}" if cost is not None else ""
    line = f"per kept train row: {requests / rows:,.1f} requests, {tokens / rows:,.0f} tokens{money} ({rows} rows)"
    hits = sum(u.get("prepaid_hits", 0) for u in by_task.values())
    if not hits:
        return line
    # Answers the cache served that the run's counts do not hold were paid for too (a plan's pilot,
    # an earlier session); a replay of the run's own answer (a redone shard) is counted once already.
    with_cache = {
        tag: {
            **u,
            "prompt_tokens": u.get("prompt_tokens", 0) + u.get("cached_prompt_tokens", 0),
            "completion_tokens": u.get("completion_tokens", 0) + u.get("cached_completion_tokens", 0),
        }
        for tag, u in by_task.items()
    }
    all_tokens = sum(u["prompt_tokens"] + u["completion_tokens"] for u in with_cache.values())
    all_cost = cost_of(with_cache, config)
    all_money = f", ${all_cost / rows:,.4f}" if all_cost is not None else ""
    return (
        f"{line}; with the {hits:,} answers the cache served (a plan's pilot, an earlier session): "
        f"{(requests + hits) / rows:,.1f} requests, {all_tokens / rows:,.0f} tokens{all_money}"
    )


def role_lines(run_dir: Path) -> list[str]:
    """Requests, tokens and cost per role (and the model behind it), for `status`."""
    run = read_json(run_dir / "run.json") or {}
    config = RunConfig.model_validate(run.get("config") or {})
    by_task = run_usage_by_task(run_dir)
    parts = []
    for role, usage in sorted(usage_by_role(by_task).items(), key=lambda item: ROLES.index(item[0])):
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        cost = cost_of({t: u for t, u in by_task.items() if role_of(t) == role}, config)
        money = f", ${cost:,.2f}" if cost is not None else ""
        through = f" ({usage['batched']:,} through batches)" if usage.get("batched") else ""
        parts.append(
            f"{role} ({config.backend_for(role).model}) {usage.get('requests', 0):,} requests{through}, "
            f"{tokens:,} tokens{money}"
        )
    return [f"by role: {'; '.join(parts)}"] if parts else []


def run_details(run_dir: Path) -> list[str]:
    """What `status` prints under its table: a run in progress, retryable rows, quota fill, per-stage
    figures, tokens per task."""
    lines = [*run_state_lines(run_dir), *batch_lines(run_dir), *role_lines(run_dir)]
    if (line := per_train_row(run_dir)) is not None:
        lines.append(line)
    seeds = StageStore(run_dir, "seeds").manifest
    for side, by_count in (seeds.get("quota") or {}).items():
        fill = ", ".join(f"{c}: {q['usable']}/{q['need']}" for c, q in by_count.items())
        lines.append(f"quota fill, {side} (usable/needed by constraint count): {fill}")
    if seeds.get("quota"):
        by_side = ", ".join(f"{side} {n}" for side, n in (seeds.get("seeds_by_side") or {}).items())
        lines.append(f"seeds admitted: {seeds.get('admitted', 0)} rows ({by_side} seeds)")
    dropped = {
        where: ", ".join(
            f"{name} {n}" for name, n in (StageStore(run_dir, stage).manifest.get("decontaminated") or {}).items()
        )
        for where, stage in (("seeds", "seeds"), ("final rows", "filter"))
    }
    if any(dropped.values()):
        lines.append(
            "overlapping a known eval set, dropped: " + "; ".join(f"{w}: {d}" for w, d in dropped.items() if d)
        )
    final_sides = StageStore(run_dir, "filter").manifest.get("seeds_by_side")
    if final_sides:
        lines.append(
            f"final seeds: train {final_sides['train']}, eval {final_sides['eval']}, on both sides {final_sides['both']}"
        )
    for name in STAGE_NAMES:
        manifest = StageStore(run_dir, name).manifest
        details = [f"  {key}: {value}" for key, value in (manifest.get("summary") or {}).items()]
        for task, usage in (manifest.get("usage_by_task") or {}).items():
            tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
            details.append(
                f"  {task}: {usage.get('requests', 0)} requests, {usage.get('cache_hits', 0)} cached, {tokens:,} tokens"
            )
        details += [f"  {note}" for note in manifest.get("notes") or []]
        if details:
            lines += [f"{name}:", *details]
    return lines
