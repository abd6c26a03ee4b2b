"""Structured-output dialects: the wire forms, the probe that picks one, and servers that refuse."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import write_config
from tests.test_cli import assert_one_line_error, cli
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.dialects import DIALECTS, PROBE_SCHEMA, with_schema
from trace_builder.llm.openai_backend import OpenAIBackend
from trace_builder.run.store import read_json, read_parquet_dir
from trace_builder.testing.devserver import Faults, ScriptedServer
from trace_builder.testing.scripted import respond

BODY = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}


def test_each_dialect_puts_the_schema_where_its_servers_read_it():
    assert (
        with_schema(BODY, "json_schema", PROBE_SCHEMA, "x")["response_format"]["json_schema"]["schema"] == PROBE_SCHEMA
    )
    assert with_schema(BODY, "json_object", PROBE_SCHEMA, "x")["response_format"] == {
        "type": "json_object",
        "schema": PROBE_SCHEMA,
    }
    assert with_schema(BODY, "vllm", PROBE_SCHEMA, "x")["structured_outputs"] == {"json": PROBE_SCHEMA}
    prompted = with_schema(BODY, "prompt", PROBE_SCHEMA, "x")
    assert "response_format" not in prompted and BODY["messages"][1]["content"] == "q"  # the original is untouched
    assert json.loads(prompted["messages"][1]["content"].splitlines()[-1]) == PROBE_SCHEMA
    with pytest.raises(ValueError, match="unknown structured-output dialect"):
        with_schema(BODY, "xml", PROBE_SCHEMA, "x")


@pytest.mark.parametrize(
    ("speaks", "chosen", "said"),
    [
        (DIALECTS, "json_schema", "json_schema honoured"),
        (("json_object", "prompt"), "json_object", "json_schema: HTTP 500"),  # llama-cpp-python
        (("vllm", "prompt"), "vllm", "json_object: HTTP 400"),
        (("prompt",), "prompt", "vllm: "),
    ],
)
def test_the_probe_picks_the_first_dialect_the_server_honours(speaks, chosen, said):
    with ScriptedServer(respond, dialects=speaks) as server:
        backend = OpenAIBackend("scripted", [server.base_url], max_retries=0)

        async def probe():
            try:
                return await backend.structured_dialect()
            finally:
                await backend.aclose()

        assert asyncio.run(probe()) == chosen
        assert said in backend.probe_note
        assert server.stats_snapshot()["requests"] == 0  # the probe is not one of the run's requests


@pytest.mark.parametrize(
    ("speaks", "flags", "chosen"),
    [
        (("json_object", "prompt"), (), "json_object"),  # probed: the first dialect the server keeps to
        (("prompt",), ("--structured-output", "prompt"), "prompt"),  # chosen: data built on validation alone
    ],
)
def test_a_run_asks_in_its_dialect_and_records_it(tmp_path, speaks, flags, chosen):
    with ScriptedServer(respond, dialects=speaks) as server:
        config = write_config(tmp_path / "c.yaml", server.base_url, limit=8)
        done = cli("run", "--config", config, "--out", str(tmp_path / "run"), *flags)
    assert done.returncode == 0, done.stderr
    assert ("structured output: json_object (probed in" in done.stderr) == (not flags)
    assert read_json(tmp_path / "run" / "run.json")["structured_output"] == chosen
    assert len(read_parquet_dir(tmp_path / "run" / "final" / "sft")) > 0


def test_a_server_refusing_every_structured_request_stops_the_run_with_its_message(tmp_path):
    with ScriptedServer(respond, dialects=("json_schema",)) as server:
        config = write_config(tmp_path / "c.yaml", server.base_url, limit=6)
        done = cli("run", "--config", config, "--out", str(tmp_path / "run"), "--structured-output", "json_object")
    assert done.returncode == 1, done.stderr
    assert_one_line_error(
        done, "refused all 5 expand.structure requests", "HTTP 400", "not supported", "--structured-output"
    )


def test_a_run_whose_every_request_failed_does_not_exit_0(tmp_path):
    faults = Faults(server_error_every=1, transient_attempts=10**6)
    with ScriptedServer(respond, faults=faults) as server:
        config = write_config(tmp_path / "c.yaml", server.base_url, limit=3)
        text = open(config).read().replace("  max_retries: 4", "  max_retries: 0\n  storm_after_s: 600")
        open(config, "w").write(text)
        done = cli("run", "--config", config, "--out", str(tmp_path / "run"), "--structured-output", "json_schema")
    assert done.returncode == 1, done.stderr
    assert_one_line_error(done, "no final rows: every row failed on a request to the server", "http_500")
    command = " ".join(done.stderr.split()).split("`trace-build ")[-1].split("`")[0].split()
    shown = cli(*command)  # the command it names shows the server's messages
    assert shown.returncode == 0 and "http_500" in shown.stdout, shown.stderr


def test_an_unknown_dialect_is_one_line():
    assert_one_line_error(cli("run", "--structured-output", "xml", "--base-url", "http://127.0.0.1:9/v1"), "xml")


def test_an_answer_request_is_not_changed_by_the_dialect():
    request = ChatRequest(messages=({"role": "user", "content": "q"},), json_schema=None)
    assert request.json_schema is None  # free-text requests carry no schema in any dialect


class _RefusesSome:
    """A server that refuses (HTTP 400) every prompt containing 'refuse me' and answers the rest."""

    name, model = "fake", "fake"

    async def complete(self, request: ChatRequest):
        from trace_builder.errors import LLMError
        from trace_builder.llm.base import ChatResult

        if "refuse me" in request.messages[-1]["content"]:
            raise LLMError("http_400", "The response was filtered due to the prompt")
        return ChatResult(text="fine")

    async def aclose(self) -> None:
        pass


def test_a_rerun_that_sends_only_refused_prompts_is_not_taken_for_a_refusing_server(tmp_path):
    """A rerun answers from the cache and sends only what failed before; those being refused again
    (a content filter) says nothing about the server, which answered this kind of request."""
    from trace_builder.errors import LLMError, ServerRefused
    from trace_builder.llm.cache import RequestCache
    from trace_builder.llm.client import LLMClient

    async def session(prompts: list[str]) -> list[str]:
        client = LLMClient(_RefusesSome(), RequestCache(tmp_path / "cache.sqlite"), concurrency=2)
        outcomes = []
        try:
            for prompt in prompts:
                try:
                    outcomes.append(await client.chat([{"role": "user", "content": prompt}], tag="t"))
                except LLMError as exc:
                    outcomes.append(exc.reason)
        finally:
            client.cache.close()
        return outcomes

    mixed = [f"question {i}" for i in range(8)] + [f"refuse me {i}" for i in range(6)]
    assert asyncio.run(session(mixed)) == ["fine"] * 8 + ["http_400"] * 6
    assert asyncio.run(session(mixed)) == ["fine"] * 8 + ["http_400"] * 6  # the rerun: 8 cached, 6 refused again
    (tmp_path / "cache.sqlite").unlink()
    with pytest.raises(ServerRefused, match="refused all 5 t requests"):
        asyncio.run(session([f"refuse me {i}" for i in range(6)]))  # never answered: the server refuses
