"""Length checks: words, characters, sentences, paragraphs, and per-sentence length."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trace_builder.verify import units
from trace_builder.verify.registry import CountBounds, Params, Verdict, register, require_range, within_bounds


@register(
    "word_count",
    CountBounds,
    ("numerical",),
    "number of words (each CJK character is one word, each Latin word one; punctuation not counted)",
    "词数（每个汉字算一个词，每个拉丁单词算一个；标点不计）",
)
def check_word_count(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(units.count_words(response), "words", **bounds)


class CharCountParams(CountBounds):
    include_whitespace: bool = Field(default=False, description="count spaces and line breaks too")


@register(
    "char_count",
    CharCountParams,
    ("numerical",),
    "number of characters, whitespace excluded unless include_whitespace (Chinese 字数)",
    "字符数（字数），默认不计空白字符；include_whitespace 为 true 时计入空白",
)
def check_char_count(response: str, include_whitespace: bool = False, **bounds: int | None) -> Verdict:
    return within_bounds(units.count_chars(response, include_whitespace), "characters", **bounds)


@register(
    "sentence_count",
    CountBounds,
    ("numerical", "grammar_structure"),
    "number of sentences (end with . ! ? 。！？; a line break alone does not end one)",
    "句子数（以 . ! ? 。！？ 结束；仅换行不算句末）",
)
def check_sentence_count(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(units.count_sentences(response), "sentences", **bounds)


class ParagraphCountParams(CountBounds):
    separator: Literal["blank_line", "divider"] = Field(
        default="blank_line", description="blank lines, or markdown divider lines (***)"
    )


@register(
    "paragraph_count",
    ParagraphCountParams,
    ("numerical", "hierarchical_structure", "template"),
    'number of paragraphs, separated by blank lines or (separator="divider") by *** lines',
    '段落数，以空行分隔；separator="divider" 时以 *** 分隔线分隔',
)
def check_paragraph_count(response: str, separator: str = "blank_line", **bounds: int | None) -> Verdict:
    return within_bounds(len(units.paragraphs(response, separator)), "paragraphs", **bounds)


class SentenceLengthParams(Params):
    min_words: int | None = Field(default=None, ge=1, description="every sentence has at least this many words")
    max_words: int | None = Field(default=None, ge=1, description="every sentence has at most this many words")

    @model_validator(mode="after")
    def _some_bound(self) -> SentenceLengthParams:
        return require_range(self, "min_words", "max_words")


@register(
    "sentence_length",
    SentenceLengthParams,
    ("numerical", "grammar_structure"),
    "every sentence has between min_words and max_words words (CJK characters count as words)",
    "每个句子的词数在 min_words 与 max_words 之间（汉字按字计）",
)
def check_sentence_length(response: str, min_words: int | None = None, max_words: int | None = None) -> Verdict:
    found = units.sentences(response)
    if not found:
        return Verdict(False, "no sentences")
    for index, sentence in enumerate(found, start=1):
        length = units.count_words(sentence)
        if (min_words is not None and length < min_words) or (max_words is not None and length > max_words):
            bound = f"at least {min_words}" if min_words is not None and length < min_words else f"at most {max_words}"
            return Verdict(False, f"sentence {index} has {length} words, expected {bound}: {_clip(sentence)}")
    lengths = [units.count_words(s) for s in found]
    return Verdict(True, f"{len(found)} sentences of {min(lengths)}..{max(lengths)} words")


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
