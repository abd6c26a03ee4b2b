"""Property tests for the counters and for checkers on arbitrary text (hypothesis)."""

from __future__ import annotations

import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trace_builder.verify import KINDS, run_check, units, validate_spec
from trace_builder.verify.loose import loose_variants

FAST = settings(max_examples=150, deadline=None)

latin_words = st.text(string.ascii_letters, min_size=1, max_size=10)
cjk_chars = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
cjk_text = st.text(cjk_chars | st.sampled_from(" \n\t\u3000"), max_size=60)
any_text = st.text(max_size=200)

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "cf", "fig", "approx"}
plain_words = st.text(string.ascii_lowercase, min_size=2, max_size=8).filter(lambda w: w not in _ABBREVIATIONS)


@st.composite
def english_sentences(draw: st.DrawFn) -> str:
    words = draw(st.lists(plain_words, min_size=1, max_size=8))
    words[0] = words[0].capitalize()
    return " ".join(words) + draw(st.sampled_from([".", "!", "?", "...", "?!"]))


@st.composite
def chinese_sentences(draw: st.DrawFn) -> str:
    return draw(st.text(cjk_chars, min_size=1, max_size=15)) + draw(st.sampled_from(["。", "！", "？", "……"]))


sentences = english_sentences() | chinese_sentences()


@FAST
@given(st.lists(latin_words, max_size=30), st.sampled_from([" ", "\n", "  ", "\t", " \n "]))
def test_word_count_of_joined_words_is_their_number(words: list[str], separator: str) -> None:
    assert units.count_words(separator.join(words)) == len(words)


@FAST
@given(cjk_text)
def test_cjk_text_counts_one_word_and_one_char_per_ideograph(value: str) -> None:
    ideographs = sum(1 for char in value if not char.isspace())
    assert units.count_words(value) == ideographs
    assert units.count_chars(value) == len("".join(value.split()))
    assert units.count_chars(value, include_whitespace=True) == len(value)


@FAST
@given(any_text, any_text)
def test_word_count_adds_across_whitespace(left: str, right: str) -> None:
    assert units.count_words(left + " " + right) == units.count_words(left) + units.count_words(right)


@FAST
@given(st.text(st.sampled_from(list("ab1.,'-_ 你好カ한\n")) | st.characters(), max_size=100))
def test_fast_word_count_agrees_with_the_word_list(value: str) -> None:
    assert units.count_words(value) == len(units.words(value))


@FAST
@given(any_text, any_text)
def test_char_count_adds(left: str, right: str) -> None:
    assert units.count_chars(left + right) == units.count_chars(left) + units.count_chars(right)


@FAST
@given(st.lists(sentences, min_size=1, max_size=8), st.sampled_from([" ", "\n", ""]))
def test_sentence_count_of_joined_sentences_is_their_number(parts: list[str], separator: str) -> None:
    # An English sentence needs a space (or a line break) before the next one; Chinese does not.
    assume(separator or all(not part[0].isascii() for part in parts[1:]))
    assert units.count_sentences(separator.join(parts)) == len(parts)


@FAST
@given(st.lists(sentences, max_size=6), sentences)
def test_adding_a_sentence_adds_one(parts: list[str], extra: str) -> None:
    body = " ".join(parts)
    assert units.count_sentences((body + " " + extra).strip()) == units.count_sentences(body) + 1


@FAST
@given(st.lists(st.lists(sentences, min_size=1, max_size=3).map(" ".join), max_size=6))
def test_paragraph_count_of_blank_line_joined_blocks(blocks: list[str]) -> None:
    assert len(units.paragraphs("\n\n".join(blocks))) == len(blocks)
    assert len(units.paragraphs("\n \n\n".join(blocks))) == len(blocks)
    assert len(units.paragraphs("\n***\n".join(blocks), separator="divider")) == len(blocks)


