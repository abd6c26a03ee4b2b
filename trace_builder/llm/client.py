"""LLMClient: cache, concurrency limit, in-flight dedup and token accounting in front of a backend."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from trace_builder.errors import LLMError
from trace_builder.llm.base import Backend, ChatRequest, ChatResult
from trace_builder.llm.cache import RequestCache, request_key
from trace_builder.llm.structured import parse_structured, strict_schema

M = TypeVar("M", bound=BaseModel)


@dataclass
class TagUsage:
    """What one kind of request (a tag such as 'respond.judge') cost."""

    requests: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "TagUsage") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class LLMClient:
    """The only way stages talk to a model.

    - answers are cached by hash(model, messages, params): a rerun asks nothing twice;
    - at most `concurrency` requests are at the backend at once;
    - identical requests in flight at the same time share one backend call;
    - usage is counted per tag, and a tag's prefix (the stage) sums its tasks.
    """

    def __init__(self, backend: Backend, cache: RequestCache | None = None, concurrency: int = 64):
        self.backend = backend
        self.cache = cache
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Future[ChatResult]] = {}
        self.usage: dict[str, TagUsage] = defaultdict(TagUsage)

    @property
    def model(self) -> str:
        return self.backend.model

    async def complete(self, request: ChatRequest, tag: str) -> ChatResult:
        key = request_key(self.backend.model, request)
        usage = self.usage[tag]
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                usage.cache_hits += 1
                return cached
        shared = self._in_flight.get(key)
        if shared is not None:
            usage.cache_hits += 1
            return await asyncio.shield(shared)
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            async with self._slots:
                result = await self.backend.complete(request)
        except BaseException as exc:
            usage.failures += 1
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._in_flight[key]
        usage.requests += 1
        usage.prompt_tokens += result.prompt_tokens
        usage.completion_tokens += result.completion_tokens
        if self.cache is not None:
            self.cache.put(key, self.backend.model, result)
        future.set_result(result)
        return result

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        tag: str,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        seed: int | None = None,
    ) -> str:
        """A free-text answer. An empty answer is a failure ('empty_answer')."""
        request = ChatRequest(
            messages=tuple(messages), temperature=temperature, max_tokens=max_tokens, seed=seed, task=tag
        )
        result = await self.complete(request, tag)
        if not result.text.strip():
            raise LLMError("empty_answer", tag)
        return result.text

    async def chat_json(
        self,
        messages: list[dict[str, str]],
        schema: type[M],
        *,
        tag: str,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> M:
        """A structured answer asked for by JSON Schema and validated by pydantic.

        `json_schema` overrides the schema derived from `schema` (e.g. to pin an array length).
        """
        request = ChatRequest(
            messages=tuple(messages),
            temperature=temperature,
            max_tokens=max_tokens,
            json_schema=json_schema or strict_schema(schema),
            schema_name=schema.__name__,
            seed=seed,
            task=tag,
        )
        result = await self.complete(request, tag)
        try:
            return parse_structured(result.text, schema)
        except LLMError:
            self.usage[tag].failures += 1
            raise

    def usage_for(self, prefix: str) -> dict[str, Any]:
        """Usage summed over the tags of one stage ('expand' sums 'expand.*')."""
        total = TagUsage()
        for tag, usage in self.usage.items():
            if tag == prefix or tag.startswith(prefix + "."):
                total.add(usage)
        return asdict(total)

    def usage_by_task(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Usage of each tag of one stage ('respond.answer', 'respond.judge', ...)."""
        return {tag: asdict(u) for tag, u in sorted(self.usage.items()) if tag.startswith(prefix + ".")}

    async def aclose(self) -> None:
        await self.backend.aclose()
