"""Stage 'seeds': gather the simple instructions (built-in, a file, or LLM-synthesized) into rows."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.config import MAX_SEED_CHARS
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.decontaminate import decontaminator, file_digest
from trace_builder.pipeline.decontaminate import settings as decontamination_settings
from trace_builder.pipeline.stage import Stage, model_settings
from trace_builder.prompts import render_messages
from trace_builder.run.store import StageStore
from trace_builder.seeds import (
    Seed,
    dedupe_seeds,
    load_builtin_seeds,
    load_seed_file,
    seed_id,
    select_seeds,
)

log = logging.getLogger("trace_builder")

SEED_SCHEMA = pa.schema(
    [
        pa.field("seed_id", pa.string()),
        pa.field("seed_text", pa.string()),
        pa.field("seed_input", pa.string()),
        pa.field("language", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("source", pa.string()),
        pa.field("use", pa.int32()),  # 0, or the n-th reuse of this seed (with a new plan) in a target-size run
        # Set at admission in a target-size run (the quotas choose the plan); else by the taxonomy stage.
        pa.field("planned_count", pa.int32()),
        pa.field("planned_dimensions", pa.list_(pa.string())),
        # train or eval, for every row of this seed: set at admission in a target-size run, else by the filter.
        pa.field("split", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("failed_stage", pa.string()),
        pa.field("failure_detail", pa.string()),
    ]
)


class SynthesizedSeeds(BaseModel):
    instructions: list[str] = Field(min_length=1, max_length=20)


def seed_row(seed: Seed, use: int = 0, plan: tuple[int, list[str]] | None = None, split: str | None = None) -> dict:
    return {
        "seed_id": seed.id,
        "seed_text": seed.text,
        "seed_input": seed.input,
        "language": seed.language,
        "domain": seed.domain,
        "source": seed.source,
        "use": use,
        "planned_count": plan[0] if plan else None,
        "planned_dimensions": plan[1] if plan else None,
        "split": split,
        "status": "ok",
        "reason": "",
        "failed_stage": "",
        "failure_detail": "",
    }


def drop_contaminated(ctx: StageContext, seeds: list[Seed], dropped: Counter) -> list[Seed]:
    """`seeds` without those whose text or input overlaps a known eval set (counted per set in `dropped`)."""
    checker = decontaminator(ctx.config)
    if checker is None:
        return seeds
    kept = []
    for seed in seeds:
        found = checker.first_match([seed.text, seed.input])
        if found is None:
            kept.append(seed)
        else:
            dropped[found] += 1
    return kept


async def synthesize_seeds(ctx: StageContext, pool: list[Seed], target: int, dropped: Counter) -> list[Seed]:
    """Ask the LLM for more seeds, domain by domain, until `target` unique seeds exist; one that
    overlaps a known eval set (a model may recite one) is dropped and counted in `dropped`.

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
        new = [
            Seed(seed_id(t), t.strip(), language, domain, source="synthesized")
            for t in answer.instructions
            if t.strip()
        ]
        seeds = dedupe_seeds(seeds + drop_contaminated(ctx, new, dropped))
    return seeds[: max(target, len(pool))]


async def seed_pool(ctx: StageContext, dropped: Counter, *, synthesize_to: int = 0) -> list[Seed]:
    """The configured seeds, deduplicated, filtered by language, without those overlapping a known eval
    set (counted per set in `dropped`: before any request is spent on them), synthesized up to `synthesize_to`."""
    cfg = ctx.config.seeds
    if cfg.source == "builtin":
        seeds = load_builtin_seeds()
    else:
        skipped: Counter = Counter()
        seeds = load_seed_file(
            cfg.source,
            text_column=cfg.text_column,
            input_column=cfg.input_column,
            max_chars=cfg.max_chars,
            skipped=skipped,
        )
        if skipped["too_long"]:
            log.warning(
                "%d seeds longer than %s characters skipped (seeds.max_chars)",
                skipped["too_long"],
                f"{cfg.max_chars:,}",
            )
    seeds = select_seeds(dedupe_seeds(seeds), None, languages=cfg.languages, rng_seed=ctx.config.seed)
    seeds = drop_contaminated(ctx, seeds, dropped)
    if synthesize_to > len(seeds):
        seeds = await synthesize_seeds(ctx, seeds, synthesize_to, dropped)
    return seeds


def write_seed_shards(store: StageStore, rows: list[dict], shard_size: int, first_index: int = 0) -> list[int]:
    """Append `rows` as shards numbered from `first_index`; returns the indices written."""
    written = []
    for offset in range(0, len(rows), shard_size):
        index = first_index + offset // shard_size
        store.write_shard(index, pa.Table.from_pylist(rows[offset : offset + shard_size], schema=SEED_SCHEMA))
        written.append(index)
    return written


async def plain_run_seeds(ctx: StageContext, dropped: Counter) -> list[Seed]:
    """The seeds a plain (not target-size) run takes, in shard order: the pool, at most seeds.limit."""
    seeds = await seed_pool(ctx, dropped, synthesize_to=ctx.config.seeds.synthesize_to)
    return select_seeds(seeds, ctx.config.seeds.limit, rng_seed=ctx.config.seed)


async def run_seeds(ctx: StageContext, source: StageStore | None, store: StageStore) -> dict:
    dropped: Counter = Counter()
    rows = [seed_row(s) for s in await plain_run_seeds(ctx, dropped)]
    store.manifest["total_shards"] = -(-len(rows) // ctx.config.shard_size)
    write_seed_shards(store, rows, ctx.config.shard_size)
    return {"decontaminated": dict(dropped)}


def _settings(config) -> dict:
    synthesizes = config.seeds.synthesize_to > 0 or config.target.when_seeds_run_out == "synthesize"
    seeds = config.seeds.model_dump()
    if seeds["max_chars"] == MAX_SEED_CHARS:
        del seeds["max_chars"]  # added later: runs made before keep their fingerprint
    if seeds["source"] != "builtin" and Path(seeds["source"]).is_file():
        seeds["source"] = file_digest(seeds["source"])  # the file's name and content: a copied run resumes
    return {
        "seeds": seeds,
        # Not the sizes nor the budget: a larger target or budget tops a finished run up with more rounds.
        "target": {"rounds": config.target.enabled, "when_seeds_run_out": config.target.when_seeds_run_out},
        "seed": config.seed,
        "decontamination": decontamination_settings(config),
        **(model_settings(config) if synthesizes else {}),
    }


STAGE = Stage(
    name="seeds",
    reads=None,
    settings=_settings,
    fields=tuple(SEED_SCHEMA),
    whole=run_seeds,
    uses_llm=lambda config: config.seeds.synthesize_to > 0 or config.target.when_seeds_run_out == "synthesize",
    description="simple instructions: built-in, a file, or LLM-synthesized",
)
