"""Stage 'expand': add the planned constraints to a seed, structure the result, check its quality."""

from __future__ import annotations

import json
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.llm.structured import strict_schema
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.engine import fail
from trace_builder.pipeline.instructions import (
    ConstraintAnswer,
    check_catalogue,
    normalise_constraints,
    prompt_of,
    read_slots,
    with_slots,
)
from trace_builder.pipeline.stage import Stage, model_settings
from trace_builder.prompts import render_messages
from trace_builder.records import NULL_INPUT, content_id
from trace_builder.taxonomy import Dimension, get_dimension

FIELDS = [
    pa.field("id", pa.string()),
    pa.field("expanded_text", pa.string()),
    pa.field("description", pa.string()),
    pa.field("constraints", pa.list_(pa.string())),
    pa.field("dimensions", pa.list_(pa.string())),
    pa.field("checks", pa.list_(pa.string())),  # JSON check spec per constraint, null if none
    pa.field("input", pa.string()),
    pa.field("constraint_count", pa.int32()),
    pa.field("prompt", pa.string()),
    pa.field("quality_verdict", pa.string()),
    pa.field("quality_problems", pa.string()),  # JSON list
    pa.field("checks_dropped", pa.int32()),
]


class StructuredInstruction(BaseModel):
    # No maxLength on the long fields: grammar compilers unroll it, and compile time grows with it.
    description: str = Field(min_length=1)
    constraints: dict[str, ConstraintAnswer]  # slots "1".."N", pinned to the plan by the request's schema
    input: str


class QualityProblem(BaseModel):
    kind: Literal["redundant", "incomplete", "contradictory"]
    constraint: int = Field(ge=1, le=40)
    explanation: str = Field(max_length=300)


class QualityReview(BaseModel):
    problems: list[QualityProblem] = Field(max_length=20)
    verdict: Literal["pass", "repair", "reject"]
    repaired_constraints: dict[str, ConstraintAnswer] | None  # the same slots as the plan


def _constraint_views(row: dict) -> list[dict]:
    return [{"text": t, "dimension": d} for t, d in zip(row["constraints"], row["dimensions"])]


def _set_constraints(row: dict, items: list[ConstraintAnswer]) -> None:
    texts, dims, checks, dropped = normalise_constraints(items)
    row.update(constraints=texts, dimensions=dims, checks=checks, constraint_count=len(texts))
    row["checks_dropped"] = (row.get("checks_dropped") or 0) + dropped


async def structure(ctx: StageContext, row: dict, expanded: str, planned: list[Dimension]) -> StructuredInstruction:
    """Split the expanded text into description / constraints / input, one constraint per planned slot.

    The schema pins the slots to the plan (count, order, dimension), and an answer is used only
    once it fits the whole schema (llm/client.py asks again otherwise), so it follows the plan.
    """
    cfg, lang, ids = ctx.config, row["language"], [d.id for d in planned]
    messages = render_messages(
        "structure",
        lang,
        expanded=expanded,
        planned=planned,
        emit_checks=cfg.expand.emit_checks,
        check_catalogue=check_catalogue(lang) if cfg.expand.emit_checks else "",
    )
    answer = await ctx.client.chat_json(
        messages,
        StructuredInstruction,
        tag="expand.structure",
        temperature=0.0,
        # Every planned slot must be written before the object may close: the budget grows
        # with the plan, as the judge's does (a fixed cap cut small models off mid-slot).
        max_tokens=cfg.generation.max_tokens + cfg.generation.judge_tokens_per_constraint * len(ids),
        json_schema=with_slots(strict_schema(StructuredInstruction), "constraints", ids),
    )
    items, problem = read_slots(answer.constraints, ids)
    if problem is not None:  # unreachable while the schema pins the plan; a guard if it ever stops doing so
        raise PlanMismatch(problem)
    answer.constraints = {str(i): item for i, item in enumerate(items, start=1)}
    return answer


class PlanMismatch(Exception):
    """The structured instruction did not follow the plan."""


async def expand_row(ctx: StageContext, row: dict) -> dict:
    client, gen, cfg = ctx.client, ctx.config.generation, ctx.config.expand
    lang = row["language"]
    planned = [get_dimension(d) for d in row["planned_dimensions"]]

    # 1. Rewrite the seed with the planned constraints (free text, as TRACE's step 2).
    expanded = await client.chat(
        render_messages("expand", lang, dimensions=planned, seed_text=row["seed_text"], seed_input=row["seed_input"]),
        tag="expand.rewrite",
        temperature=gen.temperature,
        max_tokens=gen.max_tokens,
        seed=ctx.llm_seed("expand", row["seed_id"], row.get("use") or 0),
    )
    row["expanded_text"] = expanded

    # 2. Structure it into description / constraints[] / input (TRACE's step 3), one per planned slot.
    try:
        structured = await structure(ctx, row, expanded, planned)
    except PlanMismatch as exc:
        return fail(row, "expand", "plan_mismatch", str(exc))
    row["description"] = " ".join(structured.description.split())
    # Material given with the seed is kept verbatim; the LLM's copy may have drifted.
    if row["seed_input"] != NULL_INPUT:
        row["input"] = row["seed_input"]
    else:
        row["input"] = structured.input.strip() or NULL_INPUT
    _set_constraints(row, list(structured.constraints.values()))

    # 3. Quality check: reject or repair redundant, incomplete, contradictory (TRACE's step 4).
    review = await client.chat_json(
        render_messages(
            "quality", lang, description=row["description"], constraints=_constraint_views(row), input_text=row["input"]
        ),
        QualityReview,
        tag="expand.quality",
        temperature=0.0,
        max_tokens=gen.max_tokens,
        json_schema=with_slots(strict_schema(QualityReview), "repaired_constraints", row["dimensions"], nullable=True),
    )
    row["quality_verdict"] = review.verdict
    row["quality_problems"] = json.dumps([p.model_dump() for p in review.problems], ensure_ascii=False)
    if review.verdict == "reject" or (review.verdict == "repair" and not cfg.repair):
        first = review.problems[0] if review.problems else None
        detail = f"{first.kind} constraint {first.constraint}: {first.explanation}" if first else ""
        return fail(row, "expand", "quality_rejected", detail)
    if review.verdict == "repair":
        # A repair rewrites constraints, never the plan: same count, same dimension per slot.
        repaired, problem = read_slots(review.repaired_constraints, row["dimensions"])
        if problem is not None:
            return fail(row, "expand", "quality_repair_off_plan", problem)
        _set_constraints(row, repaired)
    if not row["description"]:
        return fail(row, "expand", "empty_description")
    row["prompt"] = prompt_of(row)
    row["id"] = content_id(row["description"], row["constraints"], row["input"])
    return row


STAGE = Stage(
    name="expand",
    reads="taxonomy",
    settings=lambda config: {"expand": config.expand.model_dump(), **model_settings(config)},
    fields=tuple(FIELDS),
    row=expand_row,
    uses_llm=lambda config: True,
    description="rewrite with the planned constraints, structure, quality check",
)
