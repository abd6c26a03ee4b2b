"""Why a request failed, in one short word, and what each reason means for asking again.

Every failure the LLM layer reports carries one of these reasons (`LLMError.reason`); this
module is the one place that says which are the server's passing trouble (retried by the
backend, then re-asked by a rerun), which are an answer that failed validation (asked again
at once, llm/client.py), and which are a refusal (never asked again; all of a kind refused
stops the run, llm/storm.py).
"""

from __future__ import annotations

import re

import openai

# The server did not answer, for now: the backend retries these with backoff (batch mode: in a later
# wave; `batch_unanswered`: a batch expired, failed or was cancelled before answering the request).
SERVER = frozenset({"connection_error", "timeout", "rate_limited", "batch_unanswered"})
# An answer came back that was not a usable chat completion.
TRANSPORT = frozenset({"malformed_response", "no_choices", "backend_closed"})
# An answer came back and failed validation (empty, not JSON, off its schema).
ANSWER = frozenset({"empty_answer", "invalid_json", "schema_mismatch", "judge_count_mismatch"})
_SERVER_ERROR = re.compile(r"http_5\d\d")
_REFUSAL = re.compile(r"http_4(?!29)\d\d")


def reason_of(exc: BaseException) -> str | None:
    """The reason of an HTTP client exception (None: not a server failure)."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    if isinstance(exc, openai.APIStatusError):
        return "rate_limited" if exc.status_code == 429 else f"http_{exc.status_code}"
    return None


def retried_by_backend(reason: str | None) -> bool:
    """A 429, a 5xx, a timeout or a dropped connection: worth another try at once."""
    return reason in SERVER or (reason is not None and _SERVER_ERROR.fullmatch(reason) is not None)


def counts_for_storm(reason: str | None) -> bool:
    """A failure that, repeated by nearly every request, means the server is gone (a 429 means it is there)."""
    return retried_by_backend(reason) and reason != "rate_limited"


def is_refusal(reason: str | None) -> bool:
    """A 4xx other than 429: the same request would be refused again."""
    return reason is not None and _REFUSAL.fullmatch(reason) is not None


def is_transient(reason: str | None) -> bool:
    """Worth asking again on a rerun (docs/reliability.md): the server or the answer's form, not its content."""
    return bool(reason) and (retried_by_backend(reason) or reason in TRANSPORT or reason in ANSWER)
