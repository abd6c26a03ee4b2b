"""The vllm backend: the in-process vLLM engine on a GPU machine (optional extra, imported only here)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from queue import Empty, Queue
from typing import Any

from trace_builder.errors import LLMError, ModelLoadError, UserError
from trace_builder.llm.base import ChatRequest, ChatResult

_BATCH_WAIT_S = 0.02  # gather requests this long so the engine sees a batch, not a trickle


def _structured_params(schema: dict[str, Any]) -> dict[str, Any]:
    """Sampling kwargs that hold the answer to a JSON schema, across vLLM's API generations."""
    try:  # vLLM >= 0.10
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VLLMBackend:
    """Runs `vllm.LLM` in one worker thread; requests from many coroutines are batched into `chat` calls."""

    name = "vllm"

    def __init__(self, model: str, engine_args: dict[str, Any] | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("the vllm backend needs vLLM on a GPU machine: pip install 'trace-build[vllm]'") from None
        self.model = model
        try:
            self._llm = LLM(model=model, **(engine_args or {}))
        except Exception as exc:  # a wrong name, no GPU, too little memory: all end the run here
            raise ModelLoadError.of(
                model, exc, "check --model (a local dir or a cached hub id) and backend.engine_args against the GPU"
            ) from exc
        self._queue: Queue[tuple[ChatRequest, Future] | None] = Queue()
        self._worker = threading.Thread(target=self._serve, name="vllm-engine", daemon=True)
        self._worker.start()

    async def complete(self, request: ChatRequest) -> ChatResult:
        future: Future = Future()
        self._queue.put((request, future))
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        from vllm import SamplingParams

        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            try:
                while True:
                    more = self._queue.get(timeout=_BATCH_WAIT_S)
                    if more is None:
                        self._queue.put(None)
                        break
                    batch.append(more)
            except Empty:
                pass
            params = [
                SamplingParams(
                    temperature=r.temperature,
                    max_tokens=r.max_tokens,
                    seed=r.seed,
                    **(_structured_params(r.json_schema) if r.json_schema else {}),
                )
                for r, _ in batch
            ]
            try:
                outputs = self._llm.chat([list(r.messages) for r, _ in batch], params, use_tqdm=False)
            except Exception as exc:  # one bad batch must not kill the worker
                for _, future in batch:
                    future.set_exception(LLMError("engine_error", str(exc)[:200]))
                continue
            for (_, future), output in zip(batch, outputs):
                completion = output.outputs[0]
                future.set_result(
                    ChatResult(
                        text=completion.text,
                        prompt_tokens=len(output.prompt_token_ids or []),
                        completion_tokens=len(completion.token_ids),
                        finish_reason=completion.finish_reason,
                    )
                )

    async def aclose(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._worker.join, 30)
