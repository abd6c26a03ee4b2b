"""Stage 'perturb': change x1's constraints so y1 violates them (x2), answer x2, judge the pairings."""

from __future__ import annotations

import asyncio

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.errors import LLMError
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.instructions import (
    ConstraintAnswer,
    answer_instruction,
    check_catalogue,
    failed_constraints,
    judge_row,
    normalise_constraints,
    prompt_of,
)
from trace_builder.prompts import render_messages

FIELDS = [
    pa.field("perturb_op", pa.string()),
    pa.field("perturb_explanation", pa.string()),
    pa.field("constraints_2", pa.list_(pa.string())),
    pa.field("dimensions_2", pa.list_(pa.string())),
    pa.field("checks_2", pa.list_(pa.string())),
    pa.field("prompt_2", pa.string()),
    pa.field("response_2", pa.string()),
    pa.field("judgement_x2_y2", pa.string()),
    pa.field("judgement_x2_y1", pa.string()),
    pa.field("judgement_x1_y2", pa.string()),
    pa.field("x1_y2_passes", pa.bool_()),
    pa.field("iopo_status", pa.string()),  # ok | failed
    pa.field("iopo_reason", pa.string()),
    pa.field("iopo_detail", pa.string()),
]


class PerturbedConstraints(BaseModel):
    constraints: list[ConstraintAnswer] = Field(min_length=1, max_length=20)
    explanation: str = Field(max_length=400)


def operation_mismatch(operation: str, before: list[str], after: list[str]) -> str | None:
    """Why the new list does not look like the operation asked for, or None if it does."""
    if after == before:
        return "constraints unchanged"
    if operation == "add" and len(after) <= len(before):
        return f"ADD gave {len(after)} constraints for {len(before)}"
    if operation == "delete" and len(after) >= len(before):
        return f"DELETE gave {len(after)} constraints for {len(before)}"
    return None


def _iopo_fail(row: dict, reason: str, detail: str = "") -> dict:
    row.update(iopo_status="failed", iopo_reason=reason, iopo_detail=detail[:300])
    return row


async def perturb_row(ctx: StageContext, row: dict) -> dict:
    """Build one IOPO group; an unusable group fails only the IOPO side (the SFT row stays ok)."""
    try:
        return await _perturb(ctx, row)
    except LLMError as exc:
        return _iopo_fail(row, exc.reason, exc.detail)


async def _perturb(ctx: StageContext, row: dict) -> dict:
    client, gen, cfg = ctx.client, ctx.config.generation, ctx.config
    operations = cfg.perturb.operations
    operation = ctx.rng("perturb-op", row["id"]).choice(operations)
    row["perturb_op"] = operation
    if operation == "delete" and len(row["constraints"]) < 2:
        # Deleting the only constraint leaves no constraint at all: revise it instead.
        operation = row["perturb_op"] = "revise" if "revise" in operations else "add"

    lang = row["language"]
    changed = await client.chat_json(
        render_messages(
            "perturb",
            lang,
            description=row["description"],
            constraints=[{"text": t, "dimension": d} for t, d in zip(row["constraints"], row["dimensions"])],
            input_text=row["input"],
            response=row["response"],
            operation=operation,
            emit_checks=cfg.expand.emit_checks,
            check_catalogue=check_catalogue(lang) if cfg.expand.emit_checks else "",
        ),
        PerturbedConstraints,
        tag="perturb.rewrite",
        temperature=gen.temperature,
        max_tokens=gen.max_tokens,
        seed=ctx.llm_seed("perturb", row["id"]),
    )
    texts, dims, checks, _ = normalise_constraints(changed.constraints)
    row.update(constraints_2=texts, dimensions_2=dims, checks_2=checks, perturb_explanation=changed.explanation)
    mismatch = operation_mismatch(operation, row["constraints"], texts)
    if mismatch:
        return _iopo_fail(row, "perturb_not_applied", mismatch)
    row["prompt_2"] = prompt_of(row, "_2")

    # y2 and the (x2, y1) verdict need nothing from each other: ask both at once.
    response_2, x2_y1 = await asyncio.gather(
        answer_instruction(
            client, row["prompt_2"], tag="perturb.answer", temperature=gen.temperature,
            max_tokens=gen.max_tokens, seed=ctx.llm_seed("answer2", row["id"]),
        ),
        judge_row(client, row, row["response"], suffix="_2", tag="perturb.judge", config=cfg),
    )
    row["response_2"], row["judgement_x2_y1"] = response_2, x2_y1.to_json()
    x2_y2, x1_y2 = await asyncio.gather(
        judge_row(client, row, response_2, suffix="_2", tag="perturb.judge", config=cfg),
        judge_row(client, row, response_2, suffix="", tag="perturb.judge", config=cfg),
    )
    row.update(judgement_x2_y2=x2_y2.to_json(), judgement_x1_y2=x1_y2.to_json(), x1_y2_passes=x1_y2.passed)
    if x2_y1.passed:
        return _iopo_fail(row, "y1_still_follows_x2")
    if not x2_y2.passed:
        return _iopo_fail(row, "y2_fails_x2", failed_constraints(x2_y2))
    row.update(iopo_status="ok", iopo_reason="", iopo_detail="")
    return row
