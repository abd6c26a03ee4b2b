"""The check-kind registry: spec validation, strict/loose execution, JSON Schema and prompt catalogue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trace_builder.taxonomy import DIMENSION_IDS
from trace_builder.verify.loose import loose_variants

MODES = ("strict", "loose")


@dataclass(frozen=True)
class Verdict:
    """A checker's decision: `detail` says what was measured, e.g. '14 characters, expected exactly 10'."""

    passed: bool
    detail: str


@dataclass(frozen=True)
class CheckSpec:
    """One check as the LLM emits it: a registered kind and its parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


P = TypeVar("P", bound="Params")


class Params(BaseModel):
    """Base for every kind's parameters: exact JSON types, no unknown keys.

    Strict types because a spec comes from an LLM: "5" for an int or an unknown key such as
    "minimum" means the model misunderstood the catalogue, and a misread check must be
    dropped rather than run with a meaning nobody asked for.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class NoParams(Params):
    pass


class MinCountParams(Params):
    min_count: int = Field(default=1, ge=1, description="at least this many")


class CountBounds(Params):
    """min / max / exact on a count; at least one given, exact alone."""

    min: int | None = Field(default=None, ge=0, description="at least this many")
    max: int | None = Field(default=None, ge=0, description="at most this many")
    exact: int | None = Field(default=None, ge=0, description="exactly this many")

    @model_validator(mode="after")
    def _consistent(self) -> CountBounds:
        if self.exact is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give exact alone, or min and/or max")
            return self
        if self.min is None and self.max is None:
            raise ValueError("give at least one of min, max, exact")
        return require_range(self, "min", "max")


def require_range(params: P, low: str, high: str) -> P:
    """A pair of optional bounds on `params`: at least one given, and in order."""
    low_value, high_value = getattr(params, low), getattr(params, high)
    if low_value is None and high_value is None:
        raise ValueError(f"give {low} and/or {high}")
    if low_value is not None and high_value is not None and low_value > high_value:
        raise ValueError(f"{low} is greater than {high}")
    return params


def within_bounds(
    count: int, noun: str, min: int | None = None, max: int | None = None, exact: int | None = None
) -> Verdict:
    """Compare a count with CountBounds values; the detail reads '14 characters, expected exactly 10'."""
    if exact is not None:
        return Verdict(count == exact, f"{count} {noun}, expected exactly {exact}")
    passed = (min is None or count >= min) and (max is None or count <= max)
    if min is not None and max is not None:
        expected = f"between {min} and {max}"
    elif min is not None:
        expected = f"at least {min}"
    else:
        expected = f"at most {max}"
    return Verdict(passed, f"{count} {noun}, expected {expected}")


@dataclass(frozen=True)
class CheckKind:
    """A registered kind: its parameters, the dimensions it serves and its pure checker."""

    name: str
    params_model: type[Params]
    dimensions: tuple[str, ...]
    description: str
    description_zh: str
    check: Callable[..., Verdict]
    # Extra candidate texts for loose mode beyond the generic IFEval variants (e.g. the body
    # of a ```json fence for the JSON check).
    extra_loose_variants: Callable[[str], list[str]] | None = None

    def params_json_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


KINDS: dict[str, CheckKind] = {}


def register(
    name: str,
    params: type[Params],
    dimensions: tuple[str, ...],
    description: str,
    description_zh: str,
    extra_loose_variants: Callable[[str], list[str]] | None = None,
) -> Callable[[Callable[..., Verdict]], Callable[..., Verdict]]:
    """Decorator that registers `check(response, **params) -> Verdict` under `name`."""
    unknown = set(dimensions) - DIMENSION_IDS
    if unknown:
        raise ValueError(f"check kind {name!r}: unknown dimension ids {sorted(unknown)}")
    if name in KINDS:
        raise ValueError(f"check kind {name!r} registered twice")

    def decorate(check: Callable[..., Verdict]) -> Callable[..., Verdict]:
        KINDS[name] = CheckKind(
            name, params, tuple(dimensions), description, description_zh, check, extra_loose_variants
        )
        return check

    return decorate


def validate_spec(raw: object) -> CheckSpec | None:
    """A canonical CheckSpec (defaults filled in) for a valid spec; None for anything else.

    Accepts a CheckSpec or a mapping {"kind": str, "params": {...}}; "params" may be left
    out for kinds without required parameters. Other top-level keys are ignored, since an
    LLM may add a note beside the spec; unknown keys inside params are not.
    """
    try:
        if isinstance(raw, CheckSpec):
            kind_name, params = raw.kind, raw.params
        elif isinstance(raw, Mapping):
            kind_name, params = raw.get("kind"), raw.get("params", {})
        else:
            return None
        if not isinstance(kind_name, str) or kind_name not in KINDS:
            return None
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            return None
        model = KINDS[kind_name].params_model.model_validate(dict(params))
        return CheckSpec(kind_name, model.model_dump())
    except (ValidationError, TypeError, ValueError, RecursionError):
        return None


