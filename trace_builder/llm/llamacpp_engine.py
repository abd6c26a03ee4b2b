"""The embedded GGUF run in-process by llama.cpp (llama-cpp-python, the `llamacpp` extra).

The same model as the torch engine, read straight from its GGUF file (nothing to convert),
decoded by llama.cpp's CPU kernels: several times the torch engine's speed for one stream on
2 cores. Prompts use the same plain chat layout (chat_format.py) as the torch engine and
training, and JSON answers are held to their schema by llama.cpp's grammar, which enforces
the structure but not number bounds: answers are validated and re-asked as with any server.
Requests are served one at a time from a worker thread (a `Llama` is not thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from trace_builder.chat_format import PLAIN_STOP_STRINGS, plain_transcript
from trace_builder.errors import LLMError, ModelLoadError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.model_files import EMBEDDED_MODEL, embedded_gguf

log = logging.getLogger("trace_builder")
N_CTX = 8192


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppBackend:
    """The local backend on llama.cpp: `model` is the embedded model's name or a .gguf file."""

    name = "local"

    def __init__(self, model: str = EMBEDDED_MODEL, num_threads: int | None = None):
        self.model = model
        # Every core: llama.cpp's threads do not stall each other as torch's OpenMP barrier does.
        self.num_threads = num_threads or os.cpu_count() or 1
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the model (the first request loads it too)."""
        if self._llm is None:
            self._llm = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        try:
            from llama_cpp import Llama

            path = embedded_gguf() if self.model == EMBEDDED_MODEL else Path(self.model).expanduser()
            with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's load log
                return Llama(str(path), n_ctx=N_CTX, n_threads=self.num_threads, seed=0, verbose=False)
        except Exception as exc:
            raise ModelLoadError.of(
                self.model, exc, "reinstall llama-cpp-python, or set backend.engine: torch"
            ) from exc

    async def complete(self, request: ChatRequest) -> ChatResult:
        async with self._lock:
            await self.start()
            return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: ChatRequest) -> ChatResult:
        prompt = plain_transcript(request.messages)
        try:
            out = self._llm.create_completion(
                prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed if request.seed is not None else 0,
                stop=list(PLAIN_STOP_STRINGS),
                grammar=self._grammar(request.json_schema) if request.json_schema else None,
            )
        except ValueError as exc:  # llama.cpp: a prompt longer than the context
            raise LLMError("prompt_too_long", str(exc)[:160]) from None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResult(
            text=choice["text"].strip(),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
        )

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """llama.cpp's grammar for `schema` (compiled once per schema); None when it cannot express it."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp import LlamaGrammar

            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as exc:  # noqa: BLE001 - unsupported keywords: the answer is validated anyway
                log.debug("no llama.cpp grammar for a schema (%s): answers are validated only", exc)
                self._grammars[key] = None
        return self._grammars[key]

    async def aclose(self) -> None:
        async with self._lock:
            self._llm = None
