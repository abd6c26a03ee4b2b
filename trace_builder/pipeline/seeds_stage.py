"""Stages 'seeds' and 'taxonomy': gather the simple instructions, then plan constraints for each."""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.pipeline.context import StageContext
from trace_builder.prompts import render_messages
from trace_builder.seeds import (
    Seed,
    dedupe_seeds,
    load_builtin_seeds,
    load_seed_file,
    seed_id,
    select_seeds,
)
from trace_builder.store import StageStore
from trace_builder.taxonomy import plan_for_seed

SEED_SCHEMA = pa.schema(
    [
        pa.field("seed_id", pa.string()),
        pa.field("seed_text", pa.string()),
        pa.field("seed_input", pa.string()),
        pa.field("language", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("source", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("failed_stage", pa.string()),
        pa.field("failure_detail", pa.string()),
    ]
)

PLAN_FIELDS = [
    pa.field("planned_count", pa.int32()),
    pa.field("planned_dimensions", pa.list_(pa.string())),
]


class SynthesizedSeeds(BaseModel):
    instructions: list[str] = Field(min_length=1, max_length=20)


def _seed_row(seed: Seed) -> dict:
    return {
        "seed_id": seed.id,
        "seed_text": seed.text,
        "seed_input": seed.input,
        "language": seed.language,
        "domain": seed.domain,
        "source": seed.source,
        "status": "ok",
        "reason": "",
        "failed_stage": "",
        "failure_detail": "",
    }


async def synthesize_seeds(ctx: StageContext, pool: list[Seed], target: int) -> list[Seed]:
    """Ask the LLM for more seeds, domain by domain, until `target` unique seeds exist.

    Bounded: at most `target` requests, so a model that repeats itself cannot loop forever.
    """
    seeds = list(pool)
    domains = sorted({(s.language, s.domain) for s in pool})
    for attempt in range(target):
        if len(seeds) >= target or not domains:
            break
        language, domain = domains[attempt % len(domains)]
        examples = [s.text for s in pool if s.language == language and s.domain == domain][:4]
        messages = render_messages("synthesize_seeds", language, examples=examples, count=10, domain=domain)
        answer = await ctx.client.chat_json(
            messages,
            SynthesizedSeeds,
            tag="seeds.synthesize",
            temperature=max(ctx.config.generation.temperature, 0.7),
            max_tokens=ctx.config.generation.max_tokens,
            seed=ctx.llm_seed("synth", attempt),
        )
        for text in answer.instructions:
            if text.strip():
                seeds.append(Seed(seed_id(text), text.strip(), language, domain, source="synthesized"))
        seeds = dedupe_seeds(seeds)
    return seeds[: max(target, len(pool))]


async def run_seeds(ctx: StageContext, store: StageStore) -> None:
    cfg = ctx.config.seeds
    if cfg.source == "builtin":
        seeds = load_builtin_seeds()
    else:
        seeds = load_seed_file(cfg.source, text_column=cfg.text_column, input_column=cfg.input_column)
    seeds = select_seeds(dedupe_seeds(seeds), None, languages=cfg.languages, rng_seed=ctx.config.seed)
    if cfg.synthesize_to > len(seeds):
        seeds = await synthesize_seeds(ctx, seeds, cfg.synthesize_to)
    seeds = select_seeds(seeds, cfg.limit, rng_seed=ctx.config.seed)
    rows = [_seed_row(s) for s in seeds]
    size = ctx.config.shard_size
    shards = [rows[i : i + size] for i in range(0, len(rows), size)]
    store.manifest["total_shards"] = len(shards)
    for index, shard in enumerate(shards):
        store.write_shard(index, pa.Table.from_pylist(shard, schema=SEED_SCHEMA))


def plan_row(ctx: StageContext, row: dict) -> dict:
    tax = ctx.config.taxonomy
    plan = plan_for_seed(row["seed_id"], ctx.config.seed, tax.count_histogram, tax.weights or None, tax.max_per_dimension)
    row.update(planned_count=plan.count, planned_dimensions=list(plan.dimensions))
    return row
