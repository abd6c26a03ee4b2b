"""Surface-pattern checks: letter case, openings and endings, commas, quotes, emphasis, emoji."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

import regex
from pydantic import Field, StringConstraints

from trace_builder.verify import units
from trace_builder.verify.registry import (
    CountBounds,
    MinCountParams,
    NoParams,
    Params,
    Verdict,
    register,
    within_bounds,
)

Phrase = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]


# --- letter case -----------------------------------------------------------------------

# A case rule only means something for text in a cased script (Latin, Cyrillic, Greek, ...).
# Text whose letters are mostly uncased (Chinese, Japanese, Arabic, Hindi, ...) cannot follow
# "write in all lowercase", so the case kinds fail it rather than pass it vacuously.
CASED_MIN_SHARE = 0.5


def cased_share(response: str) -> float | None:
    """Share of the letters that have case (a != A); None when there are no letters."""
    letters = [char for char in response if char.isalpha()]
    if not letters:
        return None
    return sum(1 for char in letters if char.lower() != char.upper()) / len(letters)


def _case_not_applicable(response: str) -> Verdict | None:
    share = cased_share(response)
    if share is None:
        return Verdict(False, "no letters: a case rule does not apply")
    if share < CASED_MIN_SHARE:
        return Verdict(False, f"only {share:.0%} of letters are cased: the text is not in a cased script")
    return None


def _none_in_case(response: str, in_case: Callable[[str], bool], case: str) -> Verdict:
    """No letter of the forbidden case (`in_case`), in a text written in a cased script."""
    count = sum(map(in_case, response))
    if count:
        first = next(char for char in response if in_case(char))
        return Verdict(False, f"{count} {case} letters, first {first!r}")
    return _case_not_applicable(response) or Verdict(True, f"no {case} letters")


@register(
    "all_lowercase",
    NoParams,
    ("text_pattern",),
    "no uppercase letter anywhere; the text must be in a cased script (Chinese-only text fails)",
    "不含任何大写字母；文本须主要使用有大小写之分的文字（纯中文不满足）",
)
def check_all_lowercase(response: str) -> Verdict:
    return _none_in_case(response, str.isupper, "uppercase")


@register(
    "all_uppercase",
    NoParams,
    ("text_pattern",),
    "no lowercase letter anywhere; the text must be in a cased script (Chinese-only text fails)",
    "不含任何小写字母；文本须主要使用有大小写之分的文字（纯中文不满足）",
)
def check_all_uppercase(response: str) -> Verdict:
    return _none_in_case(response, str.islower, "lowercase")


def is_capital_word(word: str) -> bool:
    """All letters uppercase, a possessive or contraction tail aside ("AI's", "DON'T"), as a tokenizer splits it."""
    head = word.replace("’", "'").split("'")[0]
    return head.isupper()


# "U.S.", "U.K.": one word in capitals as a reader (and NLTK's tokenizer) sees it, not "U" and "S".
_DOTTED_LETTERS = re.compile(r"(?<![^\W_])(?:[^\W\d_]\.){2,}")


def capital_words(response: str) -> list[str]:
    """The words of `response` written entirely in capitals, a dotted abbreviation being one word."""
    joined = _DOTTED_LETTERS.sub(lambda match: match.group(0).replace(".", "") + " ", response)
    return [word for word in units.words(joined) if is_capital_word(word)]


@register(
    "capital_word_count",
    CountBounds,
    ("text_pattern", "numerical"),
    'number of words written entirely in capitals (e.g. "NOTE", "AI", "AI\'s"; "I" counts)',
    "全大写单词的数量（如 “NOTE”、“AI”）",
)
def check_capital_word_count(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(len(capital_words(response)), "all-capital words", **bounds)


class LetterFrequencyParams(CountBounds):
    letter: Annotated[str, StringConstraints(min_length=1, max_length=1, pattern=r"^[^\W\d_]$")] = Field(
        description="one letter, e.g. q"
    )
    case_sensitive: bool = False


@register(
    "letter_frequency",
    LetterFrequencyParams,
    ("text_pattern", "numerical"),
    "how many times a letter occurs (min/max/exact), any case unless case_sensitive",
    "某个字母出现的次数（min/max/exact），默认不区分大小写",
)
def check_letter_frequency(response: str, letter: str, case_sensitive: bool = False, **bounds: int | None) -> Verdict:
    count = response.count(letter) if case_sensitive else response.lower().count(letter.lower())
    return within_bounds(count, f"letters {letter!r}", **bounds)


# --- openings and endings --------------------------------------------------------------


class PhraseParams(Params):
    phrase: Phrase
    case_sensitive: bool = False


def _phrase_verdict(where: str, found: str, shown: str, phrase: str, case_sensitive: bool) -> Verdict:
    """`found` (the response's piece as long as the phrase) against the phrase; `shown` is a little more."""
    if (found == phrase) if case_sensitive else (found.casefold() == phrase.casefold()):
        return Verdict(True, f"{where} with {phrase!r}")
    return Verdict(False, f"{where} with {shown!r}, expected {phrase!r}")


@register(
    "starts_with",
    PhraseParams,
    ("template", "text_pattern"),
    "the response (leading whitespace ignored) starts with phrase",
    "回复（忽略开头空白）以 phrase 开头",
)
def check_starts_with(response: str, phrase: str, case_sensitive: bool = False) -> Verdict:
    body, phrase = response.lstrip(), phrase.strip()
    return _phrase_verdict("starts", body[: len(phrase)], body[: len(phrase) + 10], phrase, case_sensitive)


# A closing double quote after the phrase does not hide it ('"... Any questions?"' ends with
# "Any questions?"), as IFEval reads a quoted response; unless the phrase itself ends with one.
_CLOSING_QUOTES_AT_END = '"”'


@register(
    "ends_with",
    PhraseParams,
    ("template", "text_pattern"),
    "the response (trailing whitespace and closing double quotes ignored) ends with phrase",
    "回复（忽略结尾空白和右双引号）以 phrase 结尾",
)
def check_ends_with(response: str, phrase: str, case_sensitive: bool = False) -> Verdict:
    body, phrase = response.rstrip(), phrase.strip()
    if not phrase.endswith(tuple(_CLOSING_QUOTES_AT_END)):
        body = body.rstrip(_CLOSING_QUOTES_AT_END).rstrip()
    return _phrase_verdict("ends", body[-len(phrase) :], body[-(len(phrase) + 10) :], phrase, case_sensitive)


@register(
    "ends_with_question",
    NoParams,
    ("grammar_structure", "text_pattern"),
    "the last non-space character is a question mark (? or ？)",
    "最后一个非空白字符是问号（? 或 ？）",
)
def check_ends_with_question(response: str) -> Verdict:
    body = response.rstrip()
    last = body[-1:] or "nothing"
    return Verdict(last in ("?", "？"), f"ends with {last!r}")


# --- punctuation -----------------------------------------------------------------------

# ASCII ',', full-width '，' (the Chinese comma), ideographic '、' (顿号, the enumeration
# comma: Unicode calls it IDEOGRAPHIC COMMA and Chinese grammar counts it as a comma),
# small and vertical forms, and the Arabic comma.
_ALL_COMMAS = ",，、﹐﹑︐︑،"


class CommaParams(Params):
    commas: Literal["all", "ascii"] = Field(
        default="all", description='"all" = , ， 、 and other comma forms; "ascii" = only ,'
    )


@register(
    "no_commas",
    CommaParams,
    ("text_pattern", "grammar_structure"),
    'no commas: by default neither "," nor Chinese "，" nor "、"; commas="ascii" forbids only ","',
    '不使用逗号：默认 “,”、“，”、“、” 都不允许；commas="ascii" 时只禁止 “,”',
)
def check_no_commas(response: str, commas: str = "all") -> Verdict:
    forbidden = _ALL_COMMAS if commas == "all" else ","
    count = sum(response.count(comma) for comma in forbidden)
    if count:
        first = min((response.index(comma), comma) for comma in forbidden if comma in response)[1]
        return Verdict(False, f"{count} commas, first {first!r}")
    return Verdict(True, "no commas")


_OPENING_QUOTES = ('"', "“")
_CLOSING_QUOTES = ('"', "”")


@register(
    "wrapped_in_quotes",
    NoParams,
    ("text_pattern", "output_format"),
    'the whole response is wrapped in double quotes ("..." or “...”)',
    '整个回复用双引号括起（"..." 或 “...”）',
)
def check_wrapped_in_quotes(response: str) -> Verdict:
    body = response.strip()
    passed = len(body) >= 2 and body[0] in _OPENING_QUOTES and body[-1] in _CLOSING_QUOTES
    return Verdict(passed, f"starts with {body[:1]!r}, ends with {body[-1:]!r}")


# --- emphasis --------------------------------------------------------------------------

_BOLD = re.compile(r"\*\*(?=\S)([^\n]*?\S)\*\*|__(?=\S)([^\n]*?\S)__")
# *x* not part of **x** and not a bullet ("* item"): an opening * followed by a non-space.
# Letters may touch it ("重点是*坚持*"): CommonMark allows intraword * emphasis.
_ITALIC = re.compile(r"(?<!\*)\*(?=[^\s*])([^\n*]*?[^\s*])\*(?!\*)")


@register(
    "bold_count",
    CountBounds,
    ("text_pattern",),
    "number of bold sections **like this** (or __like this__)",
    "加粗片段 **像这样** 的数量",
)
def check_bold_count(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(len(_BOLD.findall(response)), "bold sections", **bounds)


@register(
    "highlight_count",
    CountBounds,
    ("text_pattern",),
    "number of highlighted sections in markdown, *like this* or **like this** (as IFEval counts)",
    "markdown 高亮片段（*像这样* 或 **像这样**）的数量",
)
def check_highlight_count(response: str, **bounds: int | None) -> Verdict:
    count = len(_BOLD.findall(response)) + len(_ITALIC.findall(response))
    return within_bounds(count, "highlighted sections", **bounds)


# --- emoji -----------------------------------------------------------------------------

# One emoji as a reader sees it. A base is a character with default emoji presentation, or an
# emoji-capable pictograph from U+2600 up (☀ ✈ ❤, which models often write without the
# variation selector), or any emoji-capable pictograph followed by U+FE0F (©️ ↔️). Modifiers,
# selectors, keycaps and ZWJ sequences belong to their base; a flag is two regional indicators.
_EMOJI_BASE = (
    r"(?:[\p{Emoji_Presentation}--\p{Regional_Indicator}]"
    r"|[[\p{Emoji}&&\p{Extended_Pictographic}]--[\x00-\u25ff]]"
    r"|[\p{Emoji}&&\p{Extended_Pictographic}]\uFE0F)"
)
_EMOJI = regex.compile(
    rf"\p{{Regional_Indicator}}{{2}}"
    rf"|[0-9#*]\uFE0F?\u20E3"
    rf"|{_EMOJI_BASE}[\uFE0F\p{{Emoji_Modifier}}]*(?:\u200D{_EMOJI_BASE}[\uFE0F\p{{Emoji_Modifier}}]*)*",
    regex.V1,
)


def count_emoji(response: str) -> int:
    return sum(1 for _ in _EMOJI.finditer(response))


@register(
    "emoji_present",
    MinCountParams,
    ("text_pattern", "emotion"),
    "contains at least min_count emoji",
    "至少包含 min_count 个 emoji 表情",
)
def check_emoji_present(response: str, min_count: int = 1) -> Verdict:
    count = count_emoji(response)
    return Verdict(count >= min_count, f"{count} emoji, expected at least {min_count}")


@register(
    "emoji_absent",
    NoParams,
    ("text_pattern", "emotion"),
    "contains no emoji",
    "不包含任何 emoji 表情",
)
def check_emoji_absent(response: str) -> Verdict:
    found = [m.group(0) for m in _EMOJI.finditer(response)]
    if found:
        return Verdict(False, f"{len(found)} emoji, first {found[0]!r}")
    return Verdict(True, "no emoji")
