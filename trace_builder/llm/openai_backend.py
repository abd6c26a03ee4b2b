"""The openai backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI), with retries."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from trace_builder.errors import LLMError, UserError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.dialects import AUTO, DIALECTS, PROBE_MESSAGES, PROBE_SCHEMA, with_schema
from trace_builder.llm.ratelimit import RateLimit
from trace_builder.llm.reasons import counts_for_storm, reason_of, retried_by_backend
from trace_builder.llm.storm import ServerStorm, StormWatch, storm_message
from trace_builder.llm.structured import loads_tolerant, schema_violation
from trace_builder.run.redact import redact_text

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_PROBE_OPTIONS = {"headers": {"X-Trace-Build-Task": "probe"}}
_RETRY_AFTER_CAP_S = 120.0


def _retry_after_s(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(float(value), _RETRY_AFTER_CAP_S)
    except ValueError:
        return None  # an HTTP date: rare from LLM servers, fall back to backoff


def completion_result(response: dict) -> ChatResult:
    """The answer in a chat completion's JSON (from the server, or a line of a batch's output file);
    AttributeError or TypeError when it is not one."""
    choices = response.get("choices")
    if not choices:
        raise LLMError("no_choices", "the server returned no choices")
    choice = choices[0]
    usage = response.get("usage") or {}
    return ChatResult(
        text=(choice.get("message") or {}).get("content") or "",
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        finish_reason=choice.get("finish_reason"),
    )


class _BackoffHonouringRetryAfter(wait_base):
    """Exponential backoff with full jitter, unless the server said how long to wait."""

    def __init__(self, initial: float, maximum: float):
        self.initial = initial
        self.maximum = maximum

    def __call__(self, retry_state) -> float:
        outcome = retry_state.outcome
        told = _retry_after_s(outcome.exception() if outcome is not None else None)
        if told is not None:
            return told
        ceiling = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        return random.uniform(0, ceiling)


@dataclass
class _Replica:
    base_url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0

    @property
    def shown(self) -> str:
        """The URL as messages show it: credentials redacted."""
        return redact_text(self.base_url)


class OpenAIBackend:
    """Chat completions over HTTP, spread over one or more replicas of the same model.

    Each request goes to the replica with the fewest requests in flight; transient errors
    are retried with backoff (honouring Retry-After); a request gives up after
    `max_retries` retries with an LLMError naming the last failure.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: list[str] | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        storm_after_s: float = 45.0,
        rate_limit: RateLimit | None = None,
        structured_output: str = AUTO,
    ):
        self.model = model
        urls = list(base_urls or []) or [os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL]
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._replicas = [
            _Replica(
                url.rstrip("/"),
                openai.AsyncOpenAI(
                    base_url=url,
                    api_key=key,
                    timeout=timeout_s,
                    max_retries=0,  # tenacity below retries, with our policy
                ),
            )
            for url in urls
        ]
        self._max_retries = max_retries
        self._wait = _BackoffHonouringRetryAfter(backoff_initial_s, backoff_max_s)
        self._next = 0
        self._storm = StormWatch(storm_after_s)
        self.rate_limit = rate_limit or RateLimit()  # requests/tokens per minute caps; none by default
        self.dialect = structured_output  # `auto` until the probe has chosen (llm/dialects.py)
        self.probe_note = ""  # what the probe found, for the run's first lines and run.json
        self._probing = asyncio.Lock()

    @property
    def base_urls(self) -> list[str]:
        """The servers' URLs as messages show them (credentials redacted)."""
        return [r.shown for r in self._replicas]

    def _pick_replica(self) -> _Replica:
        # Fewest in flight; rotate the starting point so ties spread evenly.
        self._next = (self._next + 1) % len(self._replicas)
        order = self._replicas[self._next :] + self._replicas[: self._next]
        return min(order, key=lambda r: r.in_flight)

    async def body_for(self, request: ChatRequest) -> dict:
        """The chat completion body of `request`, in the server's structured-output dialect: what
        goes on the wire, whether sent at once or as a line of a batch (llm/batch.py)."""
        body: dict = {
            "model": self.model,
            "messages": list(request.messages),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.json_schema is not None:
            body = with_schema(body, await self.structured_dialect(), request.json_schema, request.schema_name)
        return body

    def retrying(self) -> AsyncRetrying:
        """This backend's retry policy: transient failures (429, 5xx, timeouts, dropped connections)
        tried again with backoff honouring Retry-After, up to `max_retries` times."""
        return AsyncRetrying(
            retry=retry_if_exception(lambda exc: retried_by_backend(reason_of(exc))),
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            reraise=True,
        )

    @property
    def max_retries(self) -> int:
        return self._max_retries

    @property
    def api(self) -> openai.AsyncOpenAI:
        """The client of the first server: the one the Batch API is asked through (llm/batch.py)."""
        return self._replicas[0].client

    async def complete(self, request: ChatRequest) -> ChatResult:
        # The request goes out through the client's plain `post`, with the JSON body as it is
        # and the answer read as bytes: the wire request is the same as chat.completions.create's
        # (same path, headers, retries and errors), but the typed layers on both sides are
        # skipped, the transform that walks every message and the whole schema on the way out
        # and the pydantic model built from the answer on the way back (measured: 2.1 -> 1.7 ms
        # of CPU per request, and with it less event-loop delay on every answer).
        body = await self.body_for(request)
        options: dict = {"headers": {"X-Trace-Build-Task": request.task}} if request.task else {}
        try:
            async for attempt in self.retrying():
                with attempt:
                    return await self._send(body, options)
        except openai.APIError as exc:
            raise self.failure(exc) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def failure(self, exc: openai.APIError) -> Exception:
        """What a request that failed for good raises: a UserError for a bad key or model, else an LLMError."""
        if isinstance(exc, openai.AuthenticationError):
            return UserError(
                f"the server at {self.base_urls[0]} rejected the API key (401): set OPENAI_API_KEY to a valid key"
            )
        if isinstance(exc, openai.NotFoundError):
            return UserError(
                f"model {self.model!r} is not served at {', '.join(self.base_urls)} (404): pass --model with a served name"
            )
        if isinstance(exc, openai.APITimeoutError):
            return LLMError("timeout", f"no answer within the request timeout after {self._max_retries} retries")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError("connection_error", redact_text(str(exc))[:120])
        if isinstance(exc, openai.APIStatusError):
            return LLMError(reason_of(exc), redact_text(str(exc.message))[:120])
        return LLMError("malformed_response", redact_text(str(exc))[:120])

    async def _send(self, body: dict, options: dict) -> ChatResult:
        ticket = await self.rate_limit.acquire(body)  # waits under the caps, before a replica is chosen
        replica = self._pick_replica()
        replica.in_flight += 1
        try:
            raw = await replica.client.post("/chat/completions", body=body, options=options, cast_to=bytes)
        except openai.RateLimitError:  # 429: the caps are set too high for this server, for now
            self.rate_limit.throttled(ticket)
            raise
        except openai.APIError as exc:
            reason = reason_of(exc)
            if reason != "rate_limited":
                self._watch(replica, reason if counts_for_storm(reason) else None)
            raise
        finally:
            replica.in_flight -= 1
        self._watch(replica, None)
        try:
            response = json.loads(raw)
            result = completion_result(response)
        except (ValueError, AttributeError, TypeError) as exc:  # not JSON, or not a chat completion
            raise LLMError("malformed_response", f"{type(exc).__name__}: {raw[:100]!r}") from exc
        await self.rate_limit.settle(ticket, response.get("usage") or {})
        return result

    def _watch(self, replica: _Replica, reason: str | None) -> None:
        """Count an attempt's outcome; stop the run when the server has been failing for too long."""
        storm = self._storm.record(reason)
        if storm is not None:
            raise ServerStorm(storm_message(replica.shown, *storm))

    async def structured_dialect(self) -> str:
        """The dialect structured requests go out in: the configured one, or (auto) the probe's choice."""
        if self.dialect == AUTO:
            async with self._probing:
                if self.dialect == AUTO:
                    self.dialect, self.probe_note = await self._probe()
        return self.dialect

    async def _probe(self) -> tuple[str, str]:
        """The first dialect whose answer to a tiny schema parses and validates (`prompt` if none does).
        Sent once, past the caps and the retries, and counted in no stage's usage."""
        started = time.monotonic()
        replica = self._replicas[0]
        client = replica.client.with_options(timeout=60.0, max_retries=0)
        found: list[str] = []
        for dialect in DIALECTS:
            body = {"model": self.model, "messages": list(PROBE_MESSAGES), "temperature": 0.0, "max_tokens": 48}
            body = with_schema(body, dialect, PROBE_SCHEMA, "probe")
            try:
                raw = await client.post("/chat/completions", body=body, options=_PROBE_OPTIONS, cast_to=bytes)
                text = ((json.loads(raw).get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                problem = schema_violation(loads_tolerant(text), PROBE_SCHEMA)
            except openai.APIStatusError as exc:
                problem = f"HTTP {exc.status_code}: {redact_text(str(exc.message))[:100]}"
            except (openai.APIError, ValueError, AttributeError, TypeError) as exc:
                problem = f"{type(exc).__name__}: {str(exc)[:100]}"
            if problem is None:
                found.append(f"{dialect} honoured")
                return dialect, f"probed in {time.monotonic() - started:.1f} s: " + "; ".join(found)
            found.append(f"{dialect}: {problem}")
        note = "; ".join(found)
        return "prompt", f"no dialect honoured the probe ({note}): asking in the prompt, answers validated"

    async def preflight(self) -> None:
        """Fail fast, with one clear line, if a server is down, rejects the key or lacks the model."""
        for replica in self._replicas:
            try:
                models = await replica.client.with_options(timeout=10.0, max_retries=1).models.list()
            except openai.AuthenticationError:
                raise UserError(
                    f"the server at {replica.shown} rejected the API key (401): set OPENAI_API_KEY to a valid key"
                ) from None
            except (openai.APIConnectionError, openai.APITimeoutError):
                raise UserError(
                    f"cannot reach an OpenAI-compatible server at {replica.shown}: start one "
                    "(scripts/serve_vllm.sh) or pass --base-url with the right address"
                ) from None
            except openai.APIStatusError:
                continue  # some servers have no /models; the first request will tell
            served = [m.id for m in models.data]
            if served and self.model not in served:
                raise UserError(
                    f"model {self.model!r} is not served at {replica.shown} (it serves: "
                    f"{', '.join(served[:5])}): pass --model with one of those"
                )

    async def aclose(self) -> None:
        for replica in self._replicas:
            await replica.client.close()
