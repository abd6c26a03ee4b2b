"""The embedded default backend: a front that queues requests and hands batches to the local engine."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field

from trace_builder.errors import LLMError, ModelLoadError, UserError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.local_engine import LocalEngine, default_thread_count
from trace_builder.llm.model_files import EMBEDDED_MODEL, ensure_embedded_model, resolve_model_dir

DEFAULT_BATCH_SIZE = 8

# How long the worker waits for more requests to join a batch once one has arrived:
# coroutines started together (asyncio.gather) enqueue within a few milliseconds.
_GATHER_SECONDS = 0.02
# Requests taken off the queue to choose a batch from: enough to find similar lengths.
_BACKLOG_BATCHES = 4


@dataclass
class _Pending:
    request: ChatRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrival: float = field(default_factory=time.monotonic)


def _prompt_chars(request: ChatRequest) -> int:
    return sum(len(m.get("content", "")) for m in request.messages)


# Put on the queue by aclose: the worker serves what it already holds, then stops.
_STOP = object()


class LocalBackend:
    """A causal LM run in-process on CPU; concurrent requests are generated in batches.

    model: "gemma3-270m" (the embedded default, converted and cached on first use) or the
    path of a local Hugging Face model directory. One worker thread owns the model: it
    collects up to `batch_size` waiting requests, generates them together and resolves
    their futures, so the event loop never blocks on the model.
    num_threads: torch threads, process-wide (default: all cores but one).
    """

    name = "local"

    def __init__(
        self,
        model: str = EMBEDDED_MODEL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_threads: int | None = None,
        onednn: bool = True,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {batch_size}): set a positive batch size")
        self.model = model
        self.batch_size = batch_size
        self.num_threads = num_threads or default_thread_count()
        self.onednn = onednn  # oneDNN linears where proven (local_engine.use_onednn_linears)
        self._model_dir = resolve_model_dir(model)
        self._queue: queue.Queue = queue.Queue()
        self._backlog: list[_Pending] = []  # taken off the queue, not yet batched (worker thread only)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._load_error: ModelLoadError | UserError | None = None
        self._loaded = threading.Event()
        # Sizes of the batches generated so far (for benchmarks and tests).
        self.batch_sizes: list[int] = []

    async def complete(self, request: ChatRequest) -> ChatResult:
        if self._closed:
            raise LLMError("backend_closed", "the local backend was closed")
        self._start_worker()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(request, future, loop))
        return await future

    async def start(self) -> None:
        """Load the model now (optional: the first request loads it too); raises what loading raised."""
        self._start_worker()
        await asyncio.to_thread(self._loaded.wait)
        if self._load_error is not None:
            raise self._load_error

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        self._fail_waiting(LLMError("backend_closed", "the local backend was closed"))

    # -- worker thread

    def _start_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="trace-build-local-llm", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        engine = self._load_engine()
        while True:
            batch, stop = self._next_batch()
            if batch:
                if engine is None:
                    for pending in batch:
                        _resolve(pending, self._load_error)
                else:
                    self._run_batch(engine, batch)
            if stop:
                return

    def _load_engine(self) -> LocalEngine | None:
        model_dir = self._model_dir
        try:
            model_dir = model_dir or ensure_embedded_model()
            return LocalEngine(model_dir, self.num_threads, onednn=self.onednn)
        except (UserError, ModelLoadError) as error:
            self._load_error = error
        except Exception as exc:
            fix = (
                f"delete {model_dir} so that it is converted again"
                if self._model_dir is None
                else f"check that {model_dir} holds a complete Hugging Face causal-LM (config, weights, tokenizer)"
            )
            self._load_error = ModelLoadError.of(self.model, exc, fix)
        finally:
            self._loaded.set()
        return None

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """The next batch, and whether to stop after it.

        Waits for one request, gathers more for a moment, then serves the oldest waiting
        request with the ones closest to it in prompt length: a batch is padded to its
        longest prompt, so one 2,000-token prompt among short ones multiplies the prefill.
        The oldest always goes first, so nothing starves.
        """
        if not self._backlog and not self._stopping:
            first = self._queue.get()
            if first is _STOP:
                return [], True
            self._backlog.append(first)
            deadline = time.monotonic() + _GATHER_SECONDS
            while len(self._backlog) < self.batch_size and not self._stopping:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                self._take(item)
        while len(self._backlog) < _BACKLOG_BATCHES * self.batch_size and not self._stopping:
            try:
                self._take(self._queue.get_nowait())
            except queue.Empty:
                break
        waiting = [p for p in self._backlog if not p.future.cancelled()]
        if not waiting:
            self._backlog = []
            return [], self._stopping
        oldest, others = waiting[0], waiting[1:]
        length = _prompt_chars(oldest.request)
        others.sort(key=lambda p: abs(_prompt_chars(p.request) - length))
        batch = [oldest, *others[: self.batch_size - 1]]
        self._backlog = others[self.batch_size - 1 :]
        self._backlog.sort(key=lambda p: p.arrival)
        return batch, self._stopping and not self._backlog

    def _take(self, item: object) -> None:
        if item is _STOP:
            self._stopping = True
        else:
            self._backlog.append(item)

    def _run_batch(self, engine: LocalEngine, batch: list[_Pending]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            outcomes = engine.generate([p.request for p in batch], [p.future.cancelled for p in batch])
        except Exception as exc:
            error = LLMError("local_generation_failed", f"{type(exc).__name__}: {exc}")
            outcomes = [error] * len(batch)
        for pending, outcome in zip(batch, outcomes):
            _resolve(pending, outcome)

    def _fail_waiting(self, error: LLMError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _resolve(item, error)


def _resolve(pending: _Pending, outcome: ChatResult | Exception | None) -> None:
    def settle() -> None:
        if pending.future.done():
            return
        if isinstance(outcome, Exception):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
        pending.loop.call_soon_threadsafe(settle)
