"""Benchmark the pipeline against the bare openai client, both on one latency-simulating server.

    python scripts/bench_pipeline.py --seeds 1000 --latency 0.5 --concurrency 64   # 11,298 requests
    python scripts/bench_pipeline.py --seeds 10000 --latency 0 --skip-bare
    python scripts/bench_pipeline.py --seeds 50000 --latency 0 --skip-bare --stages seeds,taxonomy,expand
    python scripts/bench_pipeline.py --seeds 1000 --latency 0.5 --sampled     # the trace profile's sampling
    python scripts/bench_pipeline.py --seeds 3000 --latency 0.5 --sampled --train-rows 600 --eval-rows 100

One devserver (`python -m trace_builder.testing.devserver`) runs in its own process, so it
does not share the GIL with what is measured. Against it, in this order:

  pipeline  `trace-build run` in-process: profile `trace` settings (openai backend), the given
            base URL / concurrency, temperature 0 (greedy: one answer per row, as with
            respond.attempts=1), seeds from a generated JSONL file, the stages of --stages;
            with --train-rows, a target-size run: seeds admitted in rounds (their start times
            and sizes are printed), --seeds the pool they come from;
  bare      `openai.AsyncOpenAI` alone: as many chat.completions requests as the pipeline sent
            (counted by the server), at most --concurrency in flight (a semaphore), shaped like
            the pipeline's (system + user prompt, task header, one in three asks for a JSON
            schema). The pipeline runs first only to know that count; its peak RSS is read
            before the bare client runs, so it is the pipeline's alone.

For each it prints requests, elapsed, the ideal N x latency / concurrency, efficiency
(ideal / elapsed: 1.0 means the server was never left idle) and requests/s; for the pipeline
also how full the server's slots were in each tenth of the run (where the idle time is: the
start, the middle or the tail), its peak RSS and RSS sampled over the run (flat = memory does
not grow with the run). With --keep, busy.json holds every answer's (start, end, task).

Measured on 2 shared cores, 0.5 s, 64 in flight: 1000 seeds greedy 0.961 of the ideal, the bare
client 0.960-0.975; --sampled 0.913-0.923 (busy by tenth 0.88-0.89, 0.96-0.98, 0.55-0.61 at the
end; 3000 seeds: 0.948-0.961); --sampled --train-rows 600 --eval-rows 100: 0.91-0.92. The README's
table has the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from rich.console import Console

from trace_builder.pipeline.admission import QuotaAdmission
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.run.store import StageStore
from trace_builder.testing.devserver import devserver_process, scripted_trace_config

DEFAULT_STAGES = "seeds,taxonomy,expand,respond,perturb"  # every stage that asks the LLM; filter asks none
TOPICS = ["rivers", "bridges", "tea", "chess", "volcanoes", "jazz", "bees", "satellites", "bread", "glaciers"]


def write_seeds(path: Path, count: int) -> None:
    with path.open("w") as handle:
        for i in range(count):
            text = f"Write a short explainer about {TOPICS[i % len(TOPICS)]} for reader group {i}."
            handle.write(json.dumps({"text": text, "language": "en", "domain": TOPICS[i % len(TOPICS)]}) + "\n")


def server_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/_stats", timeout=30) as response:
        return json.loads(response.read())["requests"]


def server_busy(base_url: str) -> list[tuple[float, float, str]]:
    """(start, end, task) of each answer's latency (epoch seconds), as the devserver recorded them."""
    with urllib.request.urlopen(base_url + "/_busy", timeout=30) as response:
        return [tuple(entry) for entry in json.loads(response.read())["busy"]]


