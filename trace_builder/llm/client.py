"""LLMClient: cache, concurrency limit, in-flight dedup and token accounting in front of a backend."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

from trace_builder.errors import LLMError
from trace_builder.llm.base import Backend, ChatRequest, ChatResult
from trace_builder.llm.cache import RequestCache, request_key
from trace_builder.llm.storm import RefusalWatch
from trace_builder.llm.structured import parse_structured, strict_schema

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@dataclass
class TagUsage:
    """What one kind of request (a tag such as 'respond.judge') cost."""

    requests: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The part of the above answered through the Batch API (priced at its discount).
    batched: int = 0
    batched_prompt_tokens: int = 0
    batched_completion_tokens: int = 0
    # Answers the cache served that the run's own counts do not hold, and their tokens: asked by a
    # plan's pilot, or before the stage's counts began (`LLMClient.count_from`). What the data cost
    # in all, beside what the run paid. A replay of the run's own answer (a shard redone) is not one.
    prepaid_hits: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    def add(self, other: TagUsage) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class RowSchedule:
    """How the requests of a row engine's rows are ordered when more wait than there are slots.

    The row furthest behind goes first (an earlier stage, fewer answers in it: the most requests
    still to make), so rows move level and the run ends with its slots full, instead of a few
    late rows finishing their chains one sequential request at a time while slots stand idle.
    While rows keep being admitted, that holds within a wave (`wave` rows in admission order, the
    rows alive at once) and the older wave goes first: a row is never passed over by the whole
    rest of the run, so shards still complete about in order and few stay open. Once no more rows
    are coming (`draining`), the rows alive are one wave.
    (scripts/bench_pipeline.py --sampled, 1,000 seeds: 0.913-0.923 of the ideal against 0.899-0.914
    with the oldest row first while admitting; the last tenth of the run 0.55-0.61 full, not 0.47-0.49.)
    """

    wave: int = 1  # rows per wave: the engine gives the rows it keeps alive
    draining: bool = False
    # Changes of any schedule: waiters ranked before the last one are ranked again.
    changes: ClassVar[int] = 0

    def drain(self, draining: bool) -> None:
        if draining != self.draining:
            self.draining = draining
            RowSchedule.changes += 1


@dataclass
class RowProgress:
    """Where the row a request serves stands; the row engine sets it, the client counts answers."""

    schedule: RowSchedule
    order: int  # admission order
    stage: int = 0  # position of the row's current stage in the chain
    requests: int = 0  # answers this row got from the backend in that stage

    def rank(self) -> tuple[int, ...]:
        wave = 0 if self.schedule.draining else self.order // max(self.schedule.wave, 1)
        return (wave, self.stage, self.requests, self.order)


# Set by the row engine in each row's task (a task's context is its own).
ROW_PROGRESS: ContextVar[RowProgress | None] = ContextVar("row_progress", default=None)


class PrioritySlots:
    """A semaphore whose waiters are served lowest rank first (first come first served among
    equal ranks); a waiter without a row ranks first."""

    def __init__(self, value: int):
        self._free = value
        self._waiters: list[tuple[tuple, int, asyncio.Future, RowProgress | None]] = []  # a heap
        self._seq = itertools.count()
        self._ranked_at = RowSchedule.changes

    async def acquire(self, progress: RowProgress | None = None) -> None:
        # Invariant: a slot is free only when nobody is waiting (release hands it over).
        if self._free > 0:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (_rank(progress), next(self._seq), waiter, progress))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled before using it
            raise

    def release(self) -> None:
        if self._ranked_at != RowSchedule.changes:  # the rows' schedule changed since they queued
            self._waiters = [(_rank(p), seq, w, p) for _, seq, w, p in self._waiters if not w.done()]
            heapq.heapify(self._waiters)
            self._ranked_at = RowSchedule.changes
        while self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():  # a cancelled waiter stays in the heap until it surfaces
                waiter.set_result(None)
                return
        self._free += 1


def _rank(progress: RowProgress | None) -> tuple:
    return progress.rank() if progress is not None else ()


def _non_empty(result: ChatResult, tag: str) -> str:
    if not result.text.strip():
        raise LLMError("empty_answer", tag)
    return result.text


# A greedy request answers the same whatever its seed: asked again after an unusable answer, it samples.
RESAMPLE_TEMPERATURE = 0.7


def reseeded(request: ChatRequest, rejections: int) -> ChatRequest:
    """The request as it goes out after `rejections` answers to it failed validation: the same
    question with a seed of its own, sampled if it was greedy (unchanged while nothing was rejected)."""
    if rejections <= 0:
        return request
    digest = hashlib.sha256(f"{request.seed}:{rejections}".encode()).digest()
    return replace(
        request,
        seed=int.from_bytes(digest[:4], "big") >> 1,
        temperature=request.temperature or RESAMPLE_TEMPERATURE,
    )


class AnswerRejected(LLMError):
    """An answer came back and failed validation (empty, not JSON, off its schema)."""


class LLMClient:
    """The only way stages talk to a model.

    - answers are cached by hash(model, messages, params) once validated: a rerun asks nothing
      twice that was answered well, and re-asks what was not;
    - at most `concurrency` requests are at the backend at once; when more wait, they go in
      the order of their rows' `RowSchedule` (`ROW_PROGRESS`), else first come first served;
    - identical requests in flight at the same time share one backend call;
    - usage is counted per tag, and a tag's prefix (the stage) sums its tasks.
    """

    def __init__(
        self, backend: Backend, cache: RequestCache | None = None, concurrency: int = 64, answer_attempts: int = 3
    ):
        self.backend = backend
        self.cache = cache
        self.answer_attempts = answer_attempts
        self._slots = PrioritySlots(concurrency)
        self._in_flight: dict[str, asyncio.Future[ChatResult]] = {}
        self._rejected: Counter[str] = Counter()  # rejections per question, where there is no cache
        self.refusals = RefusalWatch()  # a server refusing every request of a kind stops the run
        self.usage: dict[str, TagUsage] = defaultdict(TagUsage)
        self._counted_since: dict[str, float] = {}  # stage -> when its counts began (epoch seconds)

    def count_from(self, stage: str, since: float) -> None:
        """The stage's usage counts (its manifest's) began at `since`: a cached answer stored before
        then was paid for outside them (`TagUsage.prepaid_hits`); one stored since is among them."""
        self._counted_since[stage] = since

    @property
    def model(self) -> str:
        return self.backend.model

    async def complete(self, request: ChatRequest, tag: str) -> ChatResult:
        """An answer, whatever it says (cached once the backend gave it)."""
        return await self.ask(request, tag, lambda result: result)

    async def ask(self, request: ChatRequest, tag: str, accept: Callable[[ChatResult], T]) -> T:
        """`accept(answer)`: an answer from the cache or the backend, cached only once accepted.

        `accept` validates (raising LLMError: empty, not JSON, off-schema) and returns what the
        caller wants. An answer it rejects is never cached and is asked again, up to
        `answer_attempts` answers in all: each new ask goes out with another seed (sampled, if
        the question was greedy), so the server can answer differently; the last rejection is
        raised. Rejections are counted in the cache, so a rerun goes on from the next seed
        instead of replaying a failure. A question that only met a server fault goes out
        unchanged, and gets the answer a run without the fault got. The accepted answer is
        cached under the question's own key, whatever seed it came with.
        """
        for attempt in range(1, self.answer_attempts + 1):
            try:
                return await self._ask_once(request, tag, accept)
            except AnswerRejected:
                if attempt == self.answer_attempts:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _ask_once(self, request: ChatRequest, tag: str, accept: Callable[[ChatResult], T]) -> T:
        key = request_key(self.backend.model, request)
        usage = self.usage[tag]
        progress = ROW_PROGRESS.get()
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                try:
                    value = accept(cached)
                except LLMError:
                    self._reject(key)  # cached before answers were validated: ask again, reseeded
                else:
                    usage.cache_hits += 1
                    since = self._counted_since.get(tag.split(".", 1)[0])
                    if since is None or cached.cached_at is None or cached.cached_at < since:
                        usage.prepaid_hits += 1
                        usage.cached_prompt_tokens += cached.prompt_tokens
                        usage.cached_completion_tokens += cached.completion_tokens
                    # The server answered this kind before: a rerun sends only what failed, and
                    # those being refused again says nothing about the rest.
                    self.refusals.answered(tag)
                    return value
        sent = reseeded(request, self._rejections(key))
        sent_key = key if sent is request else request_key(self.backend.model, sent)
        shared = self._in_flight.get(sent_key)
        if shared is not None:
            usage.cache_hits += 1
            return self._accepted(await asyncio.shield(shared), accept, usage, None)
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        self._in_flight[sent_key] = future
        try:
            await self._slots.acquire(progress)
            try:
                result = await self.backend.complete(sent)
            finally:
                self._slots.release()
        except BaseException as exc:
            usage.failures += 1
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            if isinstance(exc, LLMError):
                self.refusals.failed(tag, exc, structured=request.json_schema is not None)
            raise
        finally:
            del self._in_flight[sent_key]
        usage.requests += 1
        self.refusals.answered(tag)
        if progress is not None:
            progress.requests += 1
        usage.prompt_tokens += result.prompt_tokens
        usage.completion_tokens += result.completion_tokens
        if result.batched:
            usage.batched += 1
            usage.batched_prompt_tokens += result.prompt_tokens
            usage.batched_completion_tokens += result.completion_tokens
        future.set_result(result)
        value = self._accepted(result, accept, usage, key)
        if self.cache is not None:
            self.cache.put(key, self.backend.model, result)
        return value

    def _rejections(self, key: str) -> int:
        return self.cache.rejections(key) if self.cache is not None else self._rejected[key]

    def _reject(self, key: str) -> None:
        if self.cache is not None:
            self.cache.reject(key)
        else:
            self._rejected[key] += 1

    def _accepted(self, result: ChatResult, accept: Callable[[ChatResult], T], usage: TagUsage, key: str | None) -> T:
        """`accept(result)`; a rejection is counted against `key` (the asker's, not a sharer's) and raised."""
        try:
            return accept(result)
        except LLMError as exc:
            usage.failures += 1
            if key is not None:
                self._reject(key)
            raise AnswerRejected(exc.reason, exc.detail) from None

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
        return await self.ask(request, tag, lambda result: _non_empty(result, tag))

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
        return await self.ask(request, tag, lambda result: parse_structured(result.text, schema, request.json_schema))

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
