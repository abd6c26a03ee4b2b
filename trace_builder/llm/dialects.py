"""Structured-output dialects: how a JSON Schema goes to an OpenAI-compatible server, and the probe
that finds the one a server honours.

Servers differ. OpenAI, vLLM, SGLang and LM Studio take `response_format: json_schema`;
llama-cpp-python takes `response_format: json_object` with a `schema` beside it (and answers
json_schema with HTTP 500); vLLM also takes its structured outputs in the request body; some
servers take none, and the schema can only be asked for in the prompt. Whatever the dialect,
every answer is validated against the whole schema (llm/structured.py) and asked again if it
does not fit, so a dialect decides how often that happens, never what is kept.
"""

from __future__ import annotations

import json
from typing import Any

from trace_builder.llm.structured import is_closed_schema

DIALECTS = ("json_schema", "json_object", "vllm", "prompt")
AUTO = "auto"

# Put after the last user message in the `prompt` dialect (and read by the scripted server).
SCHEMA_IN_PROMPT = "Answer with one JSON object and nothing else. It must fit this JSON Schema:"


def with_schema(body: dict[str, Any], dialect: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
    """`body` (a chat completion request) asking for an answer that fits `schema`, in `dialect`."""
    if dialect == "json_schema":
        # Strict mode rejects open objects (e.g. a check's free-form params).
        spec = {"name": name, "schema": schema, "strict": is_closed_schema(schema)}
        return {**body, "response_format": {"type": "json_schema", "json_schema": spec}}
    if dialect == "json_object":
        return {**body, "response_format": {"type": "json_object", "schema": schema}}
    if dialect == "vllm":
        return {**body, "structured_outputs": {"json": schema}}
    if dialect == "prompt":
        messages = list(body["messages"])
        last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        text = f"{messages[last]['content']}\n\n{SCHEMA_IN_PROMPT}\n{json.dumps(schema, ensure_ascii=False)}"
        messages[last] = {**messages[last], "content": text}
        return {**body, "messages": messages}
    raise ValueError(f"unknown structured-output dialect {dialect!r}: use {AUTO} or one of {', '.join(DIALECTS)}")


# The probe's question: small, and answerable only by a grammar or a model that follows instructions.
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    "required": ["colour", "count"],
    "additionalProperties": False,
}
PROBE_MESSAGES = (
    {
        "role": "user",
        "content": 'Give a colour (red, green or blue) and a count, as JSON: {"colour": ..., "count": ...}',
    },
)
