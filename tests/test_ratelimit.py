"""Requests/min and tokens/min caps: the rates they hold, their order, and how 429s lower them."""

from __future__ import annotations

import asyncio

import pytest

from trace_builder.config import BackendConfig
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.factory import make_backend
from trace_builder.llm.openai_backend import OpenAIBackend
from trace_builder.llm.ratelimit import BURST_S, CUT, RECOVERY_PER_S, SETTLE_S, AdaptiveShare, RateLimit, _FairBucket
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond


def _body(chars: int, max_tokens: int = 512) -> dict:
    return {"messages": [{"role": "user", "content": "x" * chars}], "max_tokens": max_tokens}


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing else is ready: timers fire
    in order, and rates come out exact however loaded the machine is (a 2-core CI box)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        if not self._ready and self._scheduled:
            self._now = max(self._now, self._scheduled[0].when())
        super()._run_once()


def run_virtual(main):
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def test_the_virtual_clock_jumps_and_keeps_order():
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen = []

        async def wait(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            seen.append((name, loop.time()))

        await asyncio.gather(wait("late", 30.0), wait("early", 2.5))
        return seen

    assert run_virtual(main()) == [("early", 2.5), ("late", 30.0)]


async def _drive(limit: RateLimit, n: int, usage: dict, chars: int = 400, workers: int = 16) -> list[float]:
    """`n` requests through `limit` by `workers` at once; when (the loop's clock) each was let through."""
    sent: list[float] = []
    left = list(range(n))
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while left:
            left.pop()
            ticket = await limit.acquire(_body(chars))
            sent.append(loop.time())
            await asyncio.sleep(0.005)
            await limit.settle(ticket, usage)

    await asyncio.gather(*[worker() for _ in range(workers)])
    return sorted(sent)


def test_no_caps_no_waiting():
    limit = RateLimit()
    assert not limit.enabled
    assert asyncio.run(limit.acquire(_body(10))) is None


def test_requests_per_minute_hold():
    rpm = 2400  # 40 a second; the bucket lets BURST_S seconds' worth through at once
    sent = run_virtual(_drive(RateLimit(requests_per_minute=rpm), 100, {}))
    burst = int(rpm / 60 * BURST_S)
    achieved = (len(sent) - burst) / (sent[-1] - sent[0]) * 60
    assert 0.9 * rpm <= achieved <= 1.05 * rpm, achieved


def test_tokens_per_minute_hold_from_usage():
    tpm = 600_000  # 10,000 a second
    usage = {"prompt_tokens": 500, "completion_tokens": 300}  # the estimate learns these
    limit = RateLimit(tokens_per_minute=tpm)
    sent = run_virtual(_drive(limit, 35, usage, chars=2000))
    burst = tpm / 60 * BURST_S
    achieved = (800 * len(sent) - burst) / (sent[-1] - sent[0]) * 60
    assert 0.85 * tpm <= achieved <= 1.05 * tpm, achieved
    assert limit.estimate.of(2000, 512) == pytest.approx(800)


def test_a_long_prompt_waits_its_turn_only():
    # aiolimiter alone wakes its smallest waiter first: the long prompt would go last.
    async def order() -> list[str]:
        bucket = _FairBucket(per_minute=60_000)  # 1,000 a second, 2,000 held
        went: list[str] = []

        async def take(name: str, amount: float) -> None:
            await bucket.take(amount)
            went.append(name)

        names = ["a", "long", "b", "c"]
        amounts = [50, 2100, 50, 50]  # 2,100 > the 2,000 the bucket holds: taken in pieces, so it waits
        tasks = []
        for name, amount in zip(names, amounts):
            tasks.append(asyncio.create_task(take(name, amount)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return went

    assert asyncio.run(order()) == ["a", "long", "b", "c"]


def test_a_429_cuts_once_per_burst_and_the_share_recovers():
    share = AdaptiveShare()
    assert share.on_429(sent_at=10.0, now=10.5)
    assert share.current(10.5) == pytest.approx(CUT)
    # the same burst's other 429s, and requests sent while the cut settles, do not cut again
    assert not share.on_429(sent_at=10.2, now=10.6)
    assert not share.on_429(sent_at=10.5 + SETTLE_S / 2, now=11.0)
    assert share.cuts == 1
    assert share.on_429(sent_at=10.5 + SETTLE_S, now=13.0)
    after = (CUT + RECOVERY_PER_S * (13.0 - 10.5)) * CUT  # regained since the first cut, then cut
    assert share.current(13.0) == pytest.approx(after)
    assert share.current(13.0 + 10) == pytest.approx(after + 10 * RECOVERY_PER_S)
    assert share.current(1e6) == 1.0  # recovers to the caps, never above


def test_backend_built_with_caps_from_config():
    config = BackendConfig(kind="openai", model="m", base_urls=["http://127.0.0.1:9/v1"], requests_per_minute=120)
    backend = make_backend(config)
    assert backend.rate_limit.requests_per_minute == 120 and backend.rate_limit.tokens_per_minute is None


@pytest.mark.slow
def test_429s_lower_the_rate_until_they_stop():
    """A server that allows 50 requests a second; caps set twice that: the 429s stop within seconds."""

    async def run(server: ScriptedServer, n: int) -> tuple[RateLimit, list[int]]:
        limit = RateLimit(requests_per_minute=6000)
        backend = OpenAIBackend("scripted", [server.base_url], rate_limit=limit, max_retries=30)
        left, rejected_by_then = list(range(n)), []

        async def worker() -> None:
            while left:
                i = left.pop()
                message = {"role": "user", "content": f"hello {i}"}
                await backend.complete(ChatRequest(messages=(message,), max_tokens=20, task="expand.quality"))
                rejected_by_then.append(server.stats.faults["rate_limit"])

        await asyncio.gather(*[worker() for _ in range(32)])
        await backend.aclose()
        return limit, rejected_by_then

    with ScriptedServer(respond, requests_per_minute=3000) as server:
        limit, rejected = asyncio.run(run(server, 500))
    assert limit.adaptive.cuts >= 1 and limit.adaptive.share < 0.75
    first, last = rejected[len(rejected) // 5], rejected[-1] - rejected[-len(rejected) // 4]
    # 429s come while the share falls (the first fifth of the answers), then nearly stop
    assert first > 0 and last <= 0.05 * len(rejected) // 4, (first, last, limit.adaptive)
