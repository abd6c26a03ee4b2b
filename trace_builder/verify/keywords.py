"""Keyword checks: must include, must exclude, how often.

Matching is case-insensitive unless case_sensitive, and whitespace inside a keyword matches
any whitespace. With whole_word (the default) a keyword that starts or ends with a Latin
letter or digit must not be glued to another one there ("cat" is not found in "category");
CJK keywords have no word boundaries, so they match anywhere ("人工智能" in "人工智能技术").
Inclusion and frequency also find the keyword with a plural ending ("cats", "boxes" for
"cat", "box"), as IFEval's substring match does; exclusion forbids the word itself, as
IFEval's whole-word forbidden_words does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from trace_builder.verify.registry import CountBounds, Params, Verdict, register, within_bounds
from trace_builder.verify.units import CJK_CHAR

Keyword = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


def is_spaced_word_char(char: str) -> bool:
    """A letter, digit or underscore of a script written with spaces (where word boundaries exist)."""
    return (char.isalnum() or char == "_") and CJK_CHAR.match(char) is None


# A plural ending that keeps a word the same keyword: "cats", "boxes" ("cat's" needs none, the
# apostrophe already ends the word).
_INFLECTION = re.compile(r"e?s", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _literal_pattern(keyword: str, case_sensitive: bool) -> re.Pattern[str]:
    # Only the literal goes into the regex: word boundaries are tested in Python below,
    # since a lookaround with the CJK-excluding class costs milliseconds to compile per keyword.
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def find_keyword(
    response: str, keyword: str, case_sensitive: bool = False, whole_word: bool = True, inflected: bool = False
) -> list[tuple[int, int]]:
    """Spans where `keyword` occurs, honouring word boundaries for spaced scripts; `inflected`
    also accepts a plural ending glued to it ("cats" for "cat")."""
    stripped = keyword.strip()
    guard_start = whole_word and is_spaced_word_char(stripped[0])
    guard_end = whole_word and is_spaced_word_char(stripped[-1])
    spans = []
    for match in _literal_pattern(keyword, case_sensitive).finditer(response):
        start, end = match.span()
        if guard_start and start > 0 and is_spaced_word_char(response[start - 1]):
            continue
        if guard_end and _glued(response, end):
            ending = _INFLECTION.match(response, end) if inflected else None
            if ending is None or _glued(response, ending.end()):
                continue
            end = ending.end()
        spans.append((start, end))
    return spans


def _glued(response: str, end: int) -> bool:
    """A letter or digit of a spaced script follows position `end`: the word goes on."""
    return end < len(response) and is_spaced_word_char(response[end])


def count_keyword(
    response: str, keyword: str, case_sensitive: bool = False, whole_word: bool = True, inflected: bool = False
) -> int:
    return len(find_keyword(response, keyword, case_sensitive, whole_word, inflected))


class KeywordsParams(Params):
    keywords: list[Keyword] = Field(min_length=1, max_length=50)
    case_sensitive: bool = False
    whole_word: bool = True


class IncludeParams(KeywordsParams):
    require: Literal["all", "any"] = Field(default="all", description="all keywords, or at least one")


@register(
    "keyword_include",
    IncludeParams,
    ("inclusion",),
    'the response contains the keywords (require="all") or at least one of them ("any")',
    '回复包含这些关键词（require="all" 全部包含，"any" 至少一个）',
)
def check_keyword_include(
    response: str, keywords: list[str], require: str = "all", case_sensitive: bool = False, whole_word: bool = True
) -> Verdict:
    found = [k for k in keywords if find_keyword(response, k, case_sensitive, whole_word, inflected=True)]
    missing = [k for k in keywords if k not in found]
    if require == "any":
        if found:
            return Verdict(True, f"found {found!r}")
        return Verdict(False, f"none of {keywords!r} found")
    if missing:
        return Verdict(False, f"missing {missing!r}")
    return Verdict(True, f"all {len(keywords)} keywords found")


@register(
    "keyword_exclude",
    KeywordsParams,
    ("exclusion", "negative_example"),
    "none of the keywords appears in the response",
    "回复中不出现任何这些关键词",
)
def check_keyword_exclude(
    response: str, keywords: list[str], case_sensitive: bool = False, whole_word: bool = True
) -> Verdict:
    present = [k for k in keywords if find_keyword(response, k, case_sensitive, whole_word)]
    if present:
        return Verdict(False, f"forbidden {present!r} present")
    return Verdict(True, f"none of {len(keywords)} forbidden keywords present")


class FrequencyParams(CountBounds):
    keyword: Keyword
    case_sensitive: bool = False
    whole_word: bool = True


@register(
    "keyword_frequency",
    FrequencyParams,
    ("inclusion", "numerical"),
    "how many times the keyword occurs (min/max/exact)",
    "关键词出现的次数（min/max/exact）",
)
def check_keyword_frequency(
    response: str, keyword: str, case_sensitive: bool = False, whole_word: bool = True, **bounds: int | None
) -> Verdict:
    count = count_keyword(response, keyword, case_sensitive, whole_word, inflected=True)
    return within_bounds(count, f"occurrences of {keyword!r}", **bounds)
