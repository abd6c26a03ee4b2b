"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It is a test double, not a model: a `responder(task, body) -> str` decides each answer
(the task comes from the X-Trace-Build-Task header), optional latency simulates a real
server, and optional faults (429, 500, hangs, malformed JSON) exercise the client's
retries. It speaks just enough HTTP/1.1 (keep-alive, Content-Length) for the openai
client, on plain asyncio, so that it stays far faster than the client it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trace_builder.testing.batchapi import BatchAPI
from trace_builder.testing.scripted import Refused, dialect_of

Responder = Callable[[str, dict], str]


@dataclass
class Faults:
    """Deterministic fault injection, by request hash: the same request meets the same fault.

    Transient faults (429, 500, hang) strike only the first `transient_attempts` times a
    request arrives, so a client that retries gets through; `malformed_json_every` answers
    a structured request with broken JSON every time (the client must give up on it).
    """

    rate_limit_every: int = 0  # 429 with Retry-After: 0 on every Nth distinct request
    server_error_every: int = 0  # 500
    hang_every: int = 0  # no answer for `hang_s` (beyond the client's timeout)
    malformed_json_every: int = 0
    transient_attempts: int = 1
    hang_s: float = 30.0

    def pick(self, digest: int, attempt: int, structured: bool) -> str | None:
        if structured and self.malformed_json_every and digest % self.malformed_json_every == 0:
            return "malformed"
        if attempt > self.transient_attempts:
            return None
        for name, every in (
            ("429", self.rate_limit_every),
            ("500", self.server_error_every),
            ("hang", self.hang_every),
        ):
            # Shift by a different amount per fault so they strike different requests.
            if every and (digest >> (3 * len(name))) % every == 0:
                return name
        return None


@dataclass
class _Stats:
    by_task: Counter = field(default_factory=Counter)
    by_request: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    # (start, end, task) of each chat request's simulated latency (epoch seconds), when `record_busy`
    busy: list[tuple[float, float, str]] = field(default_factory=list)


