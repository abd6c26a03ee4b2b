"""`trace-build plan`: the pilot's measurements, the projection, and its error against the run it plans."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import write_config
from trace_builder.cli import app
from trace_builder.config import PricesConfig, load_config
from trace_builder.llm.base import ChatResult
from trace_builder.llm.client import ROW_PROGRESS, RowProgress, RowSchedule
from trace_builder.pipeline.admission import rows_needed
from trace_builder.pipeline.plan import (
    Meter,
    fit_line,
    forecast_admission,
    grown_pilot,
    make_plan,
    pair_rate,
    project,
    projected_rows,
    run_rows_by_count,
    short_ranges,
)
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.report.status import per_train_row
from trace_builder.run.store import StageStore
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import ScriptedResponder

QUIET = Console(quiet=True)


def asked(run_dir) -> dict[str, int]:
    """What a run asked the server, over every stage."""
    total = {"requests": 0, "completion_tokens": 0, "cache_hits": 0}
    for name in STAGE_NAMES:
        usage = StageStore(run_dir, name).manifest.get("usage") or {}
        for key in total:
            total[key] += usage.get(key, 0)
    return total


def test_fit_line_is_least_squares_and_flat_without_spread():
    a, b = fit_line([(1, 3, 1), (2, 5, 1), (3, 7, 1)])
    assert (round(a, 6), round(b, 6)) == (1.0, 2.0)
    assert fit_line([(4, 2, 1), (4, 6, 1)]) == (4.0, 0.0)
    assert fit_line([]) == (0.0, 0.0)


def test_meter_counts_per_row_and_stage():
    meter = Meter()
    schedule = RowSchedule()

    async def ask(order: int, stage: int):
        ROW_PROGRESS.set(RowProgress(schedule, order=order, stage=stage))
        meter.count(ChatResult("x", prompt_tokens=10, completion_tokens=3))

    async def main():
        await asyncio.gather(ask(0, 1), ask(0, 1), ask(1, 2))

    asyncio.run(main())
    meter.count(ChatResult("y", prompt_tokens=1, completion_tokens=1))  # no row: seed synthesis
    assert meter.costs[(0, "expand")] == {"requests": 2, "prompt_tokens": 20, "completion_tokens": 6}
    assert meter.costs[(1, "respond")]["requests"] == 1
    assert meter.costs[(None, "seeds")]["requests"] == 1


def test_the_pilot_grows_as_the_square_of_its_spread_within_what_the_run_has():
    assert grown_pilot(40, 0.04, 0.05, 500) == 40  # precise enough already
    assert grown_pilot(40, None, 0.05, 500) == 40  # nothing to measure the spread on
    assert grown_pilot(40, 0.15, 0.05, 500) == 360  # 40 x (0.15 / 0.05)^2
    assert grown_pilot(40, 0.055, 0.05, 500) == 60  # at least half as large again
    assert grown_pilot(40, 0.15, 0.05, 100) == 100  # no more rows than the run's first ones
    assert grown_pilot(40, 0.15, 0.0, 100) == 100
    assert grown_pilot(900, 0.15, 0.05, 5000) == 1000  # MAX_PILOT


def _target_measures(usable_per_row: float, fall_per_constraint: float = 0.0) -> dict:
    """A pilot whose rows are usable at `usable_per_row`, less `fall_per_constraint` per constraint."""
    admitted = {c: 100 for c in range(1, 16)}
    usable = {c: (usable_per_row - fall_per_constraint * (c - 1)) * n for c, n in admitted.items()}
    return {"admitted_by_count": admitted, "usable_by_count": usable}


def test_forecast_plays_admissions_rounds_forward():
    config = load_config(profile="trace", backend_kind="openai")
    config.target.train_rows, config.target.eval_rows = 300, 40
    need = rows_needed(config)
    # Every row usable: the first round admits exactly the quotas and meets them.
    every = forecast_admission(config, _target_measures(1.0), math.inf)
    assert every["admitted"] == every["usable"] == {k: float(n) for k, n in need.items()}
    # Half of them: rounds sized on partial yields overshoot need / yield, a little, and a forecast repeats.
    half = forecast_admission(config, _target_measures(0.5), math.inf)
    ideal = sum(need.values()) / 0.5
    assert ideal < sum(half["admitted"].values()) < 1.15 * ideal
    assert all(half["usable"][key] >= n for key, n in need.items())
    assert half == forecast_admission(config, _target_measures(0.5), math.inf)
    # Within a budget the rounds stop where it is spent, with about half as many usable rows.
    short = forecast_admission(config, _target_measures(0.5), 500)
    assert sum(short["admitted"].values()) == 500
    config.target.max_seeds = None  # the default budget, four seeds per row, meets it
    assert short_ranges(config, _target_measures(0.5)) == {}
    assert abs(sum(short["usable"].values()) - 250) < 10


def test_a_short_budget_projects_the_rows_the_filter_keeps_in_tracess_shape():
    config = load_config(profile="trace", backend_kind="openai")
    config.target.train_rows, config.target.eval_rows, config.target.max_seeds = 300, 40, 400
    # Yields fall with the count: the budget runs out with the high counts short, the low ones met.
    pairs = {"dpo": {c: [10, 10] for c in range(1, 16)}, "iopo": {c: [5, 10] for c in range(1, 16)}}
    measures = {**_target_measures(0.9, 0.05), "pairs_by_count": pairs}
    usable = forecast_admission(config, measures, 400)["usable"]
    projected = projected_rows(config, measures, {})
    # Fewer rows than the usable ones: the counts that filled up are trimmed to keep the shape.
    assert 0 < projected["sft"] < sum(n for (side, _), n in usable.items() if side == "train") < 300
    # Half the usable rows make an IOPO group, and the trim takes rows with a group first: more than
    # half the kept rows have one, never more than the usable rows that made one.
    usable_train = sum(n for (side, _), n in usable.items() if side == "train")
    assert projected["sft"] * 0.5 < projected["iopo"] <= usable_train * 0.5 + 1
    assert projected["dpo"] == projected["sft"]  # every row made a DPO pair
    # How far that size varies from run to run is said; a target the budget meets varies not at all.
    low, high = short_ranges(config, measures)["sft"]
    assert low <= projected["sft"] <= high < 300
    config.target.on_shortfall = "keep_rows"
    assert projected_rows(config, {**measures}, {})["sft"] > projected["sft"]


def test_pair_rates_are_a_line_in_the_count():
    # IOPO groups hold for 9 rows in 10 at 2 constraints and 5 in 10 at 6: a line in the count.
    rate = pair_rate({"pairs_by_count": {"iopo": {2: [9, 10], 6: [5, 10]}}}, "iopo")
    assert rate(2) == pytest.approx(0.9) and rate(4) == pytest.approx(0.7) and rate(6) == pytest.approx(0.5)
    assert rate(12) == 0.0 and rate(-20) == 1.0  # the line ends at 0 and 1


def test_a_growing_pilot_measures_each_row_once(tmp_path):
    # Answers that fail constraints at random make rows cost differently: a spread to grow on.
    with ScriptedServer(ScriptedResponder(mark_rate=0.7)) as server:
        cfg = load_config(write_config(tmp_path / "c.yaml", server.base_url, limit=8))
        grown = asyncio.run(make_plan(cfg, tmp_path / "grown", pilot=4, precision=0.0, console=QUIET))
        whole = asyncio.run(make_plan(cfg, tmp_path / "whole", pilot=8, precision=1.0, console=QUIET))
    assert grown["pilot"]["seeds"] == whole["pilot"]["seeds"] == 8
    for metric in ("requests", "prompt_tokens", "completion_tokens"):
        assert grown["pilot"][metric] == whole["pilot"][metric] > 0
        assert grown[metric] == whole[metric]
    assert grown["pilot"]["answers_from_earlier_sessions"] == 0


def test_projection_scales_fitted_costs_over_the_runs_rows(tmp_path):
    config = load_config(profile="trace", backend_kind="openai")
    config.target.train_rows, config.target.eval_rows = 100, 0
    config.target.margin = 0.0
    config.prices = PricesConfig(input_per_million=1.0, output_per_million=2.0)
    # Two pilot rows: 2 and 4 constraints; respond asks 2 + count requests; every row is usable.
    measures = {
        "rows": 2,
        "counts": [2, 4],
        "costs": {
            (0, "respond"): {"requests": 4, "prompt_tokens": 400, "completion_tokens": 40},
            (1, "respond"): {"requests": 6, "prompt_tokens": 600, "completion_tokens": 60},
        },
        "admitted_by_count": {2: 1, 4: 1},
        "usable_by_count": {2: 1, 4: 1},
    }
    rows = run_rows_by_count(config, measures)
    assert round(sum(rows.values())) == 100  # yield 1: one seed per wanted row
    plan = project(config, measures, rows, latency_s=0.5)
    mean_requests = sum(n * (2 + c) for c, n in rows.items())
    assert plan["requests"] == round(mean_requests)
    assert plan["stages"]["respond"]["requests_per_seed"] == 5.0
    assert plan["cost_usd"] == round((plan["prompt_tokens"] + 2 * plan["completion_tokens"]) / 1e6, 4)
    assert plan["wall_seconds"] > plan["requests"] * 0.5 / config.backend.concurrency


@pytest.mark.parametrize(
    "size",
    [
        pytest.param({"limit": 60}, id="plain"),
        pytest.param({"limit": 200, "target": "{train_rows: 50, eval_rows: 10}"}, id="target", marks=pytest.mark.slow),
    ],
)
def test_plan_is_within_15_percent_of_the_run_and_its_answers_are_reused(tmp_path, size):
    with ScriptedServer(ScriptedResponder(mark_rate=0.9)) as server:
        cfg = load_config(write_config(tmp_path / "c.yaml", server.base_url, concurrency=16, **size))
        planned, fresh = tmp_path / "planned", tmp_path / "fresh"
        # The pilot starts at 40 rows and grows towards --precision (5%) within the run's first rows;
        # the target case's forecast plays admission's rounds forward (its small quotas overshoot).
        plan = asyncio.run(make_plan(cfg, planned, console=QUIET))
        asyncio.run(run_pipeline(cfg, fresh, list(STAGE_NAMES), console=QUIET))
        asyncio.run(run_pipeline(cfg, planned, list(STAGE_NAMES), console=QUIET))
    run, after_plan = asked(fresh), asked(planned)
    if not cfg.target.enabled:
        assert plan["seeds"] == 60
    for metric in ("requests", "completion_tokens"):
        assert abs(plan[metric] - run[metric]) / run[metric] < 0.15, (metric, plan[metric], run[metric])
    # The pilot's answers stayed in the run's cache: the run did not ask them again.
    assert after_plan["requests"] + plan["pilot"]["requests"] == run["requests"]
    assert after_plan["cache_hits"] >= plan["pilot"]["requests"]


def test_plan_command_prints_json(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=8)
    out = tmp_path / "run"
    args = ["plan", "--config", cfg, "--out", str(out), "--pilot", "4", "--price-in", "2", "--price-out", "6", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    for key in ("seeds", "requests", "prompt_tokens", "completion_tokens", "wall_seconds", "cost_usd", "stages"):
        assert key in plan
    assert set(plan["projected"]) == {"sft", "dpo", "iopo", "eval"} and plan["projected"]["sft"] > 0
    assert plan["seeds"] == 8 and plan["cost_usd"] > 0
    assert set(plan["stages"]) >= {"expand", "respond", "perturb"}
    assert (out / "plan" / "plan.json").is_file()
    # A second plan answers its pilot from the cache and still measures the same requests.
    again = CliRunner().invoke(app, args)
    second = json.loads(again.stdout[again.stdout.index("{") :])
    assert second["pilot"]["answers_from_earlier_sessions"] == second["pilot"]["requests"] > 0
    assert second["requests"] == plan["requests"]


def test_a_run_after_its_plan_counts_the_pilots_answers_in_its_cost_per_row(tmp_path, scripted_server):
    cfg = load_config(write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=8))
    planned, fresh = tmp_path / "planned", tmp_path / "fresh"
    asyncio.run(make_plan(cfg, planned, pilot=4, precision=1.0, console=QUIET))
    asyncio.run(run_pipeline(cfg, planned, list(STAGE_NAMES), console=QUIET))
    asyncio.run(run_pipeline(cfg, fresh, list(STAGE_NAMES), console=QUIET))
    paid_here, with_cache = per_train_row(planned).split("; with the ")
    assert "answers the cache served" in with_cache
    # Counting the answers the pilot paid for, the planned run cost what the fresh one did.
    assert per_train_row(fresh).removeprefix("per kept train row: ").split(" (")[0] == with_cache.split(": ")[1]
    assert float(paid_here.split(": ")[1].split(" ")[0]) < float(with_cache.split(": ")[1].split(" ")[0])


def test_a_redone_shard_replays_the_runs_own_answers_without_counting_them_twice(tmp_path, scripted_server):
    cfg = load_config(write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=8))
    run = tmp_path / "run"
    asyncio.run(run_pipeline(cfg, run, list(STAGE_NAMES), console=QUIET))
    first = per_train_row(run)
    assert "cache served" not in first
    # A shard redone (as for a retryable row) is answered from the cache: what the run paid for already.
    StageStore(run, "respond").forget_shards({0})
    asyncio.run(run_pipeline(cfg, run, list(STAGE_NAMES), console=QUIET))
    assert StageStore(run, "respond").manifest["usage"]["cache_hits"] > 0
    assert per_train_row(run) == first
    # Rebuilt with --fresh, the stages' counts start again: the cache's answers were paid for before them.
    asyncio.run(run_pipeline(cfg, run, list(STAGE_NAMES), fresh=True, console=QUIET))
    paid_here, with_cache = per_train_row(run).split("; with the ")
    assert paid_here.startswith("per kept train row: 0.0 requests")
    assert first.removeprefix("per kept train row: ").split(" (")[0] == with_cache.split(": ")[1]
