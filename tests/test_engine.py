"""The row engine: rows move to the next stage as they finish, shards stay atomic, memory stays bounded."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from trace_builder.errors import LLMError, UserError
from trace_builder.pipeline.engine import ChainStage, RowChain, shard_range
from trace_builder.pipeline.stage import Stage
from trace_builder.run.store import StageStore, read_parquet_dir

SOURCE = pa.schema([pa.field("n", pa.int64()), pa.field("status", pa.string()), pa.field("reason", pa.string())])


def _source(tmp_path, shards: int, size: int) -> StageStore:
    store = StageStore(tmp_path, "source")
    for index in range(shards):
        rows = [{"n": index * size + i, "status": "ok", "reason": ""} for i in range(size)]
        store.write_shard(index, pa.Table.from_pylist(rows, schema=SOURCE))
    store.manifest["total_shards"] = shards
    return store


def _run(source, chain, shards: int, **options) -> None:
    async def go():
        await RowChain(None, chain, source, **options).run(shard_range(shards))

    asyncio.run(go())


def _link(tmp_path, name: str, fn, column: str) -> ChainStage:
    stage = Stage(name=name, reads=None, settings=lambda c: {}, fields=(pa.field(column, pa.int64()),), row=fn)
    schema = pa.schema([*SOURCE, pa.field("failed_stage", pa.string()), pa.field("failure_detail", pa.string())])
    return ChainStage(stage, StageStore(tmp_path, name), pa.schema([*schema, *stage.fields]))


def test_a_row_reaches_the_next_stage_before_its_shard_is_done(tmp_path):
    async def scenario():
        slow_row_may_finish = asyncio.Event()
        second_stage_saw = []

        async def first(ctx, row):
            if row["n"] == 0:
                await slow_row_may_finish.wait()
            row["a"] = row["n"]
            return row

        async def second(ctx, row):
            second_stage_saw.append(row["n"])
            if row["n"] == 1:
                # Row 1 is in stage two while row 0 of the same shard is still in stage one.
                assert not (tmp_path / "one" / "part-00000.parquet").exists()
                slow_row_may_finish.set()
            row["b"] = row["n"] * 10
            return row

        source = _source(tmp_path, shards=2, size=4)
        chain = [_link(tmp_path, "one", first, "a"), _link(tmp_path, "two", second, "b")]
        done = []
        engine = RowChain(None, chain, source, max_rows_in_flight=16, window=4, on_shard_done=done.append)
        # An engine that hands over whole shards would deadlock here: bounded, it fails instead.
        await asyncio.wait_for(engine.run(shard_range(2)), timeout=10)
        return second_stage_saw, done

    seen, done = asyncio.run(scenario())
    assert seen[0] != 0 and sorted(seen) == list(range(8))
    assert sorted(done) == [0, 1]
    two = read_parquet_dir(tmp_path / "two")
    assert list(two["n"]) == list(range(8)) and list(two["b"]) == [n * 10 for n in range(8)]  # shard order kept
    assert "b" not in read_parquet_dir(tmp_path / "one")  # each stage's shard holds the row as it left that stage


def test_resume_starts_each_shard_at_its_first_missing_stage(tmp_path):
    calls = {"one": 0, "two": 0}

    def counting(name, column):
        async def fn(ctx, row):
            calls[name] += 1
            row[column] = row["n"]
            return row

        return fn

    source = _source(tmp_path, shards=3, size=2)
    one = _link(tmp_path, "one", counting("one", "a"), "a")
    _run(source, [one], 2, max_rows_in_flight=4, window=2)
    chain = [_link(tmp_path, "one", counting("one", "a"), "a"), _link(tmp_path, "two", counting("two", "b"), "b")]
    _run(source, chain, 3, max_rows_in_flight=4, window=2)
    assert calls == {"one": 6, "two": 6}  # shards 0-1 of stage one were not redone


def test_memory_is_bounded_by_rows_in_flight_and_open_shards(tmp_path):
    alive = peak = 0

    async def step(ctx, row):
        nonlocal alive, peak
        alive += 1
        peak = max(peak, alive)
        await asyncio.sleep(0.001)
        alive -= 1
        row["a"] = 1
        return row

    source = _source(tmp_path, shards=20, size=5)
    _run(source, [_link(tmp_path, "one", step, "a")], 20, max_rows_in_flight=7, window=3)
    assert peak <= 7 and len(read_parquet_dir(tmp_path / "one")) == 100


def test_llm_errors_fail_rows_and_fatal_errors_stop_the_run(tmp_path):
    async def flaky(ctx, row):
        if row["n"] % 3 == 0:
            raise LLMError("timeout", "scripted")
        row["a"] = 1
        return row

    source = _source(tmp_path, shards=2, size=3)
    _run(source, [_link(tmp_path, "one", flaky, "a")], 2, max_rows_in_flight=4, window=2)
    rows = read_parquet_dir(tmp_path / "one")
    assert list(rows.loc[rows["status"] != "ok", "reason"]) == ["timeout", "timeout"]

    async def fatal(ctx, row):
        raise UserError("the server rejected the API key")

    with pytest.raises(UserError, match="API key"):
        _run(source, [_link(tmp_path, "two", fatal, "a")], 2, max_rows_in_flight=4, window=2)
    assert not (tmp_path / "two" / "part-00000.parquet").exists()


def test_the_collector_leaves_the_startup_heap_alone_while_rows_run_and_is_restored(tmp_path):
    import gc

    before = gc.get_threshold()
    seen = []

    async def step(ctx, row):
        seen.append((gc.get_freeze_count() > 0, gc.get_threshold()[0]))
        row["a"] = row["n"]
        return row

    _run(_source(tmp_path, shards=2, size=3), [_link(tmp_path, "one", step, "a")], 2, max_rows_in_flight=4, window=2)
    assert seen and all(frozen and young >= 7000 for frozen, young in seen)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_the_shard_is_settled_when_its_rows_pass_the_last_stage_that_can_fail_them(tmp_path):
    async def scenario():
        settled = asyncio.Event()

        async def judged(ctx, row):
            row["a"] = row["n"]
            return row

        async def paired(ctx, row):  # like perturb: waits here until the source has heard
            await settled.wait()
            row["b"] = row["n"]
            return row

        first = _link(tmp_path, "one", judged, "a")
        second = _link(tmp_path, "two", paired, "b")
        second = ChainStage(
            Stage(
                name="two", reads=None, settings=lambda c: {}, fields=second.stage.fields, row=paired, fails_rows=False
            ),
            second.store,
            second.schema,
        )
        heard = []

        def done(index):
            heard.append((index, (tmp_path / "two" / "part-00000.parquet").exists()))
            settled.set()

        engine = RowChain(
            None, [first, second], _source(tmp_path, 1, 3), max_rows_in_flight=8, window=2, on_shard_done=done
        )
        await asyncio.wait_for(engine.run(shard_range(1)), timeout=10)  # heard only after "two": a deadlock
        return heard

    assert asyncio.run(scenario()) == [(0, False)]
    assert list(read_parquet_dir(tmp_path / "two")["b"]) == [0, 1, 2]


def test_perturb_never_fails_a_row_whatever_its_requests_meet(tmp_path):
    from trace_builder.config import load_config
    from trace_builder.llm.client import LLMClient
    from trace_builder.pipeline.context import StageContext
    from trace_builder.pipeline.engine import guarded
    from trace_builder.pipeline.perturb import STAGE as PERTURB

    class Down:  # every request fails for good (after the backend's retries)
        model = "down"

        async def complete(self, request):
            raise LLMError("server_error", "HTTP 500")

        async def aclose(self):
            pass

    row = {
        "id": "r1", "language": "en", "split": "train", "status": "ok", "description": "Describe tea.",
        "input": "None", "prompt": "Describe tea.\n1. Use three sentences.", "response": "Tea is a drink.",
        "constraints": ["Use three sentences."], "dimensions": ["length"], "checks": [None], "judgement": [],
    }  # fmt: skip
    ctx = StageContext(load_config(profile="trace"), tmp_path, LLMClient(Down()))
    out = asyncio.run(guarded(PERTURB.row, ctx, dict(row), "perturb"))
    assert out["status"] == "ok" and out["dpo_status"] == "failed" and out["iopo_status"] == "failed"
    assert not PERTURB.fails_rows  # what admission relies on to plan before rows reach it


def test_waiting_requests_go_furthest_behind_first_within_a_wave_and_across_all_once_rows_drain():
    from trace_builder.llm.client import PrioritySlots, RowProgress, RowSchedule

    schedule = RowSchedule(wave=4)
    rows = {  # name: (admission order, stage, answers in that stage)
        "old wave, perturb": (1, 3, 2),
        "old wave, respond, 2 answers": (2, 2, 2),
        "old wave, respond, 1 answer": (3, 2, 1),
        "new wave, expand": (5, 1, 0),
        "no row": None,
    }

    async def served_order(draining: bool) -> list[str]:
        schedule.drain(draining)
        slots, served = PrioritySlots(1), []
        await slots.acquire()  # the one slot is taken: everyone below waits

        async def ask(name):
            spec = rows[name]
            progress = RowProgress(schedule, order=spec[0], stage=spec[1], requests=spec[2]) if spec else None
            await slots.acquire(progress)
            served.append(name)
            slots.release()

        waiting = [asyncio.create_task(ask(name)) for name in rows]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*waiting)
        return served

    # While rows are admitted, the older wave goes first, and within it the row furthest behind.
    assert asyncio.run(served_order(draining=False)) == [
        "no row",
        "old wave, respond, 1 answer",
        "old wave, respond, 2 answers",
        "old wave, perturb",
        "new wave, expand",
    ]
    # Once no more rows come, the rows alive are one wave.
    assert asyncio.run(served_order(draining=True)) == [
        "no row",
        "new wave, expand",
        "old wave, respond, 1 answer",
        "old wave, respond, 2 answers",
        "old wave, perturb",
    ]
