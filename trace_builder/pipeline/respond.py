"""Stage 'respond': answer x1 -> y1 until one earns full marks (rejection sampling).

A worse answer for DPO's rejected side needs only y1: it is made in the perturb stage, at the
same time as the IOPO group (pipeline/perturb.py), so a row's chain of requests is shorter.
"""

from __future__ import annotations

import pyarrow as pa

from trace_builder.judge import JUDGEMENT_TYPE, Judgement
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.engine import fail
from trace_builder.pipeline.instructions import answer_instruction, failed_constraints, judge_row
from trace_builder.pipeline.stage import Stage, model_settings

FIELDS = [
    pa.field("response", pa.string()),
    pa.field("judgement", JUDGEMENT_TYPE),  # per constraint: score, decided_by, detail, llm_score
    pa.field("respond_attempts", pa.int32()),  # answers asked for y1
    pa.field("disputes", pa.int32()),  # constraints where a check overruled the LLM judge, over all judgements
]


def attempts_allowed(ctx: StageContext, configured: int) -> int:
    """Greedy decoding answers the same every time: asking again would only repeat the answer."""
    return configured if ctx.config.generation.temperature > 0 else 1


async def best_answer(
    ctx: StageContext, row: dict, prompt_suffix: str, tag: str, attempts: int
) -> tuple[str, Judgement, int]:
    """Rejection sampling: answers to x (suffix '' for x1, '_2' for x2) until one earns full marks.

    Returns the passing answer (or the last one) with its judgement and the attempts used.
    """
    gen = ctx.config.generation
    for attempt in range(1, attempts + 1):
        response = await answer_instruction(
            ctx.client,
            row["prompt" + prompt_suffix],
            tag=f"{tag}.answer",
            temperature=gen.temperature,
            max_tokens=gen.max_tokens,
            # The first attempt keeps the seed earlier runs used, so their cache still serves it.
            seed=ctx.llm_seed("answer" + prompt_suffix, row["id"], *([attempt] if attempt > 1 else [])),
        )
        judgement = await judge_row(
            ctx.client, row, response, suffix=prompt_suffix, tag=f"{tag}.judge", config=ctx.config
        )
        row["disputes"] = (row.get("disputes") or 0) + judgement.disputes
        if judgement.passed:
            break
    return response, judgement, attempt


async def respond_row(ctx: StageContext, row: dict) -> dict:
    row.update(disputes=0)
    attempts = attempts_allowed(ctx, ctx.config.respond.attempts)
    response, judgement, used = await best_answer(ctx, row, "", "respond", attempts)
    row.update(response=response, judgement=judgement.records(), respond_attempts=used)
    if not judgement.passed:
        return fail(row, "respond", "judge_below_10", failed_constraints(judgement))
    return row


def summarize(frame) -> dict:
    """Answers asked per row and the check/judge disagreements, for `status`."""
    if frame.empty or "respond_attempts" not in frame:
        return {}
    attempts = frame["respond_attempts"].dropna()
    passed_late = (frame["respond_attempts"] > 1) & (frame["status"] == "ok")
    return {
        "answers per judged row": round(float(attempts.mean()), 2) if len(attempts) else 0.0,
        "passed on a later attempt": int(passed_late.sum()),
        "check/judge disagreements": int(frame["disputes"].fillna(0).sum()),
    }


STAGE = Stage(
    name="respond",
    reads="expand",
    settings=lambda config: {
        "respond": config.respond.model_dump(),
        "judge": config.judge.model_dump(),
        **model_settings(config),
    },
    fields=tuple(FIELDS),
    row=respond_row,
    uses_llm=lambda config: True,
    summary=summarize,
    summary_columns=("status", "respond_attempts", "disputes"),
    description="answer x1 (rejection sampling) and judge it",
)
