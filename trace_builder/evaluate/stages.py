"""Evaluation's stages on the pipeline's engine: items (the set, in chunks), predictions, judgements."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from trace_builder.errors import LLMError
from trace_builder.evaluate.items import EvalItem
from trace_builder.evaluate.metrics import GENERATION_FAILED, JUDGE_FAILED, OK
from trace_builder.evaluate.settings import EvalConfig
from trace_builder.judge import judge_response
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.client import LLMClient
from trace_builder.pipeline.failures import FailureSide
from trace_builder.pipeline.stage import Row, Stage
from trace_builder.prompts import prompts_digest
from trace_builder.run.store import StageStore

GENERATE_TAG = "eval.generate"
JUDGE_TAG = "eval.judge"

_TEXTS = pa.list_(pa.string())

# What the judge needs of an item besides its answer. Predictions keep it too, so that a
# resumed run can judge (or record a failed answer) from the predictions shard alone.
_ITEM_FIELDS = [
    pa.field("description", pa.string()),
    pa.field("input_text", pa.string()),
    pa.field("constraints", _TEXTS),
    pa.field("dimensions", _TEXTS),
    pa.field("dimension_labels", _TEXTS),  # the source's labels, else the dimension ids
    pa.field("checks", _TEXTS),  # JSON check specs aligned with constraints (null entries: none); null: no checks
]

# What identifies an item and how it is asked: the first columns of items and predictions alike.
_ITEM_HEAD = [
    pa.field("id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("language", pa.string()),
    pa.field("category", pa.string()),
    pa.field("constraint_count", pa.int32()),
    pa.field("system", pa.string()),
    pa.field("prompt", pa.string()),
]

ITEM_SCHEMA = pa.schema(
    [
        *_ITEM_HEAD,
        *_ITEM_FIELDS,
        pa.field("reference", pa.string()),
        pa.field("status", pa.string()),  # always ok: the engine carries rows whose status is ok
        pa.field("reason", pa.string()),
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        *_ITEM_HEAD,
        pa.field("response", pa.string()),
        pa.field("status", pa.string()),  # ok | generation_failed
        pa.field("reason", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("completion_tokens", pa.int64()),
        *_ITEM_FIELDS,
    ]
)

JUDGEMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("language", pa.string()),
        pa.field("constraint_count", pa.int32()),
        pa.field("constraints", _TEXTS),
        pa.field("dimensions", _TEXTS),
        pa.field("dimension_labels", _TEXTS),
        pa.field("status", pa.string()),  # ok | generation_failed | judge_failed
        pa.field("reason", pa.string()),
        pa.field("scores", pa.list_(pa.int32())),  # null unless status == ok
        pa.field("decided_by", _TEXTS),
        pa.field("details", _TEXTS),
        pa.field("followed", pa.bool_()),  # null unless status == ok
        pa.field("llm_scores", pa.list_(pa.int32())),  # the judge LLM's own scores, also where a check decided
    ]
)

JudgeFn = Callable[..., Awaitable[Any]]


def items_digest(items: Sequence[EvalItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        blob = json.dumps(
            [item.id, item.system, item.prompt, item.constraints, item.checks], ensure_ascii=False, default=str
        )
        digest.update(blob.encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass
class EvalContext:
    """What eval's stages get: the settings, the items, both models (opened later) and the judge function."""

    config: EvalConfig
    run_dir: Path
    items: Sequence[EvalItem]
    model: LLMClient | None = None
    judge: LLMClient | None = None
    judge_fn: JudgeFn = judge_response


def item_row(item: EvalItem) -> Row:
    checks = (
        None if item.checks is None else [None if c is None else json.dumps(c, ensure_ascii=False) for c in item.checks]
    )
    return {
        "id": item.id,
        "source": item.source,
        "language": item.language,
        "category": item.category,
        "constraint_count": item.constraint_count,
        "system": item.system,
        "prompt": item.prompt,
        "description": item.description,
        "input_text": item.input_text,
        "constraints": list(item.constraints),
        "dimensions": list(item.dimensions),
        "dimension_labels": list(item.dimension_labels or item.dimensions),
        "checks": checks,
        "reference": item.reference,
        "status": OK,
        "reason": "",
    }


async def write_items(ctx: EvalContext, source: StageStore | None, store: StageStore) -> dict[str, Any]:
    """The items as shards of `chunk_size` rows: the chunks every later stage writes in."""
    size = ctx.config.chunk_size
    for index, start in enumerate(range(0, len(ctx.items), size)):
        rows = [item_row(item) for item in ctx.items[start : start + size]]
        store.write_shard(index, pa.Table.from_pylist(rows, schema=ITEM_SCHEMA))
    return {"items": len(ctx.items), "chunk_size": size}


