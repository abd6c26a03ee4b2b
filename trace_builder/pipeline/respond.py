"""Stage 'respond': answer x1 -> y1, judge it (all 10s to pass), and make a worse answer for DPO."""

from __future__ import annotations

import pyarrow as pa

from trace_builder.errors import LLMError
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.engine import fail
from trace_builder.pipeline.instructions import answer_instruction, failed_constraints, judge_row
from trace_builder.prompts import render_messages

FIELDS = [
    pa.field("response", pa.string()),
    pa.field("judgement", pa.string()),  # JSON: score, decided_by, detail per constraint
    pa.field("rejected", pa.string()),
    pa.field("rejected_judgement", pa.string()),
    pa.field("dpo_status", pa.string()),  # ok | failed | skipped
    pa.field("dpo_reason", pa.string()),
]


async def make_rejected(ctx: StageContext, row: dict) -> None:
    """The deliberately worse answer, kept only if the judge fails it on some constraint."""
    gen = ctx.config.generation
    try:
        worse = await ctx.client.chat(
            render_messages("worse", row["language"], prompt=row["prompt"], response=row["response"]),
            tag="respond.worse",
            temperature=gen.temperature,
            max_tokens=gen.max_tokens,
            seed=ctx.llm_seed("worse", row["id"]),
        )
        judgement = await judge_row(ctx.client, row, worse, suffix="", tag="respond.judge_rejected", config=ctx.config)
    except LLMError as exc:
        row.update(dpo_status="failed", dpo_reason=exc.reason)
        return
    row.update(rejected=worse, rejected_judgement=judgement.to_json())
    if judgement.passed:
        row.update(dpo_status="failed", dpo_reason="rejected_passed_judge")
    else:
        row.update(dpo_status="ok", dpo_reason="")


async def respond_row(ctx: StageContext, row: dict) -> dict:
    gen = ctx.config.generation
    row["dpo_status"], row["dpo_reason"] = "skipped", ""
    row["response"] = await answer_instruction(
        ctx.client,
        row["prompt"],
        tag="respond.answer",
        temperature=gen.temperature,
        max_tokens=gen.max_tokens,
        seed=ctx.llm_seed("answer", row["id"]),
    )
    judgement = await judge_row(ctx.client, row, row["response"], suffix="", tag="respond.judge", config=ctx.config)
    row["judgement"] = judgement.to_json()
    if not judgement.passed:
        return fail(row, "respond", "judge_below_10", failed_constraints(judgement))
    if ctx.config.respond.make_rejected:
        await make_rejected(ctx, row)
    return row
