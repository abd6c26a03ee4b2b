"""Requests/min and tokens/min caps on what is sent to a server, lowered by its 429 answers and regained slowly."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

BURST_S = 1.0  # a bucket holds this many seconds of its cap: a burst never exceeds 1 s worth
CUT = 0.7  # a 429 lowers the share of the caps in use to 70 %...
RECOVERY_PER_S = 0.005  # ...and it grows back by 0.5 % of the caps a second (0.5 -> 1 in 100 s)
MIN_SHARE = 0.02
# 429s to requests sent before a cut, or within this long after it, do not cut again: they went
# out at the old rate, or as the burst the bucket still held (BURST_S seconds of the caps).
SETTLE_S = BURST_S
_CHARS_PER_TOKEN = 4.0  # the prompt estimate before any answer has told the real count


@dataclass
class AdaptiveShare:
    """The share of the configured caps in use: cut on a 429, regained linearly (AIMD).

    A 429 to a request sent before the last cut settled (SETTLE_S) says nothing new, so one
    burst of 429s cuts once, not once per request.
    """

    share: float = 1.0
    updated_at: float = 0.0
    cut_at: float = -math.inf
    cuts: int = 0

    def current(self, now: float) -> float:
        self.share = min(1.0, self.share + RECOVERY_PER_S * max(0.0, now - self.updated_at))
        self.updated_at = now
        return self.share

    def on_429(self, sent_at: float, now: float) -> bool:
        """Cut the share, unless the request went out before the last cut settled; True if it cut."""
        if sent_at < self.cut_at + SETTLE_S:
            return False
        self.share = max(MIN_SHARE, self.current(now) * CUT)
        self.cut_at = now
        self.cuts += 1
        return True


@dataclass
class Ticket:
    """One request's passage: when it went out, the tokens reserved for it, and at what share."""

    sent_at: float
    share: float
    prompt_chars: int = 0
    tokens: float = 0.0


@dataclass
class _TokenEstimate:
    """Tokens a request will count, learnt from the answers: prompt tokens per character, mean completion."""

    prompt_chars: int = 0
    prompt_tokens: int = 0
    completions: int = 0
    completion_tokens: int = 0

    def of(self, chars: int, max_tokens: int) -> float:
        per_char = self.prompt_tokens / self.prompt_chars if self.prompt_chars else 1 / _CHARS_PER_TOKEN
        # Until answers arrive, the worst case (max_tokens) is reserved; then what answers take.
        completion = self.completion_tokens / self.completions if self.completions else max_tokens
        return chars * per_char + min(completion, max_tokens or completion)

    def learn(self, chars: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_chars += chars
        self.prompt_tokens += prompt_tokens
        self.completions += 1
        self.completion_tokens += completion_tokens


def prompt_chars(body: dict) -> int:
    """Characters of a chat request's messages (text parts only)."""
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return total


class _FairBucket:
    """An aiolimiter bucket served first come, first served, for amounts of any size.

    aiolimiter wakes its smallest waiter first: under a saturated cap a long prompt would wait
    behind every shorter one to the end of the run (measured: a third of the rows stalled).
    One taker at a time, in arrival order (asyncio.Lock is FIFO), keeps the rate and the order.
    """

    def __init__(self, per_minute: float):
        # aiolimiter lets `max_rate` through at once, then `max_rate` per `time_period`: BURST_S
        # seconds of the cap (at least one unit) keeps the rate and bounds the burst.
        self.capacity = max(1.0, per_minute / 60 * BURST_S)
        self._limiter = AsyncLimiter(self.capacity, self.capacity / (per_minute / 60))
        self._turn = asyncio.Lock()

    async def take(self, amount: float) -> None:
        """`amount`, in pieces no larger than the bucket holds (a long prompt may outsize it)."""
        async with self._turn:
            while amount > 1e-9:
                piece = min(amount, self.capacity)
                await self._limiter.acquire(piece)
                amount -= piece


@dataclass
class RateLimit:
    """Optional caps in requests and tokens per minute, shared by every request of one backend.

    A request waits for both buckets before it is sent. Tokens are reserved from an estimate
    (prompt characters at the learnt tokens per character, plus the mean answer so far) and
    settled from the answer's usage: what the estimate missed is taken then, what it
    over-reserved is credited to the next requests. A 429 lowers the
    rate below the caps (`AdaptiveShare`); every charge is divided by the share, which slows both
    buckets alike. Without caps, nothing waits and nothing is learnt.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    adaptive: AdaptiveShare = field(default_factory=AdaptiveShare)
    estimate: _TokenEstimate = field(default_factory=_TokenEstimate)

    def __post_init__(self) -> None:
        self._requests = _FairBucket(self.requests_per_minute) if self.requests_per_minute else None
        self._tokens = _FairBucket(self.tokens_per_minute) if self.tokens_per_minute else None
        # Tokens taken from the bucket for answers that came out shorter than reserved: the next
        # reservations use them first, so what is taken tracks what is used (no refund in
        # aiolimiter). At most one bucketful, so a saved-up credit cannot become a burst.
        self._credit = 0.0

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def acquire(self, body: dict) -> Ticket | None:
        """Wait until `body` may be sent under the caps; None when there are none."""
        if not self.enabled:
            return None
        loop = asyncio.get_running_loop()
        share = self.adaptive.current(loop.time())
        if self._requests is not None:
            await self._requests.take(1 / share)
        if self._tokens is None:
            return Ticket(sent_at=loop.time(), share=share)
        chars = prompt_chars(body)
        tokens = self.estimate.of(chars, int(body.get("max_tokens") or 0))
        await self._take_tokens(tokens / share)
        return Ticket(sent_at=loop.time(), share=share, prompt_chars=chars, tokens=tokens)

    def throttled(self, ticket: Ticket | None) -> None:
        """The server answered `ticket`'s request with 429."""
        if ticket is not None:
            self.adaptive.on_429(ticket.sent_at, asyncio.get_running_loop().time())

    async def settle(self, ticket: Ticket | None, usage: dict) -> None:
        """Learn from the answer's usage; take the tokens the reservation missed."""
        if ticket is None or self._tokens is None:
            return
        prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        self.estimate.learn(ticket.prompt_chars, prompt, completion)
        missed = (prompt + completion - ticket.tokens) / ticket.share
        if missed > 0:
            await self._take_tokens(missed)
        else:
            self._credit = min(self._credit - missed, self._tokens.capacity)

    async def _take_tokens(self, amount: float) -> None:
        from_credit = min(self._credit, amount)
        self._credit -= from_credit
        await self._tokens.take(amount - from_credit)
