"""The in-process vLLM backend, without a GPU: a stand-in for `vllm.LLM` checks what it is asked."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import pytest

from trace_builder.errors import LLMError, ModelLoadError, UserError
from trace_builder.llm.base import ChatRequest

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@dataclass
class _Params:  # vllm.SamplingParams: what a request asks of the engine
    temperature: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    structured_outputs: object = None


@dataclass
class _Structured:  # vllm.sampling_params.StructuredOutputsParams
    json: dict | None = None


@dataclass
class _FakeLLM:
    model: str
    calls: list = field(default_factory=list)
    fail_with: Exception | None = None
    delay_s: float = 0.0

    def __post_init__(self):
        if self.model == "no-such-model":
            raise OSError("no-such-model is not a local folder and not a cached hub id")

    def chat(self, conversations, params, use_tqdm=True):
        self.calls.append((threading.current_thread().name, conversations, params))
        time.sleep(self.delay_s)  # a blocking engine step
        if self.fail_with is not None:
            raise self.fail_with
        outputs = []
        for conversation, p in zip(conversations, params):
            text = '{"ok": true}' if p.structured_outputs is not None else "plain " + conversation[-1]["content"]
            completion = types.SimpleNamespace(text=text, token_ids=[1, 2, 3], finish_reason="stop")
            outputs.append(types.SimpleNamespace(outputs=[completion], prompt_token_ids=[7] * 5))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _FakeLLM
    module.SamplingParams = _Params
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = _Structured
    module.sampling_params = sampling
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return module


def _backend(model="m", **engine_args):
    from trace_builder.llm.vllm_backend import VLLMBackend

    return VLLMBackend(model, engine_args)


def test_requests_become_sampling_params_with_structured_outputs(fake_vllm):
    backend = _backend()

    async def ask():
        try:
            return await asyncio.gather(
                backend.complete(
                    ChatRequest(({"role": "user", "content": "q"},), temperature=0.3, max_tokens=9, seed=4)
                ),
                backend.complete(ChatRequest(({"role": "user", "content": "j"},), json_schema=SCHEMA)),
            )
        finally:
            await backend.aclose()

    plain, structured = asyncio.run(ask())
    assert plain.text == "plain q" and (plain.prompt_tokens, plain.completion_tokens) == (5, 3)
    assert structured.text == '{"ok": true}' and structured.finish_reason == "stop"
    (thread, conversations, params), *rest = backend._llm.calls
    assert not rest  # requests that arrive together go to the engine as one batch
    assert thread == "vllm-engine" and len(conversations) == 2
    assert (params[0].temperature, params[0].max_tokens, params[0].seed) == (0.3, 9, 4)
    assert params[1].structured_outputs == _Structured(json=SCHEMA)


def test_the_blocking_engine_call_runs_off_the_event_loop(fake_vllm):
    backend = _backend()
    backend._llm.delay_s = 0.3
    ticks = []

    async def main():
        async def tick():
            for _ in range(10):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        try:
            await asyncio.gather(backend.complete(ChatRequest(({"role": "user", "content": "q"},))), tick())
        finally:
            await backend.aclose()

    asyncio.run(main())
    assert len(ticks) == 10 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.2  # the loop kept turning


def test_an_engine_error_fails_its_batch_and_the_worker_goes_on(fake_vllm):
    backend = _backend()

    async def main():
        try:
            backend._llm.fail_with = RuntimeError("CUDA out of memory")
            with pytest.raises(LLMError, match="engine_error: CUDA out of memory"):
                await backend.complete(ChatRequest(({"role": "user", "content": "q"},)))
            backend._llm.fail_with = None
            return await backend.complete(ChatRequest(({"role": "user", "content": "again"},)))
        finally:
            await backend.aclose()

    assert asyncio.run(main()).text == "plain again"


def test_a_model_that_cannot_load_is_a_model_load_error(fake_vllm):
    with pytest.raises(ModelLoadError, match="cannot load model no-such-model .OSError"):
        _backend("no-such-model")


def test_without_vllm_the_backend_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"pip install 'trace-build\[vllm\]'"):
        _backend()
