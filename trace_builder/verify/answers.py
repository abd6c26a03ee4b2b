"""Answer-shape checks: several responses split by a marker, an answer picked from given options."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from trace_builder.verify.keywords import find_keyword
from trace_builder.verify.registry import Params, Verdict, register

Option = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


class SeparatedParams(Params):
    separator: Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=r"\S")] = Field(
        default="******", description="the marker between responses"
    )
    count: int = Field(default=2, ge=2, le=10, description="exactly this many responses")


def separated_parts(response: str, separator: str) -> list[str] | None:
    """The non-empty parts between separators; None when an empty part sits between two separators.

    An empty part before the first or after the last separator is allowed (a marker at the
    very start or end), as IFEval allows it.
    """
    pieces = response.split(separator)
    parts = []
    for index, piece in enumerate(pieces):
        if piece.strip():
            parts.append(piece.strip())
        elif 0 < index < len(pieces) - 1:
            return None
    return parts


@register(
    "separated_responses",
    SeparatedParams,
    ("output_format", "template"),
    'exactly count different responses separated by the separator (default "******")',
    "恰好 count 个互不相同的回复，彼此以 separator（默认 “******”）分隔",
)
def check_separated_responses(response: str, separator: str = "******", count: int = 2) -> Verdict:
    parts = separated_parts(response, separator)
    if parts is None:
        return Verdict(False, f"an empty response between two {separator!r}")
    if len(parts) != count:
        return Verdict(False, f"{len(parts)} responses separated by {separator!r}, expected {count}")
    if len(set(parts)) != len(parts):
        return Verdict(False, "two of the responses are the same")
    return Verdict(True, f"{count} different responses separated by {separator!r}")


class OptionsParams(Params):
    options: list[Option] = Field(
        min_length=2, max_length=20, description='e.g. ["My answer is yes.", "My answer is no."]'
    )
    exact: bool = Field(default=False, description="the whole response is the option (else: it contains it)")


def options_present(response: str, options: list[str]) -> list[str]:
    """Options found in `response` (whole words, any case), leaving out one found only inside a longer found one."""
    found = [option for option in options if find_keyword(response, option)]
    return [o for o in found if not any(o != other and o.casefold() in other.casefold() for other in found)]


@register(
    "answer_from_options",
    OptionsParams,
    ("output_format", "template"),
    "the response gives exactly one of the options (contains it, or with exact is nothing but it)",
    "回复给出且只给出其中一个选项（包含该选项；exact 为 true 时回复只能是该选项）",
)
def check_answer_from_options(response: str, options: list[str], exact: bool = False) -> Verdict:
    if exact:
        body = response.strip().casefold()
        chosen = [option for option in options if option.strip().casefold() == body]
        if chosen:
            return Verdict(True, f"the response is {chosen[0]!r}")
        return Verdict(False, f"the response {response.strip()[:40]!r} is none of the options")
    found = options_present(response, options)
    if len(found) == 1:
        return Verdict(True, f"gives {found[0]!r}")
    if not found:
        return Verdict(False, "gives none of the options")
    return Verdict(False, f"gives {len(found)} options {found!r}, expected one")
