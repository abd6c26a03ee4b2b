"""Servers that keep failing: an error storm (transient), or every request of a kind refused (not).

An error storm: nearly every recent request to a server failing for the same transient reason.

Retries make a short outage invisible, but a server that is gone makes every request retry
for a minute and then fail its row, one row after another. The backend records each attempt
here; once the recent attempts have been failing for the same reason for `after_s` seconds,
the run stops with one line, and a rerun resumes it (and re-asks the rows that failed).
429s are not counted: a server that says "slow down" is answering.

A refusal: a request the server rejects for good (HTTP 4xx other than 429): retries would get
the same answer. A refused row fails with its reason (a content filter refuses some prompts),
but a server that refuses every request of a kind (`tag`) from the start, the same way, is
refusing the request's form (a structured-output dialect it does not speak, a parameter it
rejects): the run stops at once with the server's message and the setting to change.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable

from trace_builder.errors import LLMError, ServerRefused, UserError
from trace_builder.llm.reasons import is_refusal


class ServerStorm(UserError):
    """The run stopped because the server kept failing; nothing is lost, a rerun resumes."""


class StormWatch:
    """Outcomes of the last `window` attempts; a storm is `share` of them failing for one reason."""

    def __init__(
        self,
        after_s: float,
        window: int = 32,
        share: float = 0.9,
        min_failures: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.after_s = after_s
        self.share = share
        self.min_failures = min_failures
        self.clock = clock
        self._recent: deque[str | None] = deque(maxlen=window)
        self._since: float | None = None  # when the recent attempts turned stormy

    def record(self, reason: str | None) -> tuple[str, int, int, float] | None:
        """One attempt's outcome (None: answered). Returns (reason, failed, of, seconds) once a storm
        has lasted `after_s`, else None."""
        self._recent.append(reason)
        counts = Counter(r for r in self._recent if r is not None)
        top, failed = counts.most_common(1)[0] if counts else (None, 0)
        if top is None or failed < self.min_failures or failed < self.share * len(self._recent):
            self._since = None
            return None
        now = self.clock()
        if self._since is None:
            self._since = now
        lasted = now - self._since
        return (top, failed, len(self._recent), lasted) if lasted >= self.after_s else None


def storm_message(server: str, reason: str, failed: int, of: int, lasted: float) -> str:
    return (
        f"stopped: the server at {server} keeps failing ({reason}: {failed} of the last {of} requests, "
        f"for {lasted:.0f} s); finished shards are kept: rerun the same command to resume once it is back"
    )


class RefusalWatch:
    """Refusals per kind of request (tag); raises ServerRefused once `after` requests of a kind that
    was never answered were all refused for the same reason."""

    def __init__(self, after: int = 5):
        self.after = after
        self._answered: set[str] = set()
        self._refused: dict[str, Counter] = defaultdict(Counter)

    def answered(self, tag: str) -> None:
        self._answered.add(tag)

    def failed(self, tag: str, error: LLMError, structured: bool) -> None:
        if tag in self._answered or not is_refusal(error.reason):
            return
        self._refused[tag][error.reason] += 1
        if self._refused[tag][error.reason] >= self.after:
            raise ServerRefused(refusal_message(tag, error, structured, self.after))


def refusal_message(tag: str, error: LLMError, structured: bool, times: int) -> str:
    fix = (
        "set the structured-output dialect the server speaks: --structured-output auto (probe it), json_object, "
        "vllm or prompt (backend.structured_output; docs/servers.md)"
        if structured
        else "check what the server rejects in the request (model name, max_tokens against its context length)"
    )
    status = error.reason.removeprefix("http_")
    return f"stopped: the server refused all {times} {tag} requests (HTTP {status}: {error.detail[:160]!r}): {fix}"
