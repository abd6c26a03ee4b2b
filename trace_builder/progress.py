"""Rich progress bars, one per stage: rows done/total, requests/s, tokens, failures."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from trace_builder.llm.client import LLMClient

_REFRESH_S = 0.25  # field updates are throttled: a bar must not cost the pipeline time


class PipelineProgress:
    """One live display holding a bar per running stage (stages may run at the same time)."""

    def __init__(self, console: Console, client: LLMClient | None):
        self.client = client
        self._progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7} req/s"),
            TextColumn("{task.fields[tokens]:>9} tok"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
        )
        self._bars: list[StageBar] = []

    def __enter__(self) -> PipelineProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        for bar in self._bars:
            bar.refresh(force=True)
        self._progress.stop()

    def stage(self, name: str, total: int, completed: int = 0) -> StageBar:
        """A bar for `name`; `completed` rows were done by an earlier, interrupted run."""
        task = self._progress.add_task(name, total=total, completed=completed, rate="-", tokens="-", failed=0)
        bar = StageBar(self._progress, task, name, self.client, total)
        bar.done = completed
        self._bars.append(bar)
        return bar


class StageBar:
    """The engine's per-row callback for one stage."""

    def __init__(self, progress: Progress, task: TaskID, stage: str, client: LLMClient | None, total: int):
        self._progress, self._task, self.stage, self.client, self.total = progress, task, stage, client, total
        self.done = self.failed = 0
        self._start = time.monotonic()
        self._last = 0.0

    def row_done(self, row: dict) -> None:
        self.done += 1
        if row.get("status") != "ok" and row.get("failed_stage") == self.stage:
            self.failed += 1
        self.refresh()

    def grow(self, rows: int) -> None:
        """More rows were admitted (a target-size run)."""
        self.total += rows
        self._progress.update(self._task, total=self.total)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _REFRESH_S:
            return
        self._last = now
        fields: dict = {"failed": self.failed}
        if self.client is not None:
            usage = self.client.usage_for(self.stage)
            fields["rate"] = f"{usage['requests'] / max(now - self._start, 1e-6):.1f}"
            fields["tokens"] = f"{usage['prompt_tokens'] + usage['completion_tokens']:,}"
        self._progress.update(self._task, completed=self.done, **fields)
