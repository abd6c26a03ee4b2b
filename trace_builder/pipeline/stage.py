"""What a pipeline stage is: one record naming what it reads, what it adds, and what its output depends on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from trace_builder.config import RunConfig
    from trace_builder.pipeline.context import StageContext
    from trace_builder.run.store import StageStore

Row = dict
RowFn = Callable[["StageContext", Row], Awaitable[Row]]
# A whole-stage function reads its input store and fills its own; it returns extra manifest fields.
WholeFn = Callable[["StageContext", "StageStore | None", "StageStore"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Stage:
    """One stage of `trace-build run`.

    Exactly one of `row` (applied to each row as it arrives: row-wise stages stream into each
    other) or `whole` (needs all of its input at once) is set. `settings` returns what the
    stage's output depends on beyond its input: it goes into the stage's fingerprint, so a
    change there is detected. Transport settings (URLs, concurrency, timeouts) never belong in
    it: they do not change an answer.
    """

    name: str
    reads: str | None
    settings: Callable[[RunConfig], dict[str, Any]]
    fields: tuple[pa.Field, ...] = ()
    row: RowFn | None = None
    whole: WholeFn | None = None
    uses_llm: Callable[[RunConfig], bool] = field(default=lambda config: False)
    # Figures for the stage's manifest and `status`, from its finished rows (attempts, yields...).
    summary: Callable[[pd.DataFrame], dict[str, Any]] | None = None
    summary_columns: tuple[str, ...] = ()  # the columns `summary` reads
    description: str = ""
    # Output that no stage reads and that is a pure function of the input and settings (the filter):
    # a change of its settings rebuilds it instead of being refused, and so does a change of its input.
    rebuilt_on_change: bool = False
    # Whether the stage can fail a row. One that cannot (perturb: a failed pair fails only its own
    # side) leaves every row's status as it found it, so a target-size run knows which rows are
    # usable, and plans its next round, before they have passed it.
    fails_rows: bool = True

    def __post_init__(self) -> None:
        if (self.row is None) == (self.whole is None):
            raise ValueError(f"stage {self.name!r} needs exactly one of `row` or `whole`")

    @property
    def row_wise(self) -> bool:
        return self.row is not None


def settled_stage(stages: Sequence[Stage]) -> Stage:
    """The last of `stages` that can fail a row (the last, if none can): after it, a row's status is final."""
    return next((stage for stage in reversed(stages) if stage.fails_rows), stages[-1])


def model_settings(config: RunConfig) -> dict[str, Any]:
    """What every LLM stage's answers depend on: which models (the generator's, and each role's own), and how they sample."""
    settings = {
        "backend": config.backend.kind,
        "model": config.backend.model,
        "generation": config.generation.model_dump(),
    }
    if config.roles:
        settings["roles"] = {
            role: [config.backend_for(role).kind, config.backend_for(role).model] for role in config.roles
        }
    return settings