def busy_by_tenth(busy: list[tuple[float, float, str]], start: float, end: float, concurrency: int) -> list[float]:
    """How full the server's `concurrency` slots were in each tenth of [start, end] (1.0: never idle)."""
    width = (end - start) / 10 or 1.0
    filled = [0.0] * 10
    for began, ended, _ in busy:
        for i in range(10):
            lo, hi = start + i * width, start + (i + 1) * width
            filled[i] += max(0.0, min(ended, hi) - max(began, lo))
    return [f / (width * concurrency) for f in filled]


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples this process's RSS every `every_s` seconds in a thread (cheap: one /proc read)."""

    def __init__(self, every_s: float = 0.25):
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self._start, rss_mib()))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append((time.perf_counter() - self._start, rss_mib()))

    def by_tenth(self) -> list[float]:
        """The peak RSS in each tenth of the run."""
        if not self.samples:
            return []
        end = self.samples[-1][0] or 1.0
        peaks: list[float | None] = [None] * 10
        for t, rss in self.samples:
            i = min(int(10 * t / end), 9)
            peaks[i] = max(peaks[i] or 0.0, rss)
        for i in range(10):  # a tenth without a sample (a short run) shows the one before it
            peaks[i] = peaks[i] if peaks[i] is not None else (peaks[i - 1] if i else self.samples[0][1])
        return peaks


