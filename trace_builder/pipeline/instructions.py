"""Shared pieces of the LLM stages: structured constraints, check specs, answering, judging."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from trace_builder.judge import ConstraintVerdict, Judgement, judge_response
from trace_builder.llm.client import LLMClient
from trace_builder.llm.structured import strict_schema
from trace_builder.records import FULL_MARKS, SYSTEM_PROMPT, build_user_prompt
from trace_builder.taxonomy import DIMENSIONS, dimension_for_label
from trace_builder.verify import KINDS

DimensionId = Literal[tuple(d.id for d in DIMENSIONS)]  # type: ignore[valid-type]
CheckKindName = Literal[tuple(KINDS)]  # type: ignore[valid-type]


class CheckSpecAnswer(BaseModel):
    # An enum, so constrained decoders can only name registered kinds; params are
    # validated against the kind's own schema afterwards (validate_spec).
    kind: CheckKindName  # type: ignore[valid-type]
    params: dict[str, Any]


class ConstraintAnswer(BaseModel):
    text: str = Field(min_length=1, max_length=400)
    dimension: DimensionId  # type: ignore[valid-type]
    check: CheckSpecAnswer | None


@lru_cache(maxsize=4)
def check_catalogue(language: str) -> str:
    from trace_builder.verify import describe_kinds

    return describe_kinds(language)


def normalise_constraints(items: list[ConstraintAnswer]) -> tuple[list[str], list[str], list[str | None], int]:
    """Texts, dimension ids and validated check specs (as JSON, None if absent or invalid).

    Returns also how many specs were dropped as invalid: an LLM-written spec is data, run
    only after it validates against the registry, and never as code.
    """
    from trace_builder.verify import validate_spec

    texts, dims, checks, dropped = [], [], [], 0
    for item in items:
        texts.append(" ".join(item.text.split()))
        dim = dimension_for_label(item.dimension)
        dims.append(dim.id if dim else "unknown")
        spec = validate_spec(item.check.model_dump()) if item.check is not None else None
        if item.check is not None and spec is None:
            dropped += 1
        checks.append(json.dumps({"kind": spec.kind, "params": spec.params}, ensure_ascii=False) if spec else None)
    return texts, dims, checks, dropped


def slots_schema(dimensions: list[str]) -> dict[str, Any]:
    """JSON Schema for exactly len(dimensions) constraints: an object with slots "1".."N", slot i
    pinned to dimensions[i]. Constrained decoders (vLLM, xgrammar, OpenAI strict mode) then cannot
    return another count or another dimension; the answer is still validated (`read_slots`)."""
    item = strict_schema(ConstraintAnswer)
    defs = item.pop("$defs", {})
    slots = {}
    for number, dimension in enumerate(dimensions, start=1):
        slot = copy.deepcopy(item)
        # The dimension comes first, so a model writes the constraint knowing what it must be.
        slot["properties"] = {"dimension": {"type": "string", "enum": [dimension]}} | {
            k: v for k, v in slot["properties"].items() if k != "dimension"
        }
        slot["required"] = list(slot["properties"])
        slots[str(number)] = slot
    schema = {"type": "object", "properties": slots, "required": list(slots), "additionalProperties": False}
    return {"$defs": defs, **schema} if defs else schema


def with_slots(schema: dict[str, Any], field: str, dimensions: list[str], nullable: bool = False) -> dict[str, Any]:
    """`schema` (a strict schema) with its property `field` replaced by the planned slots."""
    slots = slots_schema(dimensions)
    schema.setdefault("$defs", {}).update(slots.pop("$defs", {}))
    schema["properties"][field] = {"anyOf": [{"type": "null"}, slots]} if nullable else slots
    return schema


def read_slots(
    slots: dict[str, ConstraintAnswer] | None, planned: list[str]
) -> tuple[list[ConstraintAnswer], str | None]:
    """The constraints in slot order, and why they do not match the plan (None when they do)."""
    slots = slots or {}
    expected = [str(i) for i in range(1, len(planned) + 1)]
    if sorted(slots, key=lambda k: (len(k), k)) != expected:
        return [], f"{len(slots)} constraints for a plan of {len(planned)}"
    items = [slots[k] for k in expected]
    wrong = [
        f"{i} is {item.dimension}, planned {dim}"
        for i, (item, dim) in enumerate(zip(items, planned), 1)
        if item.dimension != dim
    ]
    return items, ("constraint " + "; ".join(wrong) if wrong else None)


def parse_checks(checks: list[str | None] | None) -> list[dict | None]:
    return [json.loads(c) if c else None for c in (checks or [])]


def prompt_of(row: dict, suffix: str = "") -> str:
    return build_user_prompt(row["description"], row["constraints" + suffix], row["input"])


async def answer_instruction(
    client: LLMClient, prompt: str, *, tag: str, temperature: float, max_tokens: int, seed: int
) -> str:
    """The model's answer to an instruction, asked exactly as TRACE lays it out (system + user)."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    return await client.chat(messages, tag=tag, temperature=temperature, max_tokens=max_tokens, seed=seed)


def audited(config, *keys: object) -> bool:
    """Whether this judgement is in the audit sample: the LLM judges it although a check already
    failed the response, so check/judge disagreements stay measured (`judge.audit_share`)."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in (config.seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < config.judge.audit_share


def verdicts_by_text(constraints: list[str], judgement: list[dict] | None) -> dict[str, ConstraintVerdict]:
    """An earlier judgement of a response, by constraint text: what judging the same response against
    an instruction sharing those constraints (x2 against y1, x1 against y2) need not ask again."""
    return {
        text: ConstraintVerdict(**record)
        for text, record in zip(constraints, judgement if judgement is not None else [])
        if record["score"] is not None
    }


async def judge_row(
    client: LLMClient,
    row: dict,
    response: str,
    *,
    suffix: str,
    tag: str,
    config,
    known: dict[str, ConstraintVerdict] | None = None,
) -> Judgement:
    """Judge `response` against the row's constraints (suffix '' for x1, '_2' for x2). The pipeline needs
    only pass or fail: the LLM judge is not asked where checks and `known` verdicts (`verdicts_by_text`)
    already decide it (`judge_response`'s verdict_only), but for an audit sample."""
    verdict_only = config.judge.skip_after_failed_check and not audited(config, row["id"], tag, suffix, response)
    return await judge_response(
        client,
        language=row["language"],
        description=row["description"],
        constraints=row["constraints" + suffix],
        input_text=row["input"],
        response=response,
        checks=parse_checks(row["checks" + suffix]),
        tag=tag,
        temperature=config.generation.judge_temperature,
        tokens_per_constraint=config.generation.judge_tokens_per_constraint,
        verdict_only=verdict_only,
        known=[known.get(text) for text in row["constraints" + suffix]] if known else None,
    )


def failed_constraints(judgement: Judgement) -> str:
    """'2 (llm: 6), 4 (code: 0)' for a reason detail."""
    return ", ".join(
        f"{i} ({v.decided_by}: {v.score})"
        for i, v in enumerate(judgement.verdicts, start=1)
        if v.score is not None and v.score != FULL_MARKS
    )