def _quick_ack(sock) -> None:
    """ACK at once: clients write headers and body separately, and with Nagle on their side a
    delayed ACK here would hold every request body back for up to 40 ms (Linux only)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is not None and option is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:
            pass


def request_digest(body: dict) -> str:
    """Identity of a chat request for counting repeats: messages + the parameters that matter."""
    ident = {k: body.get(k) for k in ("model", "messages", "temperature", "max_tokens", "seed", "response_format")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ScriptedServer:
    """Run with `with ScriptedServer(responder) as server:`; `server.base_url` ends in /v1."""

    def __init__(
        self,
        responder: Responder,
        latency_s: float = 0.0,
        faults: Faults | None = None,
        model: str = "scripted",
        port: int = 0,
        api_key: str | None = None,
        requests_per_minute: float | None = None,
        dialects: tuple[str, ...] = ("json_schema", "json_object", "vllm", "prompt"),
        record_busy: bool = False,
    ):
        self.responder = responder
        self.latency_s = latency_s
        self.faults = faults or Faults()
        self.model = model
        self.port = port
        self.api_key = api_key  # when set, any other bearer token gets a 401
        self.dialects = dialects  # the structured-output dialects it honours (`_unspoken`: the others)
        # Keep when each answer held the server (GET /v1/_busy): a benchmark's timeline, off by default
        # because it grows with every request a long-lived server answers.
        self.record_busy = record_busy
        # When set, chat requests above this rate (over the last second) get a 429, as from a
        # provider's rate limit: what the client's rate limiter learns from.
        self.requests_per_minute = requests_per_minute
        self._accepted_at: deque[float] = deque()
        self.stats = _Stats()
        # The Batch API (testing/batchapi.py): lines answered by `_chat`, without the latency.
        self.batches = BatchAPI(lambda headers, body: self._chat(headers, body, latency=False))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._serve_forever, name="scripted-llm-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("scripted server did not start within 10 s")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve_forever(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _shutdown(self) -> None:
        # Close open connections inside the loop, so nothing is left for a closed loop.
        self._server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def serve(self) -> None:
        """Serve in the current event loop until cancelled (for `python -m trace_builder.testing.devserver`)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        async with self._server:
            await self._server.serve_forever()

    # -- HTTP -----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            while True:
                _quick_ack(sock)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                _quick_ack(sock)
                body = await reader.readexactly(length) if length else b""
                status, payload, extra = await self._route(method, path, headers, body)
                self._write(writer, status, payload, extra)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, payload: dict | bytes, extra: dict[str, str]) -> None:
        # bytes: a file's content (the Batch API's output files), sent as they are
        raw = isinstance(payload, bytes)
        data = payload if raw else json.dumps(payload, ensure_ascii=False).encode()
        kind = "application/octet-stream" if raw else "application/json"
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
        }.get(status, "X")
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {kind}", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)

    async def _route(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, dict]:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}, {}
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]}, {}
        if method == "GET" and path.endswith("/_stats"):
            return 200, self.stats_snapshot(), {}
        if method == "GET" and path.endswith("/_busy"):
            return 200, {"busy": self.stats.busy}, {}
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(headers, json.loads(body))
        if (reply := await self.batches.route(method, path, headers, body)) is not None:
            return reply
        return 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}, {}

    async def _chat(self, headers: dict, body: dict, latency: bool = True) -> tuple[int, dict, dict]:
        task = headers.get("x-trace-build-task", "")
        dialect = dialect_of(body)
        if dialect is not None and dialect not in self.dialects:
            return self._unspoken(dialect, body)
        if task == "probe":  # the client's dialect probe: not one of the run's requests
            self.stats.faults["probe"] += 1
            return 200, self._completion(body, "probe", self.responder(task, body)), {}
        digest_hex = request_digest(body)
        self.stats.by_request[digest_hex] += 1
        attempt = self.stats.by_request[digest_hex]
        structured = dialect is not None
        fault = self.faults.pick(int(digest_hex[:12], 16), attempt, structured)
        if self._over_rate_limit():
            self.stats.faults["rate_limit"] += 1
            return 429, {"error": {"message": "rate limit reached", "type": "requests"}}, {"Retry-After": "0.5"}
        if self.latency_s and latency:
            began = time.time()
            await asyncio.sleep(self.latency_s)
            if self.record_busy:
                self.stats.busy.append((began, time.time(), task))
        if fault == "429":
            self.stats.faults["429"] += 1
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0"}
        if fault == "500":
            self.stats.faults["500"] += 1
            return 500, {"error": {"message": "injected server error", "type": "server_error"}}, {}
        if fault == "hang":
            self.stats.faults["hang"] += 1
            await asyncio.sleep(self.faults.hang_s)
        self.stats.by_task[task] += 1
        try:
            text = self.responder(task, body)
        except Refused as refusal:  # as a provider's content filter answers: the same every time
            self.stats.faults["refused"] += 1
            error = {"message": str(refusal), "type": "invalid_request_error", "code": "content_filter"}
            return 400, {"error": error}, {}
        if fault == "malformed":
            self.stats.faults["malformed"] += 1
            text = text[: max(1, len(text) // 2)].replace("{", "{'", 1)
        return 200, self._completion(body, digest_hex, text), {}

    def _completion(self, body: dict, digest_hex: str, text: str) -> dict:
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        return {
            "id": "chatcmpl-" + digest_hex[:12],
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text) // 4 + 1,
                "total_tokens": prompt_tokens + len(text) // 4 + 1,
            },
        }

    def _unspoken(self, dialect: str, body: dict) -> tuple[int, dict, dict]:
        """What a server that does not speak `dialect` does: llama.cpp answers json_schema with a 500,
        others reject json_object with a 400; body fields it does not know are ignored (prose comes back)."""
        self.stats.faults[f"unspoken {dialect}"] += 1
        if dialect == "json_schema":
            message = "1 validation error: response_format.type: Input should be 'text' or 'json_object'"
            return 500, {"error": {"message": message, "type": "internal_server_error"}}, {}
        if dialect == "json_object":
            message = "response_format json_object is not supported by this server"
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}, {}
        return 200, self._completion(body, "prose", "Sure! Here is what you asked for, in a few words."), {}

    def _over_rate_limit(self) -> bool:
        """Whether a chat request now exceeds `requests_per_minute` (a sliding one-second window)."""
        if not self.requests_per_minute:
            return False
        now = time.monotonic()
        while self._accepted_at and now - self._accepted_at[0] >= 1.0:
            self._accepted_at.popleft()
        if len(self._accepted_at) >= self.requests_per_minute / 60:
            return True
        self._accepted_at.append(now)
        return False

    def stats_snapshot(self) -> dict:
        return {
            "by_task": dict(self.stats.by_task),
            "requests": sum(self.stats.by_request.values()),
            "distinct": len(self.stats.by_request),
            "repeated": {k: v for k, v in self.stats.by_request.items() if v > 1},
            "faults": dict(self.stats.faults),
            # answers the responder broke on purpose (ScriptedResponder.model_like), by digest
            "broken_answers": sorted(getattr(self.responder, "broken", ())),
            "batches": len(self.batches.batches),
            "batch_sizes": [b["request_counts"]["total"] for b in self.batches.batches.values()],
            "batch_lines": sum(self.batches.submitted.values()),
            "batch_lines_repeated": self.batches.repeated,
        }


