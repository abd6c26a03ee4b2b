"""Batch mode: the requests rows wait for, gathered into waves and answered through the OpenAI Batch API.

`BatchBackend` is a Backend like any other: `complete()` puts the request into the open wave
and waits. A wave leaves when it holds `batch.wave_size` requests, or when no request has
joined it for `batch.quiet_s` (every row in flight is waiting); it is split at the API's limits,
uploaded (POST /v1/files, purpose `batch`), made a batch (POST /v1/batches, 24 h window),
recorded in the run folder (run/batches.py) and polled until it ends. Each line's answer goes to
the request that waits for it, and the client validates and caches it as a direct answer.
A line without an answer (the batch expired, failed or was cancelled; a 429 or 5xx inside it)
goes out again in a later wave. A wave smaller than `batch.min_wave` goes out as direct
requests instead. A later session collects the batches an earlier one left pending: a request
whose line is in one waits for that batch instead of being submitted again. docs/batch.md.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import openai

from trace_builder.config import BatchConfig
from trace_builder.errors import LLMError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.cache import request_key
from trace_builder.llm.openai_backend import OpenAIBackend, completion_result
from trace_builder.llm.reasons import reason_of, retried_by_backend
from trace_builder.run.batches import forget_batch, note_status, pending_batches, record_batch
from trace_builder.run.redact import redact_text

# The Batch API's limits on one input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
MAX_ID_CHARS, ID_KEY_DIGITS = 64, 40
FINISHED = frozenset({"completed", "expired", "failed", "cancelled"})
# Error codes of a line that was never answered: the batch ran out of time, or was cancelled.
UNANSWERED_CODES = frozenset({"batch_expired", "batch_cancelled"})
UNANSWERED = "batch_unanswered"  # the reason a line fails with once its tries are spent (llm/reasons.py)
Outcome = ChatResult | BaseException


def custom_id(request: ChatRequest, model: str) -> str:
    """A line's id: the request's task (what a direct request's X-Trace-Build-Task header says) and its
    cache key, so that the same request has the same id in every session. 64 characters at most, as
    some providers of the API allow no more; 40 hex digits of the key (160 bits) still tell every
    request of a run apart."""
    key = request_key(model, request)[:ID_KEY_DIGITS]
    return f"{request.task}:{key}"[-MAX_ID_CHARS:] if request.task else key


def task_of(line_id: str) -> str:
    """The task a custom_id names ('' when none)."""
    return line_id.rpartition(":")[0]


def jsonl_line(line_id: str, body: dict) -> bytes:
    """One line of a batch's input file."""
    line = {"custom_id": line_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def split_wave(lines: list[bytes], max_requests: int, max_bytes: int = MAX_BYTES) -> list[list[int]]:
    """The indices of `lines` in consecutive chunks of at most `max_requests` lines and `max_bytes` bytes."""
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, line in enumerate(lines):
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(i)
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


def line_outcome(record: dict) -> Outcome | None:
    """What one line of an output or error file says: an answer, a failure, or None (never answered)."""
    response = record.get("response") or {}
    status = response.get("status_code")
    if status == 200:
        try:
            result = completion_result(response.get("body") or {})
        except LLMError as exc:
            return exc
        except (AttributeError, TypeError) as exc:
            return LLMError("malformed_response", f"{type(exc).__name__}: {str(response)[:100]}")
        result.batched = True
        return result
    if status is None:
        error = record.get("error") or {}
        if not error or error.get("code") in UNANSWERED_CODES:
            return None
        return LLMError("batch_error", redact_text(f"{error.get('code')}: {error.get('message')}")[:120])
    message = ((response.get("body") or {}).get("error") or {}).get("message") or ""
    return LLMError("rate_limited" if status == 429 else f"http_{status}", redact_text(str(message))[:120])


def read_outcomes(content: bytes) -> dict[str, Outcome | None]:
    """custom_id -> outcome, for every readable line of an output or error file."""
    outcomes: dict[str, Outcome | None] = {}
    for raw in content.splitlines():
        try:
            record = json.loads(raw)
            outcomes[record["custom_id"]] = line_outcome(record)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # an unreadable line is a line without an answer: it goes out again
    return outcomes


def needs_another_wave(outcome: Outcome | None) -> bool:
    """No answer, or a failure that asking again can mend (a 429 or 5xx inside the batch)."""
    return outcome is None or (isinstance(outcome, LLMError) and retried_by_backend(outcome.reason))


@dataclass
class _Line:
    """A request and the rows waiting for its answer."""

    id: str
    request: ChatRequest
    body: dict
    waiters: list[asyncio.Future] = field(default_factory=list)
    tries: int = 0  # waves it went out in without an answer

    @property
    def wanted(self) -> bool:
        return any(not w.done() for w in self.waiters)

    def settle(self, outcome: Outcome) -> None:
        for waiter in self.waiters:
            if waiter.done():  # its row was cancelled
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)


@dataclass
class _Batch:
    """A submitted batch: every line it holds, and those a row of this session waits for."""

    id: str
    line_ids: set[str]
    lines: dict[str, _Line] = field(default_factory=dict)


class BatchBackend:
    """The openai backend's requests, answered through the Batch API in waves (module docstring)."""

    name = "openai"

    def __init__(self, direct: OpenAIBackend, settings: BatchConfig, run_dir: Path, concurrency: int):
        self.direct = direct
        self.model = direct.model
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.server = direct.base_urls[0]
        self._concurrency = concurrency  # direct requests at once, for waves below min_wave
        self._direct_slots: asyncio.Semaphore | None = None
        self._open: dict[str, _Line] = {}
        self._joined_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._pending: dict[str, _Batch] = {}  # custom_id -> the submitted batch that holds it
        self._collected: dict[str, Outcome] = {}  # answers of an earlier session's batch, no row asked yet
        self._submitting: set[asyncio.Task] = set()  # waves being uploaded: finished before closing
        self._waiting: set[asyncio.Task] = set()  # batches followed, direct requests: cancelled on closing

    # -- what the openai backend says of the server ------------------------------------------
    @property
    def dialect(self) -> str:
        return self.direct.dialect

    @property
    def probe_note(self) -> str:
        return self.direct.probe_note

    async def structured_dialect(self) -> str:
        return await self.direct.structured_dialect()

    async def preflight(self) -> None:
        await self.direct.preflight()

    async def start(self) -> None:
        """Follow the batches an earlier session of this run left pending at this server."""
        for entry in pending_batches(self.run_dir, self.model):
            if entry.get("server") == self.server:
                batch = _Batch(entry["id"], set(entry.get("custom_ids") or []))
                for line_id in batch.line_ids:
                    self._pending[line_id] = batch
                self._spawn(self._waiting, self._follow(batch))

    # -- requests join waves ----------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResult:
        body = await self.direct.body_for(request)
        line_id = custom_id(request, self.model)
        if line_id in self._collected:
            return _settled(self._collected.pop(line_id))
        waiter = asyncio.get_running_loop().create_future()
        batch = self._pending.get(line_id)
        if batch is not None:  # submitted already, by this session or an earlier one: wait for that batch
            batch.lines.setdefault(line_id, _Line(line_id, request, body)).waiters.append(waiter)
        else:
            self._join(_Line(line_id, request, body, [waiter]))
        return await waiter

    def _join(self, line: _Line) -> None:
        held = self._open.setdefault(line.id, line)
        if held is not line:
            held.waiters += line.waiters
        loop = asyncio.get_running_loop()
        self._joined_at = loop.time()
        if len(self._open) >= self.settings.wave_size:
            self._send_open()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.quiet_s, self._quiet)

    def _quiet(self) -> None:
        """The timer: the wave leaves once nothing has joined it for quiet_s."""
        self._timer = None
        if not self._open:
            return
        loop = asyncio.get_running_loop()
        left = self._joined_at + self.settings.quiet_s - loop.time()
        if left > 0:
            self._timer = loop.call_later(left, self._quiet)
        else:
            self._send_open()

    def _send_open(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines = [line for line in self._open.values() if line.wanted]
        self._open = {}
        if not lines:
            return
        if len(lines) < self.settings.min_wave:
            for line in lines:
                self._spawn(self._waiting, self._ask_directly(line))
            return
        encoded = [jsonl_line(line.id, line.body) for line in lines]
        for chunk in split_wave(encoded, min(self.settings.wave_size, MAX_REQUESTS)):
            data = b"".join(encoded[i] for i in chunk)
            self._spawn(self._submitting, self._submit([lines[i] for i in chunk], data))

    def _spawn(self, tasks: set[asyncio.Task], work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _ask_directly(self, line: _Line) -> None:
        """A line of a wave too small for a batch: asked at once, at full price."""
        if self._direct_slots is None:
            self._direct_slots = asyncio.Semaphore(self._concurrency)
        async with self._direct_slots:
            try:
                outcome: Outcome = await self.direct.complete(line.request)
            except Exception as exc:  # noqa: BLE001 - handed to the rows waiting, as a direct request raises it
                outcome = exc
        line.settle(outcome)

    # -- batches ------------------------------------------------------------------------------
    async def _call(self, make_call):
        """An API call under the openai backend's retry policy."""
        async for attempt in self.direct.retrying():
            with attempt:
                return await make_call()
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _submit(self, lines: list[_Line], data: bytes) -> None:
        """Upload a wave, make it a batch and record it in the run folder, then follow it."""
        api = self.direct.api
        try:
            uploaded = await self._call(lambda: api.files.create(file=("wave.jsonl", data), purpose="batch"))
            created = await self._call(
                lambda: api.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
            )
        except openai.APIError as exc:  # the rows fail with the reason, as a direct request would
            failure = self.direct.failure(exc)
            for line in lines:
                line.settle(failure)
            return
        batch = _Batch(created.id, {line.id for line in lines}, {line.id: line for line in lines})
        record_batch(
            self.run_dir,
            created.id,
            model=self.model,
            server=self.server,
            input_file_id=uploaded.id,
            custom_ids=sorted(batch.line_ids),
        )
        for line_id in batch.line_ids:
            self._pending[line_id] = batch
        self._spawn(self._waiting, self._follow(batch))

    async def _follow(self, batch: _Batch) -> None:
        """Poll the batch (backing off) until it ends, then hand its answers over."""
        api = self.direct.api
        delay, known = self.settings.poll_start_s, None
        while True:
            try:
                info = await self._call(lambda: api.batches.retrieve(batch.id))
            except openai.NotFoundError:  # the provider no longer knows it: its lines go out again
                self._hand_over(batch, {}, "the batch is gone")
                return
            except openai.APIError as exc:
                if not retried_by_backend(reason_of(exc)):  # a rejected key: the rows stop, the batch stays recorded
                    failure = self.direct.failure(exc)
                    for line in batch.lines.values():
                        line.settle(failure)
                    return
                info = None  # the server is away for now: a batch takes hours, keep polling
            if info is not None and info.status != known:
                known = info.status
                note_status(self.run_dir, batch.id, known)
            if known in FINISHED:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.poll_max_s)
        outcomes: dict[str, Outcome | None] = {}
        for file_id in (info.error_file_id, info.output_file_id):  # an answer wins over an error
            if file_id:
                content = await self._call(lambda file_id=file_id: api.files.content(file_id))
                outcomes.update(read_outcomes(content.content))
        self._hand_over(batch, outcomes, f"batch {batch.id} {known}")

    def _hand_over(self, batch: _Batch, outcomes: dict[str, Outcome | None], why: str) -> None:
        """Each line's outcome to the rows waiting for it (kept for later when none waits yet); lines
        without an answer join the open wave; then the batch is forgotten."""
        for line_id in batch.line_ids:
            if self._pending.get(line_id) is batch:
                del self._pending[line_id]
            outcome = outcomes.get(line_id)
            line = batch.lines.get(line_id)
            if line is None:
                if outcome is not None:
                    self._collected[line_id] = outcome
            elif needs_another_wave(outcome):
                self._again(line, outcome if outcome is not None else LLMError(UNANSWERED, why))
            else:
                line.settle(outcome)
        forget_batch(self.run_dir, batch.id)

    def _again(self, line: _Line, failure: LLMError) -> None:
        """A line without an answer goes out in a later wave, up to the backend's max_retries times."""
        line.tries += 1
        if line.tries > self.direct.max_retries:
            line.settle(failure)
        elif line.wanted:
            self._join(line)

    async def cancel(self, batch_id: str) -> str:
        """Ask the provider to cancel a batch; its status after the request."""
        try:
            info = await self._call(lambda: self.direct.api.batches.cancel(batch_id))
        except openai.NotFoundError:
            forget_batch(self.run_dir, batch_id)
            return "unknown to the provider: forgotten"
        except openai.APIError as exc:
            raise self.direct.failure(exc) from exc
        note_status(self.run_dir, batch_id, info.status)
        return info.status

    async def aclose(self) -> None:
        """Waves being submitted are recorded first; the batches pending stay pending (run/batches.py)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._submitting:
            await asyncio.wait(set(self._submitting), timeout=60)
        waiting = set(self._waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await self.direct.aclose()


def _settled(outcome: Outcome) -> ChatResult:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
