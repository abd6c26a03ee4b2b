"""Measure how close `trace-build plan` comes to what the run then asks, against the local scripted server.

    python scripts/bench_plan.py --train-rows 400 --eval-rows 80 --limit 300 --pilot 40 [--model-like] [--max-seeds N]

For each case (a target-size run, and a plain run of --limit seeds) it plans in one folder,
runs the same config in a second folder with an empty cache (what a run asks from scratch),
then runs it in the plan's folder (the pilot's answers reused from its cache). Prints, as JSON,
the plan's and the run's requests and completion tokens and the relative errors, and how many
of the run's answers came from the pilot. The server (its own process) answers each constraint
with probability --mark-rate, so yields fall with the constraint count as they do in practice;
--model-like makes it a weak model behind a lax server (ScriptedResponder.model_like: low yields
falling faster with the count, lists one off, refusals). Also compared: the final rows per dataset
the plan projected (`projected`) against those the run built, and the seeds it said the target needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from rich.console import Console

from trace_builder.config import DEFAULT_PILOT, PILOT_PRECISION, RunConfig
from trace_builder.pipeline.plan import make_plan
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.run.store import StageStore
from trace_builder.testing.devserver import devserver_process, scripted_trace_config


def run_usage(run_dir: Path) -> dict[str, int]:
    """What the run asked the server, summed over its stages' manifests."""
    total = {"requests": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for name in STAGE_NAMES:
        usage = StageStore(run_dir, name).manifest.get("usage") or {}
        for key in total:
            total[key] += usage.get(key, 0)
    return total


def error(planned: float, actual: float) -> float | None:
    return round((planned - actual) / actual, 4) if actual else None


def bench_case(name: str, config: RunConfig, root: Path, pilot: int, precision: float, quiet: Console) -> dict:
    planned_dir, fresh_dir = root / f"{name}-planned", root / f"{name}-fresh"
    plan = asyncio.run(make_plan(config, planned_dir, pilot=pilot, precision=precision, console=quiet))
    asyncio.run(run_pipeline(config, fresh_dir, list(STAGE_NAMES), console=quiet))
    asyncio.run(run_pipeline(config, planned_dir, list(STAGE_NAMES), console=quiet))
    fresh, reused = run_usage(fresh_dir), run_usage(planned_dir)
    admitted = StageStore(fresh_dir, "taxonomy").rows_written()  # every seed row the run processed
    built = StageStore(fresh_dir, "filter").manifest.get("final_rows") or {}
    return {
        "rows": {
            name: {"plan": n, "run": built.get(name, 0), "error": error(n, built.get(name, 0))}
            for name, n in plan["projected"].items()
        },
        "seeds_needed": plan.get("seeds_needed"),
        "short_ranges": plan.get("short_ranges"),
        "seed_budget": plan.get("seed_budget"),
        "case": name,
        "settings": config.describe(),
        "pilot_seeds": plan["pilot"]["seeds"],
        "pilot_wall_seconds": plan["pilot"]["wall_seconds"],
        "plan_relative_sd": plan["relative_sd"],
        "seeds": {"plan": plan["seeds"], "run": admitted, "error": error(plan["seeds"], admitted)},
        **{
            metric: {"plan": plan[metric], "run": fresh[metric], "error": error(plan[metric], fresh[metric])}
            for metric in ("requests", "completion_tokens", "prompt_tokens")
        },
        "run_after_plan": {"requests": reused["requests"], "answered_from_pilot_cache": reused["cache_hits"]},
        "pilot_requests": plan["pilot"]["requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--eval-rows", type=int, default=80)
    parser.add_argument("--limit", type=int, default=300, help="seeds of the plain-run case")
    parser.add_argument("--pilot", type=int, default=DEFAULT_PILOT, help="the pilot's first size")
    parser.add_argument("--precision", type=float, default=PILOT_PRECISION, help="plan --precision (1: a fixed pilot)")
    parser.add_argument("--mark-rate", type=float, default=0.9)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-like", action="store_true", help="a weak model behind a lax server")
    parser.add_argument("--max-seeds", type=int, default=None, help="the target case's seed budget")
    parser.add_argument("--cases", default="target,plain")
    args = parser.parse_args()

    quiet = Console(stderr=True, quiet=True)
    results = []
    server = devserver_process(mark_rate=args.mark_rate, model_like=args.model_like)
    with server as base_url, tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            config = scripted_trace_config(base_url, args.concurrency)
            config.seed = args.seed
            config.shard_size = 64
            if name == "target":
                config.target.train_rows, config.target.eval_rows = args.train_rows, args.eval_rows
                config.target.max_seeds = args.max_seeds
            else:
                config.seeds.limit, config.filter.eval_size = args.limit, 20
            results.append(bench_case(name, config, Path(tmp), args.pilot, args.precision, quiet))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