@contextlib.contextmanager
def devserver_process(**flags: float | str | bool) -> Iterator[str]:
    """This server in its own process (so its CPU is not the benchmark's), as a base URL.

    `flags` are main()'s options by their Python names: devserver_process(latency=0.5, mark_rate=0.9).
    """
    command = [sys.executable, "-m", "trace_builder.testing.devserver"]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False:
            command += [flag, str(value)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scripted_trace_config(base_url: str, concurrency: int = 64) -> Any:
    """A run config with the `trace` profile that asks this server (model "scripted")."""
    from trace_builder.config import load_config

    config = load_config(profile="trace", backend_kind="openai")
    config.backend.kind = "openai"  # backend_kind chose the profile; the kind itself is set here
    config.backend.model = "scripted"
    config.backend.base_urls, config.backend.concurrency = [base_url], concurrency
    return config


def main(argv: list[str] | None = None) -> None:
    """`python -m trace_builder.testing.devserver --port 8011 --latency 0.5 [--mark-rate 0.8]`: serve the pipeline script."""
    import argparse

    from trace_builder.testing.scripted import ScriptedResponder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--model", default="scripted")
    parser.add_argument(
        "--mark-rate",
        type=float,
        default=None,
        help="chance that an answer meets each constraint (by constraint and seed); default 1, or 0.9 with --model-like",
    )
    parser.add_argument("--rpm", type=float, default=None, help="answer 429 above this many requests a minute")
    parser.add_argument(
        "--record-busy", action="store_true", help="keep when each answer held the server (GET /v1/_busy)"
    )
    parser.add_argument(
        "--model-like",
        action="store_true",
        help="answer as a weak model behind a lax server (ScriptedResponder.model_like: lists one off, "
        "numbers out of bounds, refusals, yields falling with the count); --mark-rate still applies",
    )
    args = parser.parse_args(argv)
    rate = {} if args.mark_rate is None else {"mark_rate": args.mark_rate}
    responder = ScriptedResponder.model_like(**rate) if args.model_like else ScriptedResponder(**rate)
    server = ScriptedServer(
        responder,
        latency_s=args.latency,
        model=args.model,
        port=args.port,
        requests_per_minute=args.rpm,
        record_busy=args.record_busy,
    )

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while server._server is None:
            await asyncio.sleep(0.01)
        print(server.base_url, flush=True)
        await task

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
