"""Benchmark batch mode against the scripted server's Batch API double: waves, requests per wave, wall time.

    python scripts/bench_batch.py --seeds 1000 --wave-size 2000
    python scripts/bench_batch.py --seeds 1000 --wave-size 300 --min-wave 50 --sampled

One devserver (`python -m trace_builder.testing.devserver`) runs in its own process. The
pipeline runs in-process in batch mode through every stage that asks the LLM (the trace
profile's settings, as scripts/bench_pipeline.py sets them), then, with --direct, again in
direct mode on a fresh server with --latency per answer, for the same rows. The double moves a
batch one status per poll (validating -> in_progress -> finalizing -> completed), so a wave's
turnaround here is the polls' backoff (--poll-start, doubling up to --poll-max) plus the quiet
period (--quiet): what is measured is the shape of the run (waves, requests per wave, the share
batched), and the wall time against a provider that answers a batch at once; a real provider's
turnaround (minutes to 24 h a wave) multiplies the number of waves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_pipeline import pipeline_config, write_seeds
from rich.console import Console

from trace_builder.pipeline.runner import run_pipeline
from trace_builder.report.status import run_usage_by_task
from trace_builder.testing.devserver import devserver_process

STAGES = ["seeds", "taxonomy", "expand", "respond", "perturb", "filter"]


def stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/v1/_stats") as response:
        return json.loads(response.read())


def run(config, out: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = asyncio.run(run_pipeline(config, out, STAGES, fresh=True, console=Console(stderr=True, quiet=True)))
    elapsed = time.perf_counter() - started
    usage: dict[str, int] = {}
    for task in run_usage_by_task(out).values():
        for key, value in task.items():
            usage[key] = usage.get(key, 0) + value
    return elapsed, {"rows": summary.final_rows, **usage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--wave-size", type=int, default=2000)
    parser.add_argument("--min-wave", type=int, default=100)
    parser.add_argument("--quiet", type=float, default=0.2, help="batch.quiet_s")
    parser.add_argument("--poll-start", type=float, default=0.05)
    parser.add_argument("--poll-max", type=float, default=0.4)
    parser.add_argument("--concurrency", type=int, default=64, help="direct requests in flight")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--sampled", action="store_true", help="temperature 0.7, rejection sampling (bench_pipeline)")
    parser.add_argument("--mark-rate", type=float, default=0.85, help="with --sampled")
    parser.add_argument("--direct", action="store_true", help="also run in direct mode, for comparison")
    parser.add_argument("--latency", type=float, default=0.5, help="with --direct: seconds per direct answer")
    args = parser.parse_args()
    rate = {"mark_rate": args.mark_rate} if args.sampled else {}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = work / "seeds.jsonl"
        write_seeds(seeds, args.seeds)
        with devserver_process(**rate) as base_url:
            config = pipeline_config(args, base_url, seeds)
            config.backend.batch = True
            config.batch = config.batch.model_copy(
                update=dict(
                    wave_size=args.wave_size,
                    min_wave=args.min_wave,
                    quiet_s=args.quiet,
                    poll_start_s=args.poll_start,
                    poll_max_s=args.poll_max,
                )
            )
            elapsed, usage = run(config, work / "batch")
            served = stats(base_url)
        sizes = served["batch_sizes"]
        direct = served["requests"] - served["batch_lines"]
        print(
            f"batch   {args.seeds} seeds, wave_size {args.wave_size}, min_wave {args.min_wave}, quiet {args.quiet} s, "
            f"polls {args.poll_start}..{args.poll_max} s: final {usage['rows']}"
        )
        print(
            f"        {usage['requests']:,} requests: {usage['batched']:,} through {len(sizes)} batches "
            f"({usage['batched'] / max(usage['requests'], 1):.1%}), {direct:,} direct; lines repeated: "
            f"{len(served['batch_lines_repeated'])}"
        )
        print(
            f"        requests per batch: mean {sum(sizes) / max(len(sizes), 1):,.0f}, max {max(sizes, default=0):,}, "
            f"min {min(sizes, default=0):,}; first ten: {sizes[:10]}"
        )
        print(f"        wall {elapsed:.1f} s ({elapsed / max(len(sizes), 1):.2f} s per batch wave)")
        if args.direct:
            with devserver_process(latency=args.latency, **rate) as base_url:
                elapsed, usage = run(pipeline_config(args, base_url, seeds), work / "direct")
            print(
                f"direct  {usage['requests']:,} requests at {args.concurrency} in flight, {args.latency} s each: "
                f"wall {elapsed:.1f} s, final {usage['rows']}"
            )


if __name__ == "__main__":
    main()
