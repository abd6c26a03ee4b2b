"""Benchmark the pipeline against a latency-simulating OpenAI-compatible server.

    python scripts/bench_pipeline.py --seeds 600 --latency 0.5 --concurrency 64
    python scripts/bench_pipeline.py --seeds 300 --latency 0

The server runs in its own process (so it does not share the GIL with the pipeline). Prints
requests, elapsed vs. the ideal N x latency / concurrency (efficiency), requests/s, peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trace_builder.config import RunConfig
from trace_builder.inspect_data import check_share
from trace_builder.store import read_parquet_dir
from trace_builder.pipeline.runner import run_pipeline


def write_seeds(path: Path, count: int) -> None:
    topics = ["rivers", "bridges", "tea", "chess", "volcanoes", "jazz", "bees", "satellites", "bread", "glaciers"]
    with path.open("w") as handle:
        for i in range(count):
            text = f"Write a short explainer about {topics[i % len(topics)]} for reader group {i}."
            handle.write(json.dumps({"text": text, "language": "en", "domain": topics[i % len(topics)]}) + "\n")


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trace_builder.testing.devserver", "--latency", str(latency)], stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def server_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/_stats", timeout=10) as response:
        return json.loads(response.read())["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()

    proc, base_url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            seeds = Path(tmp) / "seeds.jsonl"
            write_seeds(seeds, args.seeds)
            config = RunConfig.model_validate(
                {
                    "shard_size": args.shard_size,
                    "backend": {"kind": "openai", "model": "scripted", "base_urls": [base_url], "concurrency": args.concurrency},
                    "generation": {"temperature": 0.0},
                    "seeds": {"source": str(seeds), "languages": ["en"]},
                    "filter": {"eval_size": 10, "train_size": None},
                }
            )
            started = time.perf_counter()
            asyncio.run(run_pipeline(config, Path(tmp) / "run", ["seeds", "taxonomy", "expand", "respond", "perturb", "filter"]))
            elapsed = time.perf_counter() - started
            requests = server_requests(base_url)
            coverage = check_share(read_parquet_dir(Path(tmp) / "run" / "expand"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ideal = requests * args.latency / args.concurrency
    print(f"requests      {requests}")
    print(f"concurrency   {args.concurrency}")
    print(f"latency       {args.latency:.3f} s")
    print(f"elapsed       {elapsed:.2f} s")
    if args.latency:
        print(f"ideal         {ideal:.2f} s  (N x latency / concurrency)")
        print(f"efficiency    {ideal / elapsed:.3f}")
    print(f"requests/s    {requests / elapsed:.1f}")
    print(f"per request   {1000 * elapsed / requests:.3f} ms of wall time")
    print(f"peak RSS      {peak_rss_mb:.0f} MiB")
    print("constraints carrying a deterministic check, by dimension (scripted structure answers):")
    for dimension, share in coverage.items():
        print(f"  {dimension:<28} {share}")


if __name__ == "__main__":
    main()
