"""Measure how TRACE-shaped a target-size run's data is, against a scripted server with realistic misses.

    python scripts/bench_fidelity.py --train-rows 500 --eval-rows 100 --mark-rate 0.9

The server (its own process) answers every JSON schema with a valid instance, and each answer
meets each constraint with probability --mark-rate (so the judge gives full marks to that share
of constraints); expand's quality check rejects about 1 in 11. The run uses profile `trace`
(TRACE's histograms, dimension weights, checks, 3 answer attempts). Prints the fidelity report:
TV distance of the final train / eval constraint-count histograms to TRACE's, the type mix
against TRACE's, the IOPO yield per operation, the share of scores decided by a check, and the
seeds it took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.report.fidelity import fidelity_report
from trace_builder.run.store import manifest_path, read_json
from trace_builder.testing.devserver import devserver_process, scripted_trace_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--eval-rows", type=int, default=100)
    parser.add_argument("--mark-rate", type=float, default=0.9)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temp folder)")
    args = parser.parse_args()

    with devserver_process(mark_rate=args.mark_rate) as base_url, tempfile.TemporaryDirectory() as tmp:
        run_dir = args.out or Path(tmp) / "run"
        config = scripted_trace_config(base_url, args.concurrency)
        config.shard_size = 64
        config.target.train_rows, config.target.eval_rows = args.train_rows, args.eval_rows
        started = time.perf_counter()
        asyncio.run(run_pipeline(config, run_dir, list(STAGE_NAMES)))
        elapsed = time.perf_counter() - started
        report = fidelity_report(run_dir)
        seeds = read_json(manifest_path(run_dir, "seeds"))
    report["seeds_admitted"] = seeds.get("admitted")
    report["rounds"] = len(seeds.get("rounds", []))
    report["yield_per_seed"] = round((args.train_rows + args.eval_rows) / max(seeds.get("admitted") or 1, 1), 3)
    report["elapsed_s"] = round(elapsed, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
