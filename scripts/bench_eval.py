#!/usr/bin/env python
"""Benchmark `trace-build eval` plumbing: the official 1,042 items against a latency-simulating server.

The model under test and the judge are scripted OpenAI-compatible servers on 127.0.0.1
(trace_builder.testing.devserver) that wait `--latency` seconds per request, so the numbers show
how well the runner keeps `--concurrency` requests in flight, not how fast a model is.
Each server runs in its own process, so that it does not share the runner's GIL.

    python scripts/bench_eval.py --data ../shared/data/trace_eval_official.jsonl --latency 0.5 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from trace_builder.evaluate.runner import evaluate_path
from trace_builder.evaluate.settings import EvalConfig
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import instance


def responder(task: str, body: dict) -> str:
    """Answers echo the task line; the judge gives 10 to two constraints out of three."""
    user = body["messages"][-1]["content"]
    if task == "eval.generate":
        return "An answer to: " + user.splitlines()[0][:200]
    if task == "probe":  # the client's structured-output probe: any answer its schema accepts
        return json.dumps(instance(body["response_format"]["json_schema"]["schema"]))
    count = body["response_format"]["json_schema"]["schema"]["properties"]["scores"]["minItems"]
    scores = [{"index": i, "reason": "scripted", "score": 10 if i % 3 else 6} for i in range(1, count + 1)]
    return json.dumps({"scores": scores})


def _serve(latency: float, model: str, conn) -> None:
    with ScriptedServer(responder, latency_s=latency, model=model) as server:
        conn.send(server.base_url)
        conn.recv()  # until the parent says stop


@contextlib.contextmanager
def server_process(latency: float, model: str) -> Iterator[str]:
    """A scripted server in a child process; yields its base URL."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(latency, model, child), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the scripted server process did not start within 30 s")
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(10)


def served_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/_stats", timeout=10) as response:
        return json.loads(response.read())["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/trace_eval_official.jsonl")
    )
    parser.add_argument("--latency", type=float, default=0.5, help="seconds each request takes on the server")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=None, help="eval folder (default: a temp dir, removed afterwards)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    with (
        server_process(args.latency, "scripted") as model_url,
        server_process(args.latency, "scripted-judge") as judge_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(args.out or Path(tmp) / "eval")
        backend = {"kind": "openai", "concurrency": args.concurrency, "timeout_s": 60}
        config = EvalConfig.model_validate(
            {
                "model": dict(backend, model="scripted", base_urls=[model_url]),
                "judge": dict(backend, model="scripted-judge", base_urls=[judge_url]),
                "limit": args.limit,
            }
        )
        started = time.perf_counter()
        outcome = asyncio.run(evaluate_path(args.data, out, config, show_progress=not args.no_progress))
        total_s = time.perf_counter() - started
        resumed_started = time.perf_counter()
        asyncio.run(evaluate_path(args.data, out, config, show_progress=False))
        resume_s = time.perf_counter() - resumed_started
        served = served_requests(model_url) + served_requests(judge_url)

    stats, items = outcome.stats, outcome.metrics["items"]
    # Model and judge each keep `concurrency` requests in flight: items stream through both
    # stages, so the floor is one latency per `concurrency` items plus one to fill the pipe.
    ideal_s = args.latency * (stats.items / args.concurrency + 1)
    report = {
        "items": stats.items,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "requests": stats.requests,
        "requests_served": served,
        "eval_wall_s": round(stats.wall_s, 2),
        "requests_per_s": round(stats.requests_per_s, 1),
        "ideal_wall_s": round(ideal_s, 2),
        "efficiency": round(ideal_s / stats.wall_s, 3) if stats.wall_s else None,
        "total_with_load_and_metrics_s": round(total_s, 2),
        "rerun_resumed_s": round(resume_s, 2),
        "judged": items["judged"],
        "failures": items["failure_reasons"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
