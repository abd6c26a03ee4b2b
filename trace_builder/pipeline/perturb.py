"""Stage 'perturb': the row's two preference sides, made at the same time (each needs only y1): DPO's
rejected answer (a deliberately worse answer the judge fails), and the IOPO group: change x1's
constraints so y1 violates them (x2), answer x2, judge the pairings.

The group rule: (x1, y1) and (x2, y2) earn full marks, (x2, y1) does not; (x1, y2) is
recorded, and with `perturb.strict` it must fail too. Every operation is asked so that it
can pass that rule (per-constraint judging means y1 can only fail x2 through a constraint
that x2 holds and y1 breaks):
- ADD: x2 = x1 plus one or two constraints y1 does not meet.
- DELETE: x2 drops one or more of x1's constraints that y1 is built around, and one kept or
  new constraint states the opposite of a dropped requirement; x2 is shorter than x1.
- REVISE: x2 has as many constraints as x1, one or two rewritten so that y1 violates them.
A failed attempt is retried with the next operation, up to `perturb.attempts` in all.
"""

from __future__ import annotations

import asyncio

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.errors import LLMError
from trace_builder.judge import JUDGEMENT_TYPE
from trace_builder.llm.structured import strict_schema
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.instructions import (
    ConstraintAnswer,
    check_catalogue,
    failed_constraints,
    judge_row,
    normalise_constraints,
    prompt_of,
    verdicts_by_text,
)
from trace_builder.pipeline.respond import attempts_allowed, best_answer
from trace_builder.pipeline.stage import Stage, model_settings
from trace_builder.prompts import render_messages
from trace_builder.report.fidelity import iopo_yield

ATTEMPT_TYPE = pa.struct([pa.field("op", pa.string()), pa.field("outcome", pa.string())])  # outcome: ok or a reason

