"""The hybrid judge: deterministic checks decide what they can, an LLM scores the rest 0..10."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, Field

from trace_builder.errors import LLMError
from trace_builder.llm.client import LLMClient
from trace_builder.llm.structured import strict_schema
from trace_builder.prompts import render_messages
from trace_builder.verify import run_check, validate_spec

FULL_MARKS = 10


class ConstraintScore(BaseModel):
    # Bounded, so grammar-constrained decoders cannot loop on digits (seen: "index": 1000000...).
    index: int = Field(ge=1, le=40, description="1-based number of the constraint")
    reason: str = Field(max_length=160, description="one short sentence")
    score: int = Field(ge=0, le=10)


class JudgeAnswer(BaseModel):
    scores: list[ConstraintScore]


@dataclass
class ConstraintVerdict:
    score: int
    decided_by: str  # 'code' | 'llm'
    detail: str


@dataclass
class Judgement:
    verdicts: list[ConstraintVerdict]

    @property
    def passed(self) -> bool:
        return all(v.score == FULL_MARKS for v in self.verdicts)

    @property
    def scores(self) -> list[int]:
        return [v.score for v in self.verdicts]

    def to_json(self) -> str:
        return json.dumps([asdict(v) for v in self.verdicts], ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Judgement":
        return cls([ConstraintVerdict(**v) for v in json.loads(text)])


def run_checks(response: str, checks: list[Any] | None, count: int, mode: str) -> list[ConstraintVerdict | None]:
    """Code verdicts for the constraints that carry a valid check spec; None elsewhere.

    Specs come from an LLM, so each is validated against the registry first and only
    ever dispatched to a registered pure function; an invalid one is ignored.
    """
    verdicts: list[ConstraintVerdict | None] = [None] * count
    for i, raw in enumerate((checks or [])[:count]):
        spec = validate_spec(raw) if raw is not None else None
        if spec is None:
            continue
        verdict = run_check(spec, response, mode=mode)
        verdicts[i] = ConstraintVerdict(FULL_MARKS if verdict.passed else 0, "code", f"{spec.kind}: {verdict.detail}")
    return verdicts


def align_scores(scores: list[ConstraintScore], count: int) -> list[ConstraintScore]:
    """The scores in constraint order: by their index when it numbers 1..count, else by position.

    The schema pins the array to `count` items, but not the index values a model writes, so
    a well-sized answer with muddled indices is still read in order.
    """
    by_index = {s.index: s for s in scores}
    if sorted(by_index) == list(range(1, count + 1)) and len(scores) == count:
        return [by_index[i] for i in range(1, count + 1)]
    if len(scores) == count:
        return list(scores)
    raise LLMError("judge_count_mismatch", f"expected {count} scores, got {len(scores)}")


def _judge_schema(count: int) -> dict[str, Any]:
    schema = strict_schema(JudgeAnswer)
    # Exactly one score per constraint: constrained decoders enforce it, others are checked below.
    schema["properties"]["scores"]["minItems"] = count
    schema["properties"]["scores"]["maxItems"] = count
    return schema


async def judge_response(
    client: LLMClient,
    *,
    language: str,
    description: str,
    constraints: list[str],
    input_text: str,
    response: str,
    checks: list[Any] | None = None,
    mode: str = "strict",
    tag: str = "judge",
    temperature: float = 0.0,
    tokens_per_constraint: int = 96,
) -> Judgement:
    """Score every constraint of an instruction against a response.

    Raises LLMError when the LLM part cannot give one valid score per constraint it owns.
    """
    code = run_checks(response, checks, len(constraints), mode)
    owned = [i for i, verdict in enumerate(code) if verdict is None]
    llm: dict[int, ConstraintVerdict] = {}
    if owned:
        messages = render_messages(
            "judge",
            language,
            description=description,
            constraints=[constraints[i] for i in owned],
            input_text=input_text,
            response=response,
        )
        answer = await client.chat_json(
            messages,
            JudgeAnswer,
            tag=tag,
            temperature=temperature,
            # A budget per constraint: one fixed cap would cut long lists mid-array.
            max_tokens=32 + tokens_per_constraint * len(owned),
            json_schema=_judge_schema(len(owned)),
        )
        for i, item in zip(owned, align_scores(answer.scores, len(owned))):
            llm[i] = ConstraintVerdict(item.score, "llm", item.reason)
    return Judgement([code[i] or llm[i] for i in range(len(constraints))])
