"""Stage 'taxonomy': give each seed row its constraint plan (how many constraints, of which dimensions)."""

from __future__ import annotations

from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.seeds_stage import SEED_SCHEMA
from trace_builder.pipeline.stage import Stage
from trace_builder.taxonomy import plan_for_seed

PLAN_FIELDS = tuple(SEED_SCHEMA.field(name) for name in ("planned_count", "planned_dimensions"))


async def plan_row(ctx: StageContext, row: dict) -> dict:
    """A row admitted with a plan (a target-size run's quotas chose it) keeps it; others draw one."""
    if row.get("planned_count") is not None:
        return row
    tax = ctx.config.taxonomy
    plan = plan_for_seed(
        row["seed_id"], ctx.config.seed, tax.count_histogram, tax.weights or None, tax.max_per_dimension
    )
    row.update(planned_count=plan.count, planned_dimensions=list(plan.dimensions))
    return row


STAGE = Stage(
    name="taxonomy",
    reads="seeds",
    settings=lambda config: {"taxonomy": config.taxonomy.model_dump(), "seed": config.seed},
    fields=PLAN_FIELDS,
    row=plan_row,
    description="a constraint count and dimensions per seed",
)