FIELDS = [
    pa.field("perturb_op", pa.string()),
    pa.field("perturb_explanation", pa.string()),
    pa.field("constraints_2", pa.list_(pa.string())),
    pa.field("dimensions_2", pa.list_(pa.string())),
    pa.field("checks_2", pa.list_(pa.string())),
    pa.field("prompt_2", pa.string()),
    pa.field("response_2", pa.string()),
    pa.field("judgement_x2_y2", JUDGEMENT_TYPE),
    pa.field("judgement_x2_y1", JUDGEMENT_TYPE),
    pa.field("judgement_x1_y2", JUDGEMENT_TYPE),
    pa.field("x1_y2_passes", pa.bool_()),
    pa.field("perturb_attempts", pa.list_(ATTEMPT_TYPE)),
    pa.field("iopo_status", pa.string()),  # ok | failed
    pa.field("iopo_reason", pa.string()),
    pa.field("iopo_detail", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("rejected_judgement", JUDGEMENT_TYPE),
    pa.field("rejected_attempts", pa.int32()),
    pa.field("dpo_status", pa.string()),  # ok | failed | skipped
    pa.field("dpo_reason", pa.string()),
]


class PerturbedConstraints(BaseModel):
    constraints: list[ConstraintAnswer] = Field(min_length=1, max_length=20)
    explanation: str = Field(max_length=400)


def size_bounds(operation: str, count: int) -> tuple[int, int]:
    """How many constraints x2 may hold after `operation` on `count`: the request's schema enforces it."""
    return {"add": (count + 1, count + 2), "delete": (1, count - 1), "revise": (count, count)}[operation]


def operation_mismatch(operation: str, before: list[str], after: list[str]) -> str | None:
    """Why the new list does not look like the operation asked for, or None if it does."""
    if after == before:
        return "constraints unchanged"
    low, high = size_bounds(operation, len(before))
    if not low <= len(after) <= high:
        return f"{operation.upper()} gave {len(after)} constraints for {len(before)}"
    if operation == "add" and not set(before) <= set(after):
        return "ADD changed existing constraints"
    return None


def operation_order(ctx: StageContext, row: dict) -> list[str]:
    """The operations to try, first one drawn uniformly, then the others in turn."""
    operations = [op for op in ctx.config.perturb.operations if not (op == "delete" and len(row["constraints"]) < 2)]
    operations = operations or ["add"]  # deleting the only constraint would leave none
    first = ctx.rng("perturb-op", row["id"]).choice(ctx.config.perturb.operations)
    if first not in operations:
        first = operations[0]
    start = operations.index(first)
    return operations[start:] + operations[:start]


class _AttemptFailed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail


async def perturb_row(ctx: StageContext, row: dict) -> dict:
    """DPO's rejected answer and the IOPO group, concurrently; either failing fails only its own side
    (the SFT row stays ok). A row admitted for the eval split (a target-size run) gets neither: the
    eval dataset carries no pairs, so they would be requests spent on nothing."""
    if row.get("split") == "eval":
        row.update(dpo_status="skipped", dpo_reason="eval_row", iopo_status="skipped", iopo_reason="eval_row")
        return row
    if ctx.config.respond.make_rejected:
        await asyncio.gather(make_rejected(ctx, row), iopo_group(ctx, row))
    else:
        row.update(dpo_status="skipped", dpo_reason="")
        await iopo_group(ctx, row)
    return row


async def make_rejected(ctx: StageContext, row: dict) -> None:
    """A deliberately worse answer, kept only if the judge fails it on some constraint."""
    gen = ctx.config.generation
    attempts = attempts_allowed(ctx, ctx.config.respond.rejected_attempts)
    try:
        for attempt in range(1, attempts + 1):
            worse = await ctx.client.chat(
                render_messages("worse", row["language"], prompt=row["prompt"], response=row["response"]),
                tag="perturb.worse",
                temperature=gen.temperature,
                max_tokens=gen.max_tokens,
                seed=ctx.llm_seed("worse", row["id"], *([attempt] if attempt > 1 else [])),
            )
            judgement = await judge_row(
                ctx.client, row, worse, suffix="", tag="perturb.judge_rejected", config=ctx.config
            )
            row["disputes"] = (row.get("disputes") or 0) + judgement.disputes
            row.update(rejected=worse, rejected_judgement=judgement.records(), rejected_attempts=attempt)
            if not judgement.passed:
                row.update(dpo_status="ok", dpo_reason="")
                return
    except LLMError as exc:
        row.update(dpo_status="failed", dpo_reason=exc.reason)
        return
    row.update(dpo_status="failed", dpo_reason="rejected_passed_judge")


async def iopo_group(ctx: StageContext, row: dict) -> None:
    """Build one IOPO group; an unusable group fails only the IOPO side."""
    operations = operation_order(ctx, row)
    tried = []
    for attempt in range(ctx.config.perturb.attempts):
        operation = operations[attempt % len(operations)]
        row["perturb_op"] = operation
        try:
            await _perturb(ctx, row, operation, attempt)
        except _AttemptFailed as failed:
            tried.append({"op": operation, "outcome": failed.reason})
            row.update(iopo_status="failed", iopo_reason=failed.reason, iopo_detail=failed.detail[:300])
            continue
        except LLMError as exc:
            tried.append({"op": operation, "outcome": exc.reason})
            row.update(iopo_status="failed", iopo_reason=exc.reason, iopo_detail=exc.detail[:300])
            continue
        tried.append({"op": operation, "outcome": "ok"})
        row.update(iopo_status="ok", iopo_reason="", iopo_detail="")
        break
    row["perturb_attempts"] = tried


async def _perturb(ctx: StageContext, row: dict, operation: str, attempt: int) -> None:
    client, gen, cfg = ctx.client, ctx.config.generation, ctx.config
    lang, count = row["language"], len(row["constraints"])
    low, high = size_bounds(operation, count)
    schema = strict_schema(PerturbedConstraints)
    schema["properties"]["constraints"].update(minItems=low, maxItems=high)
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
        seed=ctx.llm_seed("perturb", row["id"], *([attempt] if attempt else [])),
        json_schema=schema,
    )
    texts, dims, checks, _ = normalise_constraints(changed.constraints)
    row.update(constraints_2=texts, dimensions_2=dims, checks_2=checks, perturb_explanation=changed.explanation)
    mismatch = operation_mismatch(operation, row["constraints"], texts)
    if mismatch:
        raise _AttemptFailed("perturb_not_applied", mismatch)
    row["prompt_2"] = prompt_of(row, "_2")

    # y1 must fail x2 first: no y2 is worth asking for a perturbation that y1 still follows.
    y1_known = verdicts_by_text(row["constraints"], row["judgement"])
    x2_y1 = await judge_row(client, row, row["response"], suffix="_2", tag="perturb.judge", config=cfg, known=y1_known)
    row["judgement_x2_y1"] = x2_y1.records()
    row["disputes"] = (row.get("disputes") or 0) + x2_y1.disputes
    if x2_y1.passed:
        raise _AttemptFailed("y1_still_follows_x2")
    attempts = attempts_allowed(ctx, cfg.respond.attempts)
    response_2, x2_y2, _ = await best_answer(ctx, row, "_2", "perturb", attempts)
    row.update(response_2=response_2, judgement_x2_y2=x2_y2.records())
    if not x2_y2.passed:
        raise _AttemptFailed("y2_fails_x2", failed_constraints(x2_y2))
    y2_known = verdicts_by_text(row["constraints_2"], row["judgement_x2_y2"])
    x1_y2 = await judge_row(client, row, response_2, suffix="", tag="perturb.judge", config=cfg, known=y2_known)
    row["disputes"] += x1_y2.disputes
    row.update(judgement_x1_y2=x1_y2.records(), x1_y2_passes=x1_y2.passed)
    if cfg.perturb.strict and x1_y2.passed:
        raise _AttemptFailed("y2_follows_x1")


def summarize(frame) -> dict:
    """IOPO yield per operation (from every attempt), for `status` and the run summary."""
    if "perturb_attempts" not in frame:
        return {}
    yields = iopo_yield(frame)
    rejected = frame["rejected_attempts"].dropna() if "rejected_attempts" in frame else frame.iloc[:0]
    return {
        "IOPO groups kept per attempt": ", ".join(
            f"{op} {y['kept']}/{y['attempts']} ({y['yield']:.0%})" for op, y in yields.items()
        ),
        "x1_y2 passes in kept groups": int(frame.loc[frame["iopo_status"] == "ok", "x1_y2_passes"].fillna(False).sum()),
        "worse answers per DPO try": round(float(rejected.mean()), 2) if len(rejected) else 0.0,
    }


STAGE = Stage(
    name="perturb",
    reads="respond",
    settings=lambda config: {
        "perturb": config.perturb.model_dump(),
        "rejected": {"make_rejected": config.respond.make_rejected, "attempts": config.respond.rejected_attempts},
        "judge": config.judge.model_dump(),
        "seed": config.seed,
        **model_settings(config),
    },
    fields=tuple(FIELDS),
    row=perturb_row,
    uses_llm=lambda config: True,
    summary=summarize,
    summary_columns=("perturb_attempts", "iopo_status", "x1_y2_passes", "rejected_attempts"),
    fails_rows=False,  # make_rejected and iopo_group catch their failures
    description="DPO's rejected answer, and x1 perturbed into x2, answered, the four pairings judged (IOPO)",
)
