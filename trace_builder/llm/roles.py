"""Roles: which model answers which task. One model does everything by default, as in the paper;
the judge, the rewriter (who writes and perturbs instructions) and the writer of DPO's worse
answers may each have their own server, model, concurrency and dialect (`roles:` in the config).

A request's role follows from its task tag, so stages stay as they are: they ask `ctx.client`,
and `RoleClients` hands each request to its role's client. Roles that resolve to the same
backend settings share one client (one concurrency limit, one probe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from trace_builder.config import BackendConfig, RunConfig
from trace_builder.llm.base import Backend
from trace_builder.llm.cache import RequestCache
from trace_builder.llm.client import LLMClient, TagUsage

GENERATOR = "generator"
ROLES = (GENERATOR, "judge", "rewriter", "worse")
# Tasks whose answer is an instruction: expansion and its structure and review, the IOPO perturbation.
REWRITER_TASKS = frozenset({"expand.rewrite", "expand.structure", "expand.quality", "perturb.rewrite"})


def role_of(tag: str) -> str:
    """The role that answers a task ('perturb.judge_rejected' -> judge, 'perturb.worse' -> worse; runs
    made before DPO's worse answer moved to perturb tagged it 'respond.worse')."""
    task = tag.rsplit(".", 1)[-1]
    if task.startswith("judge"):
        return "judge"
    if tag in REWRITER_TASKS:
        return "rewriter"
    if task == "worse":
        return "worse"
    return GENERATOR


def usage_by_role(usage_by_task: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Per-task usage summed per role."""
    out: dict[str, dict[str, int]] = {}
    for tag, usage in usage_by_task.items():
        total = out.setdefault(role_of(tag), {})
        for key, value in usage.items():
            total[key] = total.get(key, 0) + value
    return out


def cost_of(usage_by_task: Mapping[str, Mapping[str, int]], config: RunConfig) -> float | None:
    """Dollars for this usage at each role's prices; None when no price is set."""
    costs = [
        config.prices_for(role).cost(
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            usage.get("batched_prompt_tokens", 0),
            usage.get("batched_completion_tokens", 0),
        )
        for role, usage in usage_by_role(usage_by_task).items()
    ]
    known = [c for c in costs if c is not None]
    return round(sum(known), 4) if known else None


def priced(config: RunConfig) -> bool:
    return any(config.prices_for(role).cost(0, 0) is not None for role in ROLES)


class RoleClients:
    """LLMClient's interface over one client per role: a request goes to the client of its task's role."""

    def __init__(self, clients: dict[str, LLMClient]):
        self.clients = clients  # role -> client; roles sharing a backend share the client
        self.cache = clients[GENERATOR].cache

    @property
    def distinct(self) -> list[LLMClient]:
        return list({id(c): c for c in self.clients.values()}.values())

    def for_tag(self, tag: str) -> LLMClient:
        return self.clients[role_of(tag)]

    async def chat(self, messages, *, tag: str, **kwargs) -> str:
        return await self.for_tag(tag).chat(messages, tag=tag, **kwargs)

    async def chat_json(self, messages, schema, *, tag: str, **kwargs):
        return await self.for_tag(tag).chat_json(messages, schema, tag=tag, **kwargs)

    async def complete(self, request, tag: str):
        return await self.for_tag(tag).complete(request, tag)

    def count_from(self, stage: str, since: float) -> None:
        for client in self.distinct:
            client.count_from(stage, since)

    def usage_for(self, prefix: str) -> dict[str, Any]:
        total = TagUsage()
        for client in self.distinct:
            total.add(TagUsage(**client.usage_for(prefix)))
        return asdict(total)

    def usage_by_task(self, prefix: str) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for client in self.distinct:
            merged.update(client.usage_by_task(prefix))  # a task belongs to one role: no overlap
        return dict(sorted(merged.items()))

    async def aclose(self) -> None:
        for client in self.distinct:
            await client.aclose()


async def open_role_clients(
    config: RunConfig,
    cache: RequestCache,
    make: Callable[[BackendConfig], Backend],
    opened: Callable[[str, Backend], Any] | None = None,
) -> RoleClients:
    """A client per distinct backend of the roles, each made by `make`, checked (`preflight`) and
    probed for its dialect; `opened(role, backend)` is told about each new one."""
    from trace_builder.llm.factory import preflight

    clients: dict[str, LLMClient] = {}
    by_settings: dict[str, LLMClient] = {}
    try:
        for role in ROLES:
            settings = config.backend_for(role)
            key = settings.model_dump_json()
            if key not in by_settings:
                backend = make(settings)
                by_settings[key] = LLMClient(
                    backend,
                    cache,
                    concurrency=request_slots(config, settings),
                    answer_attempts=config.generation.answer_attempts,
                )
                await preflight(backend)
                if (probe := getattr(backend, "structured_dialect", None)) is not None:
                    await probe()
                if opened is not None:
                    opened(role, backend)
            clients[role] = by_settings[key]
    except BaseException:
        for client in by_settings.values():
            await client.aclose()
        raise
    return RoleClients(clients)


def rows_in_flight(config: RunConfig) -> int:
    """Rows the row engine keeps alive, summed over every distinct backend of the roles.

    Direct: 8 rows per request slot. A row holds one request at a time, and eight rows per slot
    keep the slots busy while rows change sub-step, and start rows early enough that, once the
    input is drained, the rows left are level (with rejection sampling, 2 per slot left the
    server 0.875 busy against 0.895 with 8; scripts/bench_pipeline.py --sampled). A few KB each.
    Batch: a wave's worth of rows, so that the rows waiting make a full wave.
    """
    seen = {}
    for role in ROLES:
        settings = config.backend_for(role)
        seen[settings.model_dump_json()] = config.batch.wave_size if settings.batch else 8 * settings.concurrency
    return sum(seen.values())


def request_slots(config: RunConfig, settings: BackendConfig) -> int:
    """The client's concurrency limit for a backend: `concurrency`, or in batch mode a bound no wave
    meets. There, the rows in flight bound the requests (a row holds a few at most: perturb's two
    sides), the backend caps its own direct requests, and a slot limit would only hold requests out
    of the wave they belong to, to wait a whole batch for the next."""
    return 4 * config.batch.wave_size if settings.batch else settings.concurrency
