"""Measure the RL rewards: checks per second on 1,000 completions, and whether a row's own answer out-earns bad ones.

    python scripts/bench_rewards.py [--seeds 300] [--completions 1000]

Builds a `trace`-profile run against the scripted server (its own process; realistic check
specs, TRACE's constraint counts), then scores `--completions` answers (the rows' own full-marks
answers, cycled) with `constraint_reward` in TRL's batch form, timed. Reports rewards per second,
and over the rows with a checkable constraint: the share where the row's own answer earns more
than an empty answer, and more than another row's answer; the share of rows and constraints
IFEval can state (the grpo export's open-instruct columns). The judge's reward is timed against
the same server (--judge-items), where its latency, not ours, sets the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.rewards import GROUND_TRUTH, JudgeReward, constraint_reward
from trace_builder.run.store import read_parquet_dir
from trace_builder.testing.devserver import devserver_process, scripted_trace_config
from trace_builder.train.data import grpo_records
from trace_builder.verify.ifeval import ifeval_ground_truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--completions", type=int, default=1000)
    parser.add_argument("--judge-items", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="the scripted judge's latency (s)")
    args = parser.parse_args()

    with devserver_process(latency=args.latency) as base_url, tempfile.TemporaryDirectory() as tmp:
        config = scripted_trace_config(base_url)
        config.seeds.limit = args.seeds
        run_dir = Path(tmp) / "run"
        asyncio.run(run_pipeline(config, run_dir, list(STAGE_NAMES)))
        rows = read_parquet_dir(run_dir / "final" / "sft").to_dict("records")
        records = grpo_records(rows, None)

        picked = [records[i % len(records)] for i in range(args.completions)]
        answers = [rows[i % len(rows)]["response"] for i in range(args.completions)]
        started = time.perf_counter()
        constraint_reward([r["prompt"] for r in picked], answers, **{GROUND_TRUTH: [r[GROUND_TRUTH] for r in picked]})
        elapsed = time.perf_counter() - started

        checkable = [i for i, row in enumerate(rows) if any(c for c in row["checks"])]
        prompts = [records[i]["prompt"] for i in checkable]
        truths = [records[i][GROUND_TRUTH] for i in checkable]
        own = constraint_reward(prompts, [rows[i]["response"] for i in checkable], **{GROUND_TRUTH: truths})
        empty = constraint_reward(prompts, [""] * len(checkable), **{GROUND_TRUTH: truths})
        other = [rows[checkable[(k + 1) % len(checkable)]]["response"] for k in range(len(checkable))]
        others = constraint_reward(prompts, other, **{GROUND_TRUTH: truths})

        judge = JudgeReward(config.backend)
        judged = [records[i % len(records)] for i in range(args.judge_items)]

        async def judge_all():
            return await judge(
                [r["prompt"] for r in judged],
                [rows[i % len(rows)]["response"] for i in range(args.judge_items)],
                **{GROUND_TRUTH: [r[GROUND_TRUTH] for r in judged]},
            )

        judge_started = time.perf_counter()
        judge_rewards = asyncio.run(judge_all())
        judge_elapsed = time.perf_counter() - judge_started

    constraints = sum(len(row["checks"]) for row in rows)
    checked = sum(1 for row in rows for c in row["checks"] if c)
    stated = [ifeval_ground_truth(row["checks"]) for row in rows]
    print(f"machine        {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"rows           {len(rows)} final sft rows, {constraints} constraints, {checked} with a check")
    print(
        f"checks reward  {args.completions} completions in {elapsed:.3f} s: "
        f"{args.completions / elapsed:,.0f} rewards/s ({1e3 * elapsed / args.completions:.2f} ms each)"
    )
    print(
        f"own answer     beats an empty one on {sum(a > b for a, b in zip(own, empty)) / len(own):.1%} of "
        f"{len(own)} checkable rows; beats another row's answer on "
        f"{sum(a > b for a, b in zip(own, others)) / len(own):.1%}, ties it on "
        f"{sum(a == b for a, b in zip(own, others)) / len(own):.1%}"
    )
    scored = [r for r in judge_rewards if r is not None]
    print(
        f"judge reward   {args.judge_items} completions in {judge_elapsed:.2f} s "
        f"({args.judge_items / judge_elapsed:.1f}/s at {args.latency} s latency, 64 in flight); "
        f"{len(scored)} had constraints without a check"
    )
    print(
        f"IFEval         {sum(s is not None for s in stated) / len(rows):.1%} of rows have a constraint IFEval "
        f"can state; {sum(len(s['instruction_id']) for s in stated if s)} instructions for {checked} checks"
    )


if __name__ == "__main__":
    main()
