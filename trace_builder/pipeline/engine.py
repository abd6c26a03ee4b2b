"""The row engine: carry each row through a chain of row-wise stages the moment it is ready.

A row leaves one stage and enters the next at once: there is no barrier between sub-steps,
stages or shards, so the backend always has `concurrency` requests to serve. Each stage
still writes its output shard by shard, atomically, as soon as every row of that shard has
passed it; a finished shard is never redone, and a resumed run starts each row at the first
stage whose shard is missing. Memory stays bounded: at most `max_rows_in_flight` rows are
alive and at most `window` shards are open at once. When more requests wait than the client
has slots, the row furthest behind goes first, among the rows admitted together while rows are
still being admitted, among all once the rows in flight are all there is, so that a run ends
with its slots full (`trace_builder.llm.client.RowSchedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from trace_builder.errors import LLMError
from trace_builder.llm.client import ROW_PROGRESS, RowProgress, RowSchedule
from trace_builder.pipeline.stage import Row, RowFn, Stage, settled_stage
from trace_builder.run.store import StageStore


def extend_schema(schema: pa.Schema, fields: Sequence[pa.Field]) -> pa.Schema:
    """`schema` plus `fields`; a field of the same name is replaced, keeping its position."""
    new = {f.name: f for f in fields}
    kept = [new.pop(f.name, f) for f in schema]
    return pa.schema(kept + list(new.values()))


def fail(row: Row, stage: str, reason: str, detail: str = "") -> Row:
    row.update(status="failed", reason=reason, failed_stage=stage, failure_detail=detail[:300])
    return row


async def guarded(step: RowFn, ctx, row: Row, stage: str) -> Row:
    """Apply `step` to a live row; a row that failed upstream passes through untouched.

    An LLMError (after the backend's retries) fails the row with its reason: rows are never
    dropped silently. Anything else (a UserError such as a rejected API key) stops the run.
    """
    if row.get("status") != "ok":
        return row
    try:
        return await step(ctx, row)
    except LLMError as exc:
        return fail(row, stage, exc.reason, exc.detail)


@dataclass
class ChainStage:
    """A stage of the chain with where it writes and the schema of its shards."""

    stage: Stage
    store: StageStore
    schema: pa.Schema
    on_row_done: Callable[[Row], None] = lambda row: None


@dataclass
class _OpenShard:
    """One input shard on its way through the chain: per stage, the rows that have passed it."""

    index: int
    size: int
    passed: dict[str, list[Row | None]] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)


class RowChain:
    """Run rows of `source`'s shards through `chain`, writing each stage's shards as they complete.

    `on_shard_done(index)` fires once shard `index` has passed the chain's last stage that can
    fail a row (`Stage.fails_rows`): its rows' statuses are final from there on. A row source
    that admits more input (a target-size run) listens to it, and plans from that stage's store.
    """

    def __init__(
        self,
        ctx,
        chain: Sequence[ChainStage],
        source: StageStore,
        *,
        max_rows_in_flight: int,
        window: int,
        on_shard_done: Callable[[int], None] = lambda index: None,
    ):
        self.ctx, self.chain, self.source = ctx, list(chain), source
        self.on_shard_done = on_shard_done
        self._slots = asyncio.Semaphore(max_rows_in_flight)
        self._window = max(1, window)
        self._open: dict[int, _OpenShard] = {}
        self._room = asyncio.Event()  # set when a shard closes (or the run fails)
        self._tasks: set[asyncio.Task] = set()
        self._fatal: asyncio.Future = asyncio.get_running_loop().create_future()
        self._admitted = 0
        self._schedule = RowSchedule(wave=max_rows_in_flight)
        settled = settled_stage([link.stage for link in self.chain])
        self._settled = next(link for link in self.chain if link.stage is settled)

    async def run(self, shards: AsyncIterable[int]) -> None:
        """Process every shard index `shards` yields (it may keep yielding while rows run)."""
        source = shards.__aiter__()
        with _quiet_collector():
            await self._run(source)

    async def _run(self, source) -> None:
        try:
            while (index := await self._next_shard(source)) is not None:
                await self._start_shard(index)
            self._drain(True)
            while self._tasks:
                await asyncio.wait([*self._tasks, self._fatal], return_when=asyncio.FIRST_COMPLETED)
                self._raise_if_fatal()
            self._raise_if_fatal()
        finally:
            # On a fatal error, stop the rest; shards already written stay written.
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _next_shard(self, source) -> int | None:
        """The source's next shard index, None at its end.

        While the source makes the engine wait (a target-size run admits its next round only
        once the rows in flight have settled), those rows are all there is: they drain.
        """
        self._raise_if_fatal()
        step = asyncio.ensure_future(_pull(source))
        await asyncio.sleep(0)  # a source that has its next shard at hand answers in this step
        if not step.done():
            self._drain(True)
            await asyncio.wait([step, self._fatal], return_when=asyncio.FIRST_COMPLETED)
            if self._fatal.done():
                step.cancel()
                self._raise_if_fatal()
        index = step.result()
        if index is not None:
            self._drain(False)
        return index

    def _drain(self, draining: bool) -> None:
        """Whether the rows in flight are all there is for now (see RowSchedule)."""
        self._schedule.drain(draining)

    def _raise_if_fatal(self) -> None:
        if self._fatal.done():
            raise self._fatal.exception()

    async def _start_shard(self, index: int) -> None:
        pending = [link for link in self.chain if index not in link.store.done_shards()]
        if not any(link is self._settled for link in pending):
            self.on_shard_done(index)
        if not pending:
            return
        first = self.chain.index(pending[0])
        before = self.chain[first - 1].store if first else self.source
        rows = before.read_shard_rows(index)
        while len(self._open) >= self._window:
            self._room.clear()
            await self._unless_fatal(self._room.wait())
        shard = _OpenShard(index, len(rows))
        for link in pending:
            shard.passed[link.stage.name] = [None] * len(rows)
            shard.remaining[link.stage.name] = len(rows)
        self._open[index] = shard
        if not rows:
            for link in pending:
                self._write(shard, link)
            return
        for position, row in enumerate(rows):
            await self._unless_fatal(self._slots.acquire())
            task = asyncio.create_task(self._carry(shard, position, row, pending))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _unless_fatal(self, awaitable) -> None:
        """Await `awaitable`, but raise at once if a row hit a fatal error meanwhile."""
        waiter = asyncio.ensure_future(awaitable)
        await asyncio.wait([waiter, self._fatal], return_when=asyncio.FIRST_COMPLETED)
        if self._fatal.done():
            waiter.cancel()
            self._raise_if_fatal()

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._fatal.done():
            self._fatal.set_exception(task.exception())
            self._room.set()

    async def _carry(self, shard: _OpenShard, position: int, row: Row, links: list[ChainStage]) -> None:
        # When requests wait for a slot, the client orders them by their rows' progress: the row
        # furthest behind first, within its wave of admitted rows until they drain (RowSchedule).
        progress = RowProgress(self._schedule, order=self._admitted)
        self._admitted += 1
        ROW_PROGRESS.set(progress)  # this task's context only
        try:
            for link in links:
                progress.stage, progress.requests = self.chain.index(link), 0
                row = await guarded(link.stage.row, self.ctx, row, link.stage.name)
                # A snapshot: later stages overwrite status and reason, this stage's shard must not see it.
                shard.passed[link.stage.name][position] = dict(row)
                shard.remaining[link.stage.name] -= 1
                link.on_row_done(row)
                if shard.remaining[link.stage.name] == 0:
                    self._write(shard, link)
        finally:
            self._slots.release()

    def _write(self, shard: _OpenShard, link: ChainStage) -> None:
        rows = shard.passed.pop(link.stage.name)
        link.store.write_shard(shard.index, pa.Table.from_pylist(rows, schema=link.schema))
        if link is self._settled:
            self.on_shard_done(shard.index)
        if link is self.chain[-1]:
            del self._open[shard.index]
            self._room.set()


# Allocations between young collections while rows run (CPython's default is 700).
_YOUNG_COLLECTION_EVERY = 7000


@contextlib.contextmanager
def _quiet_collector() -> Iterator[None]:
    """Keep the garbage collector from holding the event loop while the rows run.

    What exists when the chain starts (modules, config, taxonomy: ~200K objects) is frozen out
    of full collections, which walk every tracked object and stall every in-flight request
    meanwhile: ~0.2 s a dozen times per 1,000 seeds. Young collections come 10x less often.
    Measured at 1,000 seeds, 64 in flight: 2.1 s of collections -> 0.9 s, longest stall
    0.2 s -> 0.08 s. Frozen objects are still freed by reference counting; only cycles among
    them (garbage already, or garbage later) wait for the unfreeze at the end. A chain inside
    a chain leaves the outer one's settings be.
    """
    if gc.get_freeze_count():
        yield
        return
    thresholds = gc.get_threshold()
    gc.freeze()  # no collection first: one walks the whole heap (in a test process, ~0.5 s a chain)
    gc.set_threshold(max(thresholds[0], _YOUNG_COLLECTION_EVERY), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _pull(source) -> int | None:
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return None


async def shard_range(count: int):
    """The shard indices of an input whose shards all exist already."""
    for index in range(count):
        yield index
