"""Rows that failed for a transient reason, and reopening their shards so that a plain rerun re-asks them.

A row fails for good only on its content (judge below 10, quality rejected, ...). A row that
failed because the server was down, slow, or gave an answer that did not validate is worth
asking again: on the next run its shard (in the stage that failed it, and every shard built
from it downstream) is marked not done, and redone. Rows that were fine come back from the
LLM cache unchanged; the failed ones are asked again (with another seed where an answer
failed validation: llm/client.py).
A shard is reopened at most `cap` times, so a rerun always ends.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trace_builder.llm.reasons import is_transient
from trace_builder.pipeline.failures import PIPELINE_SIDES, FailureSide
from trace_builder.run.store import StageStore, shard_name


def retryable_rows(store: StageStore, index: int, sides: tuple[FailureSide, ...] = PIPELINE_SIDES) -> int:
    """Rows of one shard that this stage failed for a transient reason (on any of `sides`)."""
    path = store.dir / shard_name(index)
    try:
        present = set(pq.read_schema(path).names)
        wanted = {c for side in sides for c in (side.status, side.reason) if c in present}
        wanted |= {"failed_stage"} & present
        table = pq.read_table(path, columns=sorted(wanted)).to_pydict()
    except (OSError, pa.ArrowException):
        return 0  # missing or damaged: redone anyway (StageStore.done_shards)
    rows = len(next(iter(table.values()), []))
    count = 0
    for row in range(rows):
        for side in sides:
            if side.status not in table or table[side.status][row] != side.failed:
                continue
            stage = side.stage or table.get("failed_stage", [None] * rows)[row]
            if stage == store.stage and is_transient(table[side.reason][row]):
                count += 1
                break
    return count


def retryable_by_shard(
    store: StageStore, verify: bool = True, sides: tuple[FailureSide, ...] = PIPELINE_SIDES
) -> dict[int, int]:
    """Shard index -> rows retryable in it, over the shards this stage has written (verified ones
    only, unless `verify` is False: `status` reads the manifest's word rather than every file)."""
    indices = store.done_shards() if verify else {int(key) for key in store.manifest["shards"]}
    found = {}
    for index in sorted(indices):
        if n := retryable_rows(store, index, sides):
            found[index] = n
    return found


def reopen_retryable(
    run_dir: Path,
    chain_stages: list[str],
    whole_after: list[str],
    cap: int,
    sides: tuple[FailureSide, ...] = PIPELINE_SIDES,
) -> int:
    """Reopen the shards holding retryable rows (reopened fewer than `cap` times); returns the rows.

    `chain_stages` are the row-wise stages in order: a shard reopened in one is reopened in
    every later one too (they were built from the failed rows). `whole_after` (the filter) is
    redone whenever anything is reopened.
    """
    reopened: set[int] = set()
    rows = 0
    for name in chain_stages:
        store = StageStore(run_dir, name)
        retries = store.manifest.setdefault("retries", {})
        mine = {}
        for index, n in retryable_by_shard(store, sides=sides).items():
            if retries.get(str(index), 0) < cap:
                mine[index] = n
        for index in mine:
            retries[str(index)] = retries.get(str(index), 0) + 1
        rows += sum(mine.values())
        todo = (reopened | set(mine)) & {int(k) for k in store.manifest["shards"]}
        reopened |= set(mine)
        if todo:
            store.forget_shards(todo)
    if reopened:
        for name in whole_after:
            store = StageStore(run_dir, name)
            if store.manifest["shards"]:
                store.forget_shards({int(k) for k in store.manifest["shards"]})
    return rows
