"""The openai backend puts exactly our messages and schema on the wire, and retries as it should."""

from __future__ import annotations

import asyncio

import pytest

from trace_builder.errors import LLMError
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.openai_backend import OpenAIBackend
from trace_builder.testing.devserver import Faults, ScriptedServer


def test_wire_body_holds_messages_and_schema():
    seen = []

    def record(task, body):
        seen.append((task, body))
        return '{"ok": true}'

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    messages = ({"role": "system", "content": "s"}, {"role": "user", "content": "u"})
    with ScriptedServer(record) as server:
        backend = OpenAIBackend("scripted", [server.base_url], api_key="k", structured_output="json_schema")
        result = asyncio.run(
            backend.complete(ChatRequest(messages, json_schema=schema, schema_name="Ok", task="t.x", seed=3))
        )
    assert result.text == '{"ok": true}'
    task, body = seen[0]
    assert task == "t.x"
    assert body["messages"] == list(messages)
    assert body["response_format"]["json_schema"] == {"name": "Ok", "schema": schema, "strict": True}
    assert body["seed"] == 3 and body["model"] == "scripted"


def test_gives_up_with_a_reason_after_retries():
    faults = Faults(server_error_every=1, transient_attempts=99)
    with ScriptedServer(lambda task, body: "x", faults=faults) as server:
        backend = OpenAIBackend("scripted", [server.base_url], api_key="k", max_retries=2, backoff_initial_s=0.01)
        with pytest.raises(LLMError) as failure:
            asyncio.run(backend.complete(ChatRequest(({"role": "user", "content": "hi"},))))
        assert failure.value.reason == "http_500"
        assert server.stats_snapshot()["faults"]["500"] == 3  # the first try and two retries
