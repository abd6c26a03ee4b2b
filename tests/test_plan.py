"""`trace-build plan`: the pilot's measurements, the projection, and its error against the run it plans."""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import write_config
from trace_builder.cli import app
from trace_builder.config import PricesConfig, load_config
from trace_builder.llm.base import ChatResult
from trace_builder.llm.client import ROW_PROGRESS, RowProgress, RowSchedule
from trace_builder.pipeline.plan import Meter, fit_line, make_plan, project, run_rows_by_count
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
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
        # A pilot of 20 rows samples too few to tell 15% apart: its own error came to -14.5% on
        # requests and -15.3% on tokens once the sentence rule changed which answers pass. Since eval
        # rows get no pairs, perturb is fitted on the pilot's train rows alone: 30 gave -15.4%, 40 -7.4%.
        plan = asyncio.run(make_plan(cfg, planned, pilot=40, console=QUIET))
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
