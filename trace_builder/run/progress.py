"""Rich progress bars, one per stage and one for the run: rows, requests/s, cache hits, tokens, cost, failures, ETA.

The bars are redrawn together, at most every `_REFRESH_S` (a bar must not cost the pipeline
time), so a stage that stops receiving rows still shows its last count; a bar that reaches
its total is drawn at once, and every bar once more at the end. The same figures go to
`<run>/progress.json` every few seconds, which `trace-build status` reads while a run is live.
Warnings raised while the bars are live (Python warnings, libraries' log records) are held
back and printed once, counted, below them.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from trace_builder.config import RunConfig
from trace_builder.llm.client import LLMClient
from trace_builder.llm.roles import cost_of, priced
from trace_builder.pipeline.failures import row_failure
from trace_builder.run.store import read_json, write_json_atomic

_REFRESH_S = 0.25
_SNAPSHOT_S = 2.0
SNAPSHOT = "progress.json"


def format_duration(seconds: float | None) -> str:
    """'1h 05m', '4m 10s', '12s'; '-' when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    seconds = max(int(round(seconds)), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def remaining_seconds(done: int, done_at_start: int, total: int, elapsed: float) -> float | None:
    """Time left for `total - done` rows at the rate this session has done rows; None before one is done."""
    if done >= total:
        return 0.0
    rate = (done - done_at_start) / elapsed if elapsed > 0 else 0.0
    return (total - done) / rate if rate > 0 else None


def compact(n: int) -> str:
    """1234 -> '1,234', 123456 -> '123.5k', 13580245 -> '13.6M'."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1e6:.1f}M"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


class PipelineProgress:
    """One live display holding a bar per running stage (stages run at the same time) and a run line."""

    def __init__(
        self,
        console: Console,
        client: LLMClient | None,
        *,
        run_dir: Path | None = None,
        config: RunConfig | None = None,
    ):
        self.client = client
        # Dollars for a stage's usage by task, at each role's prices (none when no price is set).
        self.config = config if config is not None and priced(config) else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._planned = planned_requests(self.run_dir) if self.run_dir is not None else None
        # Narrow enough for 80 columns with a price set (rich drops whole columns that do not fit).
        columns = [
            TextColumn("[bold]{task.description:<8}"),
            BarColumn(bar_width=6),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>4}/s"),
            TextColumn("{task.fields[cached]:>5} hit"),
            TextColumn("{task.fields[tokens]:>5} tok"),
        ]
        if self.config is not None:
            columns.append(TextColumn("{task.fields[cost]:>6}"))
        columns += [
            TextColumn("[red]{task.fields[failed]} fail"),
            TextColumn("ETA {task.fields[eta]}"),
        ]
        self._progress = Progress(*columns, console=console)
        self._bars: list[StageBar] = []
        self._run_task: TaskID | None = None
        self._start = time.monotonic()
        self._drawn = self._saved = 0.0
        self._held: dict[tuple[str, str], int] = {}
        self._showwarning = None
        self._muted: list[logging.Handler] = []

    def __enter__(self) -> PipelineProgress:
        # A warning written to stderr mid-display tears the bars: hold it, show it once at the end.
        # Python warnings go through showwarning; libraries' log records through their own stream
        # handlers, which hold the real stderr (rich's redirection cannot reach them).
        # Only over a live terminal display: written to a file or a pipe, they tear nothing.
        self._showwarning = warnings.showwarning
        if self._progress.console.is_terminal:
            warnings.showwarning = self._hold_warning
            self._muted = _stream_handlers()
            for handler in self._muted:
                handler.addFilter(self._hold_record)
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.draw()
            self.save_snapshot()
        finally:
            self._progress.stop()
            warnings.showwarning = self._showwarning
            for handler in self._muted:
                handler.removeFilter(self._hold_record)
            for (category, message), n in self._held.items():
                times = f" ({n} times)" if n > 1 else ""
                self._progress.console.print(f"[yellow]{category}[/yellow]{times}: {message}", highlight=False)

    def _hold_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        key = (category.__name__, str(message).splitlines()[0][:300] if str(message) else "")
        self._held[key] = self._held.get(key, 0) + 1

    def _hold_record(self, record: logging.LogRecord) -> bool:
        # One record passes every handler on its way up: count it once.
        if record.levelno >= logging.WARNING and not getattr(record, "_held_by_progress", False):
            record._held_by_progress = True
            key = (record.levelname.lower(), record.getMessage().splitlines()[0][:300] if record.msg else "")
            self._held[key] = self._held.get(key, 0) + 1
        return False  # nothing reaches the terminal while the bars are live

    def stage(self, name: str, total: int, completed: int = 0) -> StageBar:
        """A bar for `name`; `completed` rows were done by an earlier, interrupted run."""
        task = self._progress.add_task(name, total=total, completed=completed, **_blank_fields())
        bar = StageBar(self, task, name, total, completed)
        self._bars.append(bar)
        if self._run_task is not None:  # the run line stays last
            self._progress.remove_task(self._run_task)
        self._run_task = self._progress.add_task("run", total=None, **_blank_fields())
        return bar

    # -- drawing ---------------------------------------------------------------------------
    def tick(self, force: bool = False) -> None:
        """A row moved: redraw every bar if the last drawing is old enough (or `force`)."""
        now = time.monotonic()
        if force or now - self._drawn >= _REFRESH_S:
            self.draw()
        if self.run_dir is not None and now - self._saved >= _SNAPSHOT_S:
            self.save_snapshot()

    def draw(self) -> None:
        """Every bar and the run line, from the counts as they are now."""
        self._drawn = time.monotonic()
        for bar in self._bars:
            self._progress.update(bar.task, total=bar.total, completed=bar.done, **self._fields(bar.figures()))
        if self._run_task is not None:
            run = self.run_figures()
            last = self._bars[-1] if self._bars else None
            self._progress.update(
                self._run_task,
                total=last.total if last else None,
                completed=last.done if last else 0,
                **self._fields(run),
            )

    def _fields(self, figures: dict[str, Any]) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = figures["requests"] / elapsed
        return {
            "rate": (f"{rate:.1f}" if rate < 100 else f"{rate:.0f}") if self.client else "-",
            "cached": compact(figures["cache_hits"]) if self.client else "-",
            "tokens": compact(figures["prompt_tokens"] + figures["completion_tokens"]) if self.client else "-",
            "cost": money(figures.get("cost_usd")),
            "failed": figures["failed"],
            "eta": format_duration(figures["eta_s"]),
        }

    # -- figures -----------------------------------------------------------------------------
    def usage(self, stage: str | None = None) -> dict[str, int]:
        """The client's counts for one stage, or for all stages of this display."""
        names = [stage] if stage else [bar.stage for bar in self._bars]
        total = {"requests": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}
        if self.client is None:
            return total
        for name in names:
            usage = self.client.usage_for(name)
            for key in total:
                total[key] += usage.get(key, 0)
        return total

    def run_figures(self) -> dict[str, Any]:
        """The whole display's figures. Its ETA is the slowest stage's (the chain ends with it), or,
        when `trace-build plan` planned these settings, the time left for the planned requests if
        longer (a target-size run's bars grow round by round, so their ETAs start short)."""
        usage = self.usage()
        etas = [bar.figures()["eta_s"] for bar in self._bars]
        # Unknown while a stage with rows left has not finished one yet (rows have not reached it).
        eta = max(etas) if etas and None not in etas else None
        if self._planned is not None and eta is not None:
            planned, before = self._planned
            answered = usage["requests"] + usage["cache_hits"]
            rate = answered / max(time.monotonic() - self._start, 1e-6)
            if rate > 0:
                eta = max(eta, (planned - before - answered) / rate)
        costs = [bar.figures()["cost_usd"] for bar in self._bars]
        return {
            **usage,
            "cost_usd": round(sum(c for c in costs if c is not None), 4) if self.config is not None else None,
            "failed": sum(bar.failed for bar in self._bars),
            "eta_s": eta,
        }

    def cost(self, stage: str) -> float | None:
        if self.config is None or self.client is None:
            return None
        return cost_of(self.client.usage_by_task(stage), self.config)

    def save_snapshot(self) -> None:
        """The live figures for `trace-build status` (another process)."""
        if self.run_dir is None:
            return
        self._saved = time.monotonic()
        stages = {bar.stage: bar.figures() for bar in self._bars}
        write_json_atomic(
            self.run_dir / SNAPSHOT, {"updated": time.time(), "stages": stages, "run": self.run_figures()}
        )


def planned_requests(run_dir: Path) -> tuple[int, int] | None:
    """(requests `plan` projected for this run, requests and cache hits its stages counted before
    this session), when the plan was made for the run's settings."""
    from trace_builder.pipeline.registry import STAGE_NAMES
    from trace_builder.run.folder import plan_path
    from trace_builder.run.store import StageStore

    plan, run = read_json(plan_path(run_dir)) or {}, read_json(Path(run_dir) / "run.json") or {}
    if not plan.get("requests") or plan.get("settings") != run.get("settings"):
        return None
    before = 0
    for name in STAGE_NAMES:
        usage = StageStore(run_dir, name).manifest.get("usage") or {}
        before += usage.get("requests", 0) + usage.get("cache_hits", 0)
    return plan["requests"], before


def _stream_handlers() -> list[logging.Handler]:
    """Every logging handler that writes to a terminal stream (not to a file)."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    found = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                found[id(handler)] = handler
    return list(found.values())


def _blank_fields() -> dict[str, Any]:
    return {"rate": "-", "cached": "-", "tokens": "-", "cost": "-", "failed": 0, "eta": "-"}


class StageBar:
    """The engine's per-row callback for one stage."""

    def __init__(self, display: PipelineProgress, task: TaskID, stage: str, total: int, completed: int):
        self.display, self.task, self.stage = display, task, stage
        self.total, self.done, self.done_at_start = total, completed, completed
        self.failed = 0
        self._start = time.monotonic()

    def row_done(self, row: dict) -> None:
        self.done += 1
        if row_failure(row, self.stage) is not None:
            self.failed += 1
        # The last row of a stage is always drawn: the throttle must not leave a bar short of its end.
        self.display.tick(force=self.done >= self.total)

    def grow(self, rows: int) -> None:
        """More rows were admitted (a target-size run)."""
        self.total += rows
        self.display.tick(force=True)

    def refresh(self, force: bool = False) -> None:
        self.display.tick(force=force)

    def figures(self) -> dict[str, Any]:
        usage = self.display.usage(self.stage)
        return {
            **usage,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "cost_usd": self.display.cost(self.stage),
            "eta_s": remaining_seconds(self.done, self.done_at_start, self.total, time.monotonic() - self._start),
        }


# -- for `trace-build status` --------------------------------------------------------------------


def status_lines(
    run_dir: Path, stages: dict[str, tuple[str, dict[str, dict[str, int]]]], config: RunConfig
) -> list[str]:
    """`stages`: name -> (status, usage by task from its manifest). Tokens and cost so far (a running
    stage's manifest holds earlier sessions only: the live snapshot adds this one) and, while a
    run is live, each running stage's ETA and the run's."""
    snapshot = read_json(Path(run_dir) / SNAPSHOT) or {}
    live = {name: s for name, s in (snapshot.get("stages") or {}).items() if stages.get(name, ("done",))[0] != "done"}
    prompt = completion = 0
    costs = []
    for name, (_, by_task) in stages.items():
        for source in (*by_task.values(), live.get(name) or {}):
            prompt += source.get("prompt_tokens", 0)
            completion += source.get("completion_tokens", 0)
        costs += [cost_of(by_task, config), (live.get(name) or {}).get("cost_usd")]
    cost = round(sum(c for c in costs if c is not None), 4) if priced(config) else None
    line = f"tokens so far: {prompt:,} prompt + {completion:,} completion"
    lines = [line + (f", cost {money(cost)}" if cost is not None else "")]
    if live:
        age = time.time() - float(snapshot.get("updated", 0))
        etas = ", ".join(
            f"{name} {s['done']}/{s['total']} ETA {format_duration(s.get('eta_s'))}" for name, s in live.items()
        )
        run_eta = format_duration((snapshot.get("run") or {}).get("eta_s"))
        lines.append(f"live (as of {format_duration(age)} ago): {etas}; run ETA {run_eta}")
    return lines


def run_status_lines(run_dir: Path) -> list[str]:
    """`status_lines` for a run folder: its stages' manifests, and prices from its run.json."""
    from trace_builder.pipeline.registry import STAGE_NAMES
    from trace_builder.run.store import StageStore

    config = RunConfig.model_validate((read_json(Path(run_dir) / "run.json") or {}).get("config") or {})
    stages = {}
    for name in STAGE_NAMES:
        store = StageStore(run_dir, name)
        stages[name] = (store.status, store.manifest.get("usage_by_task") or {})
    return status_lines(run_dir, stages, config)
