"""Rewards for RL from a row's own constraints: its checks decide what they can, an LLM judge the rest.

Both take TRL's reward-function form: keyword lists `prompts`, `completions` (strings or chat
messages) and one per dataset column, of which they read `trace_ground_truth` (`ground_truth`),
and return one float per completion, or None where they have nothing to decide. A thinking
section is not part of the answer; an empty answer, or one that mostly repeats the prompt (whose
constraints name the very keywords a check looks for), earns 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from trace_builder.errors import LLMError
from trace_builder.judge import judge_response
from trace_builder.pipeline.decontaminate import tokens
from trace_builder.records import FULL_MARKS
from trace_builder.verify import CheckSpec, run_check, validate_spec

# Read besides, not text: what a reward decides an answer by (any final dataset carries them).
GROUND_TRUTH_COLUMNS = ("language", "description", "input", "constraints", "dimensions", "checks")
# The column that carries them to a reward function, named so that no trainer's keyword takes it.
GROUND_TRUTH = "trace_ground_truth"
MODES = ("fraction", "all")
# An answer whose word 4-grams come from the prompt this much (or more) repeats it.
REPEAT_SHARE = 0.8
_NGRAM = 4


def answer_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The answer in a completion: the assistant's text, after any thinking section."""
    if not isinstance(completion, str):
        completion = "".join(
            str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant"
        )
    return completion.split("</think>")[-1].strip()


def _prompt_text(prompt: str | Sequence[dict[str, Any]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content") or "") for m in prompt if m.get("role") == "user")


def repeats_prompt(answer: str, prompt: str) -> bool:
    """Whether `answer` is mostly the prompt said again (word 4-grams; whole tokens when shorter)."""
    said, asked = tokens(answer), tokens(prompt)
    if len(said) < _NGRAM:
        return bool(said) and " ".join(said) in " ".join(asked)
    grams = {tuple(said[i : i + _NGRAM]) for i in range(len(said) - _NGRAM + 1)}
    known = {tuple(asked[i : i + _NGRAM]) for i in range(len(asked) - _NGRAM + 1)}
    return len(grams & known) >= REPEAT_SHARE * len(grams)


def ground_truth(row: dict[str, Any]) -> dict[str, Any]:
    """What a reward decides an answer by: the instruction's parts and, per constraint, its text,
    dimension and check spec (JSON, or None where no check applies)."""
    checks = row.get("checks")
    if checks is None:
        checks = [None] * len(row["constraints"])
    return {
        "language": row["language"],
        "description": row["description"],
        "input": row["input"],
        "constraints": [
            {"text": text, "dimension": dimension, "check": check}
            for text, dimension, check in zip(row["constraints"], row["dimensions"], checks, strict=True)
        ],
    }


def ground_truth_of(value: dict[str, Any] | str) -> dict[str, Any]:
    """A row's ground truth, as the dataset holds it (a struct) or as JSON text (a JSONL export)."""
    return json.loads(value) if isinstance(value, str) else value


def check_specs(truth: dict[str, Any]) -> list[CheckSpec | None]:
    """Each constraint's check, or None where it has none (or a spec no longer valid)."""
    return [validate_spec(json.loads(c["check"])) if c.get("check") else None for c in truth["constraints"]]


def score(met: Sequence[bool], mode: str) -> float | None:
    """The reward of per-constraint outcomes: the share met, or 1/0 for all met (None: nothing decided)."""
    if not met:
        return None
    return float(all(met)) if mode == "all" else sum(met) / len(met)


def constraint_reward(
    prompts: Sequence[Any], completions: Sequence[Any], mode: str = "fraction", **columns: Any
) -> list[float | None]:
    """The share of each completion's checkable constraints that its checks pass (strict), or with
    mode="all" 1.0 only when all pass; None for a row without checks."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    rewards: list[float | None] = []
    for prompt, completion, value in zip(prompts, completions, columns[GROUND_TRUTH], strict=True):
        specs = [spec for spec in check_specs(ground_truth_of(value)) if spec is not None]
        if not specs:
            rewards.append(None)
            continue
        answer = answer_text(completion)
        if not answer or repeats_prompt(answer, _prompt_text(prompt)):
            rewards.append(0.0)
            continue
        rewards.append(score([run_check(spec, answer).passed for spec in specs], mode))
    return rewards


class JudgeReward:
    """The LLM judge's reward for the constraints no check decides: the share it gives full marks
    (mode="all": 1.0 only when it gives all of them full marks); None for a row where every
    constraint has a check. Async; the judge is any backend, set as eval's judge is."""

    def __init__(self, backend: Any, mode: str = "fraction", cache_path: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.backend_config = backend
        self.mode = mode
        self.cache_path = cache_path
        self._client: Any = None
        self.__name__ = "judge_reward"

    def _open(self) -> Any:
        from trace_builder.llm.cache import RequestCache
        from trace_builder.llm.client import LLMClient
        from trace_builder.llm.factory import make_backend

        if self._client is None:
            cache = RequestCache(self.cache_path) if self.cache_path else None
            backend = make_backend(self.backend_config)
            self._client = LLMClient(backend, cache, concurrency=self.backend_config.concurrency)
        return self._client

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        jobs = [
            self._judge(prompt, completion, ground_truth_of(value))
            for prompt, completion, value in zip(prompts, completions, columns[GROUND_TRUTH], strict=True)
        ]
        return list(await asyncio.gather(*jobs))

    async def _judge(self, prompt: Any, completion: Any, truth: dict[str, Any]) -> float | None:
        unchecked = [c["text"] for c, spec in zip(truth["constraints"], check_specs(truth)) if spec is None]
        if not unchecked:
            return None
        answer = answer_text(completion)
        if not answer or repeats_prompt(answer, _prompt_text(prompt)):
            return 0.0
        try:
            judgement = await judge_response(
                self._open(),
                language=truth["language"],
                description=truth["description"],
                constraints=unchecked,
                input_text=truth["input"],
                response=answer,
                tag="reward.judge",
            )
        except LLMError:
            return None  # no verdict is no signal: TRL leaves a None out of the sum
        return score([verdict.score == FULL_MARKS for verdict in judgement.verdicts], self.mode)
