"""Structured answers: JSON Schemas for response_format, and a tolerant parser as the fallback."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ValidationError

from trace_builder.errors import LLMError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


_ENUM_UP_TO = 64  # a bounded integer with fewer values than this is also given as an enum


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema made acceptable to strict structured-output servers.

    OpenAI's strict mode (and grammar compilers) want every object closed and every
    property required; pydantic leaves both open by default. A small bounded integer is
    also an enum of its values. Returns a fresh copy the caller may change.
    """
    return copy.deepcopy(_strict_schema(model))


@lru_cache(maxsize=64)
def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    # pydantic takes milliseconds to build a schema: far too slow to do per request.
    schema = model.model_json_schema()

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            low, high = node.get("minimum"), node.get("maximum")
            if node.get("type") == "integer" and low is not None and high is not None and high - low < _ENUM_UP_TO:
                # Grammar engines that ignore number bounds (llama.cpp) do enforce an enum.
                node["enum"] = list(range(int(low), int(high) + 1))
            node.pop("default", None)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def is_closed_schema(schema: Any) -> bool:
    """True when every object lists its properties and forbids others (what strict mode needs)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            return False
        return all(is_closed_schema(v) for v in schema.values())
    if isinstance(schema, list):
        return all(is_closed_schema(v) for v in schema)
    return True


def _first_json_object(text: str) -> str | None:
    """The first balanced {...} in `text`, honouring strings and escapes."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def loads_tolerant(text: str) -> Any:
    """Parse JSON the way a forgiving reader would: raw, fenced, embedded, trailing commas.

    Raises ValueError when nothing JSON-like can be read.
    """
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    embedded = _first_json_object(text)
    if embedded:
        candidates.append(embedded)
    for candidate in candidates:
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                return json.loads(variant, strict=False)
            except (json.JSONDecodeError, ValueError):
                continue
    raise ValueError("no JSON object found")


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def schema_violation(data: Any, schema: dict[str, Any]) -> str | None:
    """Where `data` breaks `schema` (the whole JSON Schema the request sent), or None when it fits.

    Every keyword counts: array lengths, number bounds, enums, required keys, closed objects.
    A grammar engine may enforce only part of them (llama.cpp ignores number bounds, a server
    without one enforces nothing), and pydantic types alone miss a judge's 14 scores for 15.
    """
    validator = _validator(json.dumps(schema, sort_keys=True))
    error = best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "answer"
    return f"{where}: {_snippet(error.message, 120)}"


def parse_structured(text: str, model: type[M], schema: dict[str, Any] | None = None) -> M:
    """An answer as `model`, once it fits `schema` (the JSON Schema that was sent) and `model` both;
    LLMError('invalid_json' | 'schema_mismatch') if it is unusable."""
    try:
        data = json.loads(text, strict=False)  # raw newlines in strings: llama.cpp's grammar allows them
    except ValueError:
        try:
            data = loads_tolerant(text)
        except ValueError:
            raise LLMError("invalid_json", _snippet(text)) from None
    if schema is not None and (problem := schema_violation(data, schema)) is not None:
        raise LLMError("schema_mismatch", problem)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "answer"
        raise LLMError("schema_mismatch", f"{where}: {first.get('msg', '')}") from None


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
