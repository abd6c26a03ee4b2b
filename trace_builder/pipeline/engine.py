"""Run a row-wise async stage shard by shard, with rows of many shards in flight at once.

Every row moves through its own sub-steps as soon as its previous answer arrives; there is
no barrier between sub-steps or between shards, so the backend always has work. A shard
is written (atomically) the moment its last row is done, and never redone.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from trace_builder.errors import LLMError
from trace_builder.store import StageStore, shard_name

Row = dict
RowStep = Callable[[Row], Awaitable[Row]]


def read_shard_rows(store: StageStore, index: int) -> list[Row]:
    # pyarrow gives plain Python lists for list columns (pandas would give numpy arrays).
    return pq.read_table(store.dir / shard_name(index)).to_pylist()


def extend_schema(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    """`schema` plus `fields`; a field of the same name is replaced, keeping its position."""
    new = {f.name: f for f in fields}
    kept = [new.pop(f.name, f) for f in schema]
    return pa.schema(kept + list(new.values()))


def fail(row: Row, stage: str, reason: str, detail: str = "") -> Row:
    row.update(status="failed", reason=reason, failed_stage=stage, failure_detail=detail[:300])
    return row


async def guarded(step: RowStep, row: Row, stage: str) -> Row:
    """Apply `step` to a live row; a row that failed upstream passes through untouched.

    An LLMError (after the backend's retries) fails the row with its reason: rows are never
    dropped silently. Anything else (a UserError such as a rejected API key) stops the run.
    """
    if row.get("status") != "ok":
        return row
    try:
        return await step(row)
    except LLMError as exc:
        return fail(row, stage, exc.reason, exc.detail)


async def run_row_stage(
    source: StageStore,
    target: StageStore,
    step: RowStep,
    schema: pa.Schema,
    *,
    total_shards: int,
    max_rows_in_flight: int,
    input_ready: Callable[[int], Awaitable[None]],
    on_row_done: Callable[[Row], None] = lambda row: None,
    on_shard_written: Callable[[int], None] = lambda index: None,
) -> None:
    """Map `step` over every row of `source`'s shards not yet in `target`.

    `input_ready(i)` returns once source shard i exists: the source stage may still be
    running, so stages stream into each other shard by shard instead of waiting.
    """
    todo = [i for i in range(total_shards) if i not in target.done_shards()]
    slots = asyncio.Semaphore(max_rows_in_flight)

    async def one_row(row: Row) -> Row:
        try:
            result = await guarded(step, row, target.stage)
        finally:
            slots.release()
        on_row_done(result)
        return result

    async def one_shard(index: int, tasks: list[asyncio.Task]) -> None:
        rows = await asyncio.gather(*tasks)
        target.write_shard(index, pa.Table.from_pylist(rows, schema=schema))
        on_shard_written(index)

    shard_tasks: list[asyncio.Task] = []
    live_rows: set[asyncio.Task] = set()
    try:
        for index in todo:
            await input_ready(index)
            row_tasks = []
            for row in read_shard_rows(source, index):
                await slots.acquire()  # bounded memory: at most this many rows alive
                task = asyncio.create_task(one_row(row))
                live_rows.add(task)
                task.add_done_callback(live_rows.discard)
                row_tasks.append(task)
            shard_tasks.append(asyncio.create_task(one_shard(index, row_tasks)))
            # Surface a fatal error (e.g. a rejected key) without waiting for the whole input.
            for task in shard_tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
        await asyncio.gather(*shard_tasks)
    finally:
        # On a fatal error, stop the rest; shards already written stay written.
        for task in [*shard_tasks, *live_rows]:
            task.cancel()
