"""Benchmark the embedded local backend's engines side by side: generated tokens/s at several batch
sizes, with and without a JSON grammar, on torch (the default without extras) and on llama.cpp
(when llama-cpp-python is installed: `pip install 'trace-build[llamacpp]'`).

    python scripts/bench_local.py [--engines torch,llamacpp] [--batches 1,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from trace_builder.config import BackendConfig
from trace_builder.llm import llamacpp_engine
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.factory import make_backend
from trace_builder.llm.model_files import EMBEDDED_MODEL

PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "Describe a busy market in the morning.",
    "Give advice to a student starting university.",
    "Write a letter to a friend about your holiday.",
    "Explain why the sky is blue.",
    "Describe your favourite meal and how to cook it.",
    "Write a product description for a new bicycle.",
)

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "answer": {"type": "string", "maxLength": 400},
        "score": {"type": "integer"},
    },
    "required": ["title", "answer", "score"],
}


def requests_for(batch: int, grammar: bool, max_tokens: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=({"role": "user", "content": PROMPTS[i % len(PROMPTS)]},),
            max_tokens=max_tokens,
            json_schema=SCHEMA if grammar else None,
        )
        for i in range(batch)
    ]


async def measure(backend, batch: int, grammar: bool, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(backend.complete(r) for r in requests_for(batch, grammar, max_tokens)))
    return sum(r.completion_tokens for r in results), time.perf_counter() - started


async def bench(engine: str, batches: list[int], max_tokens: int) -> None:
    backend = make_backend(BackendConfig(kind="local", model=EMBEDDED_MODEL, engine=engine, batch_size=max(batches)))
    started = time.perf_counter()
    await backend.start()
    print(f"[{engine}] load: {time.perf_counter() - started:.1f} s (cpus: {os.cpu_count()})")
    await measure(backend, 1, True, 4)  # warm-up, compiles the grammar
    print(f"{'engine':>8} {'batch':>5} {'grammar':>7} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    for grammar in (False, True):
        for batch in batches:
            tokens, seconds = await measure(backend, batch, grammar, max_tokens)
            print(f"{engine:>8} {batch:>5} {str(grammar):>7} {tokens:>7} {seconds:>8.1f} {tokens / seconds:>9.1f}")
    await backend.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = "torch,llamacpp" if llamacpp_engine.available() else "torch"
    parser.add_argument("--engines", default=default)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    for engine in args.engines.split(","):
        await bench(engine, [int(b) for b in args.batches.split(",")], args.max_tokens)


if __name__ == "__main__":
    asyncio.run(main())
