"""The one interface every backend implements: an async chat completion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    `json_schema`, when set, is a JSON Schema the answer must satisfy: the openai backend
    sends it as `response_format={"type": "json_schema", ...}`, the local backend enforces
    it by constrained decoding.
    """

    messages: tuple[dict[str, str], ...]
    temperature: float = 0.0
    max_tokens: int = 1024
    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    seed: int | None = None
    # Which pipeline task asks (e.g. 'respond.judge'): sent as a header for server-side
    # logs and test doubles; not part of the cache key, since it does not change the answer.
    task: str = ""

    def params(self) -> dict[str, Any]:
        """Everything besides the messages that changes the answer (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_schema": self.json_schema,
            "seed": self.seed,
        }


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # Answered through the Batch API (llm/batch.py): its tokens are priced at `prices.batch_discount`.
    batched: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    cached_at: float | None = None  # when the answer cache stored it (epoch seconds); None: just answered


class Backend(Protocol):
    """A chat model. `complete` raises trace_builder.errors.LLMError when it gives up."""

    name: str
    model: str

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...
