"""Rich progress bars per stage: rows done/total, requests/s, tokens, failures."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trace_builder.llm.client import LLMClient

_REFRESH_S = 0.25  # field updates are throttled: a bar must not cost the pipeline time


class StageProgress:
    """One bar for one stage; `row_done(row)` is the engine's callback."""

    def __init__(self, console: Console, stage: str, total: int, client: LLMClient | None):
        self.stage = stage
        self.client = client
        self.failed = 0
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7} req/s"),
            TextColumn("{task.fields[tokens]:>9} tok"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(stage, total=total, rate="-", tokens="-", failed=0)

    def __enter__(self) -> "StageProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._refresh(force=True)
        self._progress.stop()

    def row_done(self, row: dict) -> None:
        self.done += 1
        if row.get("status") != "ok" and row.get("failed_stage") == self.stage:
            self.failed += 1
        self._refresh()

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _REFRESH_S:
            return
        self._last = now
        fields = {"failed": self.failed}
        if self.client is not None:
            usage = self.client.usage_for(self.stage)
            elapsed = max(now - self._start, 1e-6)
            fields["rate"] = f"{usage['requests'] / elapsed:.1f}"
            fields["tokens"] = f"{usage['prompt_tokens'] + usage['completion_tokens']:,}"
        self._progress.update(self._task, completed=self.done, **fields)