def run_check(spec: CheckSpec, response: str, mode: str = "strict") -> Verdict:
    """Decide whether `response` meets `spec`.

    "strict" checks the response as it is. "loose" (as IFEval's loose accuracy) also checks
    variants (markdown '*' removed, first and/or last line dropped, plus kind-specific ones)
    and passes if any does. A spec that did not come from validate_spec is validated here;
    an invalid one raises ValueError (a programming error, not an LLM one).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise ValueError(f"unknown check kind {spec.kind!r}")
    try:
        params = dict(kind.params_model.model_validate(spec.params))
    except ValidationError as error:
        raise ValueError(f"invalid params for {spec.kind!r}: {error}") from None
    verdict = kind.check(response, **params)
    if mode == "strict" or verdict.passed:
        return verdict
    extra = kind.extra_loose_variants(response) if kind.extra_loose_variants else []
    for name, variant in loose_variants(response, extra):
        candidate = kind.check(variant, **params)
        if candidate.passed:
            return Verdict(True, f"{candidate.detail} (loose: {name})")
    return verdict


def kinds_for_dimension(dimension_id: str) -> list[str]:
    """Names of the kinds that typically serve `dimension_id` (empty for an unknown id)."""
    return sorted(name for name, kind in KINDS.items() if dimension_id in kind.dimensions)


def check_spec_json_schema(detailed: bool = False) -> dict[str, Any]:
    """JSON Schema of one check spec, for an LLM's response_format.

    The default is deliberately simple for constrained decoding: kind is an enum, params
    any object, to be validated afterwards by validate_spec. `detailed=True` gives an anyOf
    with each kind's exact params schema, for servers whose grammar engine handles it.
    """
    names = sorted(KINDS)
    if not detailed:
        return {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": names},
                "params": {"type": "object"},
            },
            "required": ["kind", "params"],
            "additionalProperties": False,
        }
    variants = []
    for name in names:
        params_schema = KINDS[name].params_json_schema()
        params_schema.pop("title", None)
        variants.append(
            {
                "type": "object",
                "properties": {"kind": {"const": name}, "params": params_schema},
                "required": ["kind", "params"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": variants}


def _type_name(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        names = [_type_name(option) for option in schema["anyOf"] if option.get("type") != "null"]
        return "|".join(names)
    if "enum" in schema:
        return "|".join(f'"{value}"' for value in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return {"integer": "int", "string": "str", "boolean": "bool", "number": "float"}.get(str(kind), "any")


def _signature(model: type[Params]) -> str:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    parts = []
    # Required parameters first, so "keyword: str" is not lost behind the optional counts.
    properties = sorted(schema.get("properties", {}).items(), key=lambda item: item[0] not in required)
    for name, prop in properties:
        text = f"{name}: {_type_name(prop)}"
        if name not in required:
            default = prop.get("default")
            text += "?" if default is None else f" = {_json_literal(default)}"
        parts.append(text)
    return ", ".join(parts)


def _json_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


_CATALOGUE_HEAD = {
    "en": (
        'Check kinds: a spec is {"kind": name, "params": {...}}. "x?" = optional; '
        "count params min/max/exact: give exact alone, or min and/or max. Words: each "
        "Chinese/Japanese character counts as one word, each Latin word as one; characters: "
        "every non-whitespace character; sentences end with . ! ? 。！？ (a line break alone does not end one)."
    ),
    "zh": (
        '检查类型：一个检查写作 {"kind": 名称, "params": {...}}。"x?" 表示可选；'
        "计数参数 min/max/exact：只给 exact，或给 min 和/或 max。词数：每个汉字/日文字符算一个词，"
        "每个拉丁单词算一个；字符数：所有非空白字符；句子以 . ! ? 。！？ 结束（仅换行不算句末）。"
    ),
}


def describe_kinds(language: str = "en") -> str:
    """A compact catalogue of the kinds (one line each) to paste into an LLM prompt; 'en' or 'zh'."""
    if language not in _CATALOGUE_HEAD:
        raise ValueError(f"language must be 'en' or 'zh', got {language!r}")
    lines = [_CATALOGUE_HEAD[language]]
    for name in sorted(KINDS):
        kind = KINDS[name]
        meaning = kind.description if language == "en" else kind.description_zh
        lines.append(f"- {name}({_signature(kind.params_model)}): {meaning}")
    return "\n".join(lines)