async def run_bare(base_url: str, requests: int, concurrency: int, model: str) -> float:
    """`requests` chat completions through a bare AsyncOpenAI client, `concurrency` at a time."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=120.0, max_retries=0)
    slots = asyncio.Semaphore(concurrency)
    system = "You are a careful assistant. Follow every numbered constraint of the instruction exactly. " * 6
    schema = {
        "type": "object",
        "properties": {"instructions": {"type": "array", "items": {"type": "string"}, "maxItems": 10}},
        "required": ["instructions"],
        "additionalProperties": False,
    }

    async def one(i: int) -> None:
        topic = TOPICS[i % len(TOPICS)]
        user = (
            f"Write a short explainer about {topic} for reader group {i}.\n"
            + "".join(
                f"{n}. Constraint {n} on the {topic} explainer: keep it precise and cite one fact.\n"
                for n in range(1, 9)
            )
            + "# Inputs:\nNone"
        )
        kwargs: dict = {
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0.0,
            "max_tokens": 1024,
        }
        if i % 3 == 2:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "Seeds", "schema": schema, "strict": True},
            }
            kwargs["extra_headers"] = {"X-Trace-Build-Task": "seeds.synthesize"}
        else:
            kwargs["extra_headers"] = {"X-Trace-Build-Task": "respond.answer"}
        async with slots:
            response = await client.chat.completions.create(**kwargs)
        assert response.choices and response.choices[0].message.content

    started = time.perf_counter()
    # Tasks are created as slots free up (a semaphore around creation), like a bounded producer.
    pending: set[asyncio.Task] = set()
    feeder = asyncio.Semaphore(2 * concurrency)
    for i in range(requests):
        await feeder.acquire()
        task = asyncio.create_task(one(i))
        task.add_done_callback(lambda t: feeder.release())
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        done, _ = await asyncio.wait(pending)
        for task in done:
            task.result()
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def pipeline_config(args: argparse.Namespace, base_url: str, seeds: Path):
    config = scripted_trace_config(base_url, args.concurrency)
    config.shard_size = args.shard_size
    # greedy: every rejection-sampling loop asks once; --sampled: the trace profile's 0.7, up to 3 answers
    config.generation.temperature = 0.7 if args.sampled else 0.0
    config.seeds.source = str(seeds)
    config.seeds.languages = ["en"]
    config.filter.eval_size = 10
    config.filter.train_size = None
    if args.train_rows:
        config.target.train_rows, config.target.eval_rows = args.train_rows, args.eval_rows
    return config


class RoundClock:
    """When each admission round of a target-size run was planned, and how many seeds it admitted."""

    def __init__(self):
        self.rounds: list[tuple[float, int]] = []

    def __enter__(self) -> RoundClock:
        self._started = time.perf_counter()
        self._planned = QuotaAdmission.next_round
        clock = self

        async def timed(admission: QuotaAdmission) -> list[dict]:
            rows = await clock._planned(admission)
            if rows:
                clock.rounds.append((time.perf_counter() - clock._started, len(rows)))
            return rows

        QuotaAdmission.next_round = timed
        return self

    def __exit__(self, *exc) -> None:
        QuotaAdmission.next_round = self._planned


def report(name: str, requests: int, elapsed: float, latency: float, concurrency: int) -> None:
    ideal = requests * latency / concurrency
    line = f"{name:<9} requests {requests:>7}  elapsed {elapsed:8.2f} s"
    if latency:
        line += f"  ideal {ideal:8.2f} s  efficiency {ideal / elapsed:.3f}"
    line += f"  {requests / elapsed:7.1f} req/s"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="seed rows (about 11.3 requests each through perturb)")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the server takes per answer")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument(
        "--stages", default=DEFAULT_STAGES, help=f"comma-separated, in order (of {','.join(STAGE_NAMES)})"
    )
    parser.add_argument("--skip-bare", action="store_true", help="run the pipeline only")
    parser.add_argument(
        "--sampled",
        action="store_true",
        help="the profile users run: temperature 0.7 with rejection sampling, answers meeting each constraint "
        "with probability --mark-rate (retries, worse answers and perturbations vary per row)",
    )
    parser.add_argument("--mark-rate", type=float, default=0.85, help="with --sampled")
    parser.add_argument("--train-rows", type=int, help="a target-size run of this many train rows")
    parser.add_argument("--eval-rows", type=int, default=0, help="with --train-rows")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}: use {','.join(STAGE_NAMES)}")

    sampling = {"mark_rate": args.mark_rate} if args.sampled else {}
    server = devserver_process(latency=args.latency, record_busy=bool(args.latency), **sampling)
    with server as base_url, tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        seeds = work / "seeds.jsonl"
        write_seeds(seeds, args.seeds)
        config = pipeline_config(args, base_url, seeds)
        console = Console(stderr=True, quiet=True)  # no live bars: they would cost the run CPU
        base_rss = rss_mib()
        with RssSampler() as sampler, RoundClock() as clock:
            started, started_epoch = time.perf_counter(), time.time()
            summary = asyncio.run(run_pipeline(config, work / "run", stages, fresh=True, console=console))
            elapsed = time.perf_counter() - started
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        requests = server_requests(base_url)
        print(f"server        latency {args.latency:.3f} s, {args.concurrency} in flight, shard size {args.shard_size}")
        last = StageStore(work / "run", stages[-1])
        rows = f"{last.rows_written()} rows out of {stages[-1]}"
        if summary.final_rows:
            rows += f", final {summary.final_rows}"
        print(f"pipeline      {args.seeds} seeds through {','.join(stages)}: {rows}")
        if clock.rounds:
            print(
                "rounds        "
                + ", ".join(f"{n} seeds at {t:.1f} s" for t, n in clock.rounds)
                + f"; done at {elapsed:.1f} s"
            )
        report("pipeline", requests, elapsed, args.latency, args.concurrency)
        if requests:
            print(f"              {1000 * elapsed / requests:.3f} ms of wall time per request")
        if args.latency and requests:
            busy = server_busy(base_url)
            tenths = busy_by_tenth(busy, started_epoch, started_epoch + elapsed, args.concurrency)
            first, last = min(b[0] for b in busy) - started_epoch, max(b[1] for b in busy) - started_epoch
            print("busy by tenth " + " ".join(f"{f:.2f}" for f in tenths) + " (server slots filled in each tenth)")
            print(f"              first answer began at {first:.2f} s, last ended at {last:.2f} s of {elapsed:.2f} s")
            if args.keep:
                (args.keep / "busy.json").write_text(json.dumps({"start": started_epoch, "busy": busy}))
        print(f"peak RSS      {peak_rss:.0f} MiB (at start {base_rss:.0f} MiB)")
        print(
            "RSS by tenth  " + " ".join(f"{r:.0f}" for r in sampler.by_tenth()) + " MiB (peak in each tenth of the run)"
        )
        if not args.skip_bare and requests:
            bare_elapsed = asyncio.run(run_bare(base_url, requests, args.concurrency, config.backend.model))
            report("bare", server_requests(base_url) - requests, bare_elapsed, args.latency, args.concurrency)
            print(f"pipeline/bare {bare_elapsed / elapsed:.3f} (bare elapsed / pipeline elapsed)")


if __name__ == "__main__":
    main()
