"""The hybrid judge: deterministic checks decide what they can, an LLM scores the rest 0..10."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from trace_builder.errors import LLMError
from trace_builder.llm.client import LLMClient
from trace_builder.llm.structured import strict_schema
from trace_builder.prompts import render_messages
from trace_builder.records import FULL_MARKS
from trace_builder.verify import run_check, validate_spec


class ConstraintScore(BaseModel):
    # Bounded, so grammar-constrained decoders cannot loop on digits (seen: "index": 1000000...).
    index: int = Field(ge=1, le=40, description="1-based number of the constraint")
    reason: str = Field(max_length=160, description="one short sentence")
    score: int = Field(ge=0, le=10)


class JudgeAnswer(BaseModel):
    scores: list[ConstraintScore]


# How a verdict is stored in Parquet: a list of these structs, one per constraint.
VERDICT_TYPE = pa.struct(
    [
        pa.field("score", pa.int32()),  # the final 0..10
        pa.field("decided_by", pa.string()),  # 'code' or 'llm'
        pa.field("detail", pa.string()),
        pa.field("llm_score", pa.int32()),  # the LLM's own score, also where a check overruled it
    ]
)
JUDGEMENT_TYPE = pa.list_(VERDICT_TYPE)


SKIPPED = "skipped"  # decided_by of a constraint left unjudged: a check (or an earlier verdict) had failed the answer


@dataclass
class ConstraintVerdict:
    score: int | None  # None: not judged (SKIPPED)
    decided_by: str  # 'code' | 'llm' | SKIPPED
    detail: str
    llm_score: int | None = None

    @property
    def disputed(self) -> bool:
        """A check and the LLM disagree on pass/fail (the check wins)."""
        return (
            self.decided_by == "code"
            and self.llm_score is not None
            and (self.llm_score == FULL_MARKS) != (self.score == FULL_MARKS)
        )


@dataclass
class Judgement:
    verdicts: list[ConstraintVerdict]

    @property
    def passed(self) -> bool:
        return all(v.score == FULL_MARKS for v in self.verdicts)

    @property
    def scores(self) -> list[int]:
        return [v.score for v in self.verdicts]

    @property
    def decided_by(self) -> list[str]:
        return [v.decided_by for v in self.verdicts]

    @property
    def disputes(self) -> int:
        return sum(v.disputed for v in self.verdicts)

    def records(self) -> list[dict[str, Any]]:
        """The verdicts as Parquet structs (JUDGEMENT_TYPE)."""
        return [asdict(v) for v in self.verdicts]


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
    verdict_only: bool = False,
    known: list[ConstraintVerdict | None] | None = None,
) -> Judgement:
    """Score every constraint of an instruction against a response.

    The LLM scores every constraint; where a valid check exists its verdict is final and the
    LLM's score is kept beside it, so disagreements can be counted and audited. Raises
    LLMError when the LLM cannot give one valid score per constraint.

    `verdict_only`: the caller needs only whether the response passes (the pipeline's rejection
    sampling and IOPO rule do), so the LLM is asked only when its scores could change that: not when
    a check has already failed the response (the other constraints are left unjudged: score None,
    decided_by SKIPPED), nor when checks and `known` (verdicts an earlier judgement gave this response
    on the same constraint text) already pass every constraint.
    """
    code = run_checks(response, checks, len(constraints), mode)
    if verdict_only:
        decided = [c if c is not None else (known[i] if known else None) for i, c in enumerate(code)]
        if any(v is not None and v.score != FULL_MARKS for v in decided):
            why = "not judged: a check or an earlier verdict had already failed the response"
            unjudged = ConstraintVerdict(None, SKIPPED, why)
            return Judgement([v if v is not None else unjudged for v in decided])
        if all(v is not None for v in decided):
            return Judgement(decided)
    messages = render_messages(
        "judge", language, description=description, constraints=constraints, input_text=input_text, response=response
    )
    answer = await client.chat_json(
        messages,
        JudgeAnswer,
        tag=tag,
        temperature=temperature,
        # A budget per constraint: one fixed cap would cut long lists mid-array.
        max_tokens=32 + tokens_per_constraint * len(constraints),
        json_schema=_judge_schema(len(constraints)),
    )
    verdicts = []
    for checked, item in zip(code, align_scores(answer.scores, len(constraints))):
        if checked is not None:
            checked.llm_score = item.score
            verdicts.append(checked)
        else:
            verdicts.append(ConstraintVerdict(item.score, "llm", item.reason, item.score))
    return Judgement(verdicts)