async def predict(ctx: EvalContext, row: Row) -> Row:
    """The model under test answers; a failure after the backend's retries is recorded, not raised."""
    generation = ctx.config.generation
    request = ChatRequest(
        messages=({"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}),
        temperature=generation.temperature,
        max_tokens=generation.max_tokens,
        seed=generation.seed,
        task=GENERATE_TAG,
    )
    try:
        result = await ctx.model.complete(request, GENERATE_TAG)
    except LLMError as exc:
        row.update(response="", finish_reason="", completion_tokens=0)
        return _failed(row, GENERATION_FAILED, exc.reason, "predictions")
    row.update(
        response=result.text, finish_reason=result.finish_reason or "", completion_tokens=result.completion_tokens
    )
    return row


async def judge(ctx: EvalContext, row: Row) -> Row:
    """The judge scores every constraint of the answer (checks first). Only answered rows get here."""
    count = row["constraint_count"]
    if not row["response"].strip():
        # An empty answer follows no instruction; asking a judge about it would only add noise.
        return _scored(row, "empty_response", [0] * count, ["code"] * count, ["empty response"] * count, [None] * count)
    checks = row.get("checks")
    judging = ctx.config.judging
    try:
        judgement = await ctx.judge_fn(
            ctx.judge,
            language=row["language"],
            description=row["description"],
            constraints=list(row["constraints"]),
            input_text=row["input_text"],
            response=row["response"],
            checks=[None if c is None else json.loads(c) for c in checks] if checks else None,
            mode=judging.mode,
            tag=JUDGE_TAG,
            temperature=judging.temperature,
            tokens_per_constraint=judging.tokens_per_constraint,
        )
    except LLMError as exc:
        return _failed(row, JUDGE_FAILED, exc.reason, "judgements")
    verdicts = list(judgement.verdicts)
    if len(verdicts) != count:
        return _failed(row, JUDGE_FAILED, "judge_count_mismatch", "judgements")
    return _scored(
        row,
        "",
        [int(v.score) for v in verdicts],
        [str(v.decided_by) for v in verdicts],
        [str(v.detail) for v in verdicts],
        [getattr(v, "llm_score", None) for v in verdicts],
    )


def _failed(row: Row, status: str, reason: str, stage: str) -> Row:
    # failed_stage is not stored: it tells the progress bar which stage to count the failure in.
    row.update(status=status, reason=reason, failed_stage=stage)
    return row


def _scored(
    row: Row, reason: str, scores: list[int], decided_by: list[str], details: list[str], llm_scores: list
) -> Row:
    row.update(
        status=OK,
        reason=reason,
        scores=scores,
        decided_by=decided_by,
        details=details,
        followed=all(s >= 10 for s in scores),
        llm_scores=llm_scores,
    )
    return row


def _items_settings(ctx: EvalContext) -> dict[str, Any]:
    # The items themselves, not how they are chunked: a resumed run keeps its first chunking.
    return {"items": items_digest(ctx.items)}


def _prediction_settings(ctx: EvalContext) -> dict[str, Any]:
    model = ctx.config.model
    return {"model": {"kind": model.kind, "model": model.model}, "generation": ctx.config.generation.model_dump()}


def _judgement_settings(ctx: EvalContext) -> dict[str, Any]:
    judge_config = ctx.config.judge
    return {
        "judge": {"kind": judge_config.kind, "model": judge_config.model},
        "judging": ctx.config.judging.model_dump(),
        "judge_prompt": prompts_digest("judge.j2"),
    }


def _asks(ctx: Any) -> bool:
    return True


ITEMS = Stage(
    name="items",
    reads=None,
    settings=_items_settings,
    fields=tuple(ITEM_SCHEMA),
    whole=write_items,
    description="the evaluation set, in chunks of chunk_size items",
)
PREDICTIONS = Stage(
    name="predictions",
    reads="items",
    settings=_prediction_settings,
    fields=tuple(PREDICTION_SCHEMA),
    row=predict,
    uses_llm=_asks,
    description="the model under test answers every item",
)
JUDGEMENTS = Stage(
    name="judgements",
    reads="predictions",
    settings=_judgement_settings,
    fields=tuple(JUDGEMENT_SCHEMA),
    row=judge,
    uses_llm=_asks,
    description="the judge scores every constraint of every answer",
)
# Eval's stages write whole shards of their own schema (`fields`), not the pipeline's growing rows.
STAGES: tuple[Stage, ...] = (ITEMS, PREDICTIONS, JUDGEMENTS)
# Where an item's failure is recorded, for re-asking those that failed for a transient reason.
FAILURE_SIDES = (
    FailureSide("status", GENERATION_FAILED, "reason", PREDICTIONS.name),
    FailureSide("status", JUDGE_FAILED, "reason", JUDGEMENTS.name),
)
SCHEMAS: dict[str, pa.Schema] = {stage.name: pa.schema(stage.fields) for stage in STAGES}