@FAST
@given(st.lists(st.lists(latin_words, min_size=1, max_size=5).map(" ".join), max_size=12))
def test_list_item_counts(items: list[str]) -> None:
    numbered = "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    bullets = "\n".join(f"- {item}" for item in items)
    assert len(units.numbered_items(numbered)) == len(items)
    assert len(units.bullet_items(bullets)) == len(items)
    assert units.bullet_items(numbered) == []
    assert units.numbered_items(bullets) == []


@FAST
@given(any_text)
def test_loose_variants_are_distinct_non_empty_and_not_the_response(response: str) -> None:
    variants = loose_variants(response)
    texts = [variant for _, variant in variants]
    assert response not in texts
    assert len(set(texts)) == len(texts)
    assert all(variant.strip() for variant in texts)
    assert len(variants) <= 7


# One valid spec per kind, to run every checker on arbitrary text.
SAMPLE_PARAMS: dict[str, dict] = {
    "word_count": {"min": 3},
    "char_count": {"max": 50},
    "sentence_count": {"exact": 2},
    "paragraph_count": {"min": 1, "separator": "divider"},
    "sentence_length": {"max_words": 5},
    "keyword_include": {"keywords": ["a", "你"]},
    "keyword_exclude": {"keywords": ["the"]},
    "keyword_frequency": {"keyword": "x y", "exact": 1},
    "json_valid": {"required_keys": ["a"]},
    "markdown_table": {"min_rows": 1},
    "heading_count": {"min": 1, "level": 2},
    "heading_levels": {"min_levels": 2, "no_skipped_levels": True},
    "numbered_list_items": {"min": 1},
    "bullet_list_items": {"max": 2},
    "list_item_length": {"max": 3, "unit": "chars"},
    "code_block": {"language": "python"},
    "section_count": {"marker": "Section", "min": 1},
    "placeholders": {},
    "title": {"style": "any", "max_length": 5},
    "postscript": {"marker": "P.P.S."},
    "numeric_citations": {"min_count": 2},
    "response_language": {"language": "en"},
    "all_lowercase": {},
    "all_uppercase": {},
    "capital_word_count": {"min": 1},
    "starts_with": {"phrase": "Dear"},
    "ends_with": {"phrase": "谢谢"},
    "ends_with_question": {},
    "no_commas": {},
    "wrapped_in_quotes": {},
    "bold_count": {"min": 1},
    "highlight_count": {"exact": 1},
    "emoji_present": {},
    "emoji_absent": {},
    "letter_frequency": {"letter": "a", "max": 3},
    "separated_responses": {"count": 2},
    "paragraph_first_word": {"first_word": "ab", "nth": 2},
    "answer_from_options": {"options": ["a", "你好"]},
}


def test_sample_params_cover_every_kind() -> None:
    assert set(SAMPLE_PARAMS) == set(KINDS)


markdownish = st.text(
    st.sampled_from(list('ab 你好\n#*-|`[]<>《》.,，。!?"“”0123456789😀P.S:{}')) | st.characters(), max_size=150
)


@settings(max_examples=40, deadline=None)
@given(markdownish, st.sampled_from(["strict", "loose"]))
def test_every_checker_decides_any_text_without_raising(response: str, mode: str) -> None:
    for kind, params in SAMPLE_PARAMS.items():
        spec = validate_spec({"kind": kind, "params": params})
        assert spec is not None, kind
        verdict = run_check(spec, response, mode)
        assert isinstance(verdict.passed, bool)
        assert isinstance(verdict.detail, str) and verdict.detail


@settings(max_examples=40, deadline=None)
@given(markdownish)
def test_loose_never_fails_what_strict_passes(response: str) -> None:
    for kind, params in SAMPLE_PARAMS.items():
        spec = validate_spec({"kind": kind, "params": params})
        assert spec is not None
        if run_check(spec, response, "strict").passed:
            assert run_check(spec, response, "loose").passed
