"""The registry's contract: spec validation never raises, schemas, catalogue, dimension mapping."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace_builder.verify import (
    DIMENSION_IDS,
    KINDS,
    CheckSpec,
    Verdict,
    check_spec_json_schema,
    describe_kinds,
    kinds_for_dimension,
    run_check,
    validate_spec,
)


def test_registry_has_at_least_twenty_kinds_with_complete_metadata() -> None:
    assert len(KINDS) >= 20
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.dimensions and set(kind.dimensions) <= DIMENSION_IDS
        assert kind.description and "\n" not in kind.description
        assert kind.description_zh and "\n" not in kind.description_zh
        schema = kind.params_json_schema()
        assert schema["type"] == "object"
        json.dumps(schema)  # serialisable as it stands


def test_dimension_ids_are_the_26_of_trace() -> None:
    assert len(DIMENSION_IDS) == 26


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "word_count",
        ["word_count", {"min": 1}],
        42,
        {"params": {"min": 1}},
        {"kind": "no_such_kind", "params": {}},
        {"kind": 3, "params": {}},
        {"kind": "word_count", "params": {}},  # a count needs a bound
        {"kind": "word_count", "params": {"min": "5"}},  # strings are not ints
        {"kind": "word_count", "params": {"min": 5.0}},
        {"kind": "word_count", "params": {"min": True}},
        {"kind": "word_count", "params": {"min": -1}},
        {"kind": "word_count", "params": {"min": 9, "max": 3}},
        {"kind": "word_count", "params": {"exact": 3, "max": 5}},
        {"kind": "word_count", "params": {"minimum": 5}},  # unknown key
        {"kind": "word_count", "params": [5]},
        {"kind": "keyword_include", "params": {"keywords": []}},
        {"kind": "keyword_include", "params": {"keywords": "AI"}},
        {"kind": "keyword_include", "params": {"keywords": ["  "]}},
        {"kind": "keyword_frequency", "params": {"keyword": "AI"}},
        {"kind": "response_language", "params": {"language": "klingon"}},
        {"kind": "title", "params": {"exact_length": 10, "max_length": 12}},
        {"kind": "heading_levels", "params": {}},
        {"kind": "heading_count", "params": {"exact": 1, "level": 7}},
        {"kind": "code_block", "params": {"language": "py thon"}},
        {"kind": "paragraph_count", "params": {"exact": 2, "separator": "tab"}},
        {"kind": "sentence_length", "params": {"min_words": 9, "max_words": 2}},
    ],
)
def test_validate_spec_rejects_invalid(raw: object) -> None:
    assert validate_spec(raw) is None


def test_validate_spec_accepts_and_canonicalises() -> None:
    spec = validate_spec({"kind": "keyword_include", "params": {"keywords": ["AI"]}, "note": "ignored"})
    assert spec == CheckSpec(
        "keyword_include", {"keywords": ["AI"], "case_sensitive": False, "whole_word": True, "require": "all"}
    )
    assert validate_spec({"kind": "all_lowercase"}) == CheckSpec("all_lowercase", {})
    assert validate_spec({"kind": "all_lowercase", "params": None}) == CheckSpec("all_lowercase", {})
    assert validate_spec(CheckSpec("word_count", {"max": 50})) == CheckSpec(
        "word_count", {"min": None, "max": 50, "exact": None}
    )
    # a canonical spec validates to itself
    assert validate_spec(spec) == spec


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)) | st.text(max_size=15) | json_values,
    params=st.dictionaries(
        st.sampled_from(
            [
                "min",
                "max",
                "exact",
                "keywords",
                "keyword",
                "language",
                "marker",
                "phrase",
                "level",
                "min_count",
                "unit",
                "style",
                "exact_length",
                "required_keys",
                "commas",
                "x",
            ]
        ),
        json_values,
        max_size=4,
    )
    | json_values,
)
def test_validate_spec_never_raises_on_junk(kind: object, params: object) -> None:
    spec = validate_spec({"kind": kind, "params": params})
    if spec is not None:
        assert spec.kind in KINDS
        assert validate_spec(spec) == spec


@settings(max_examples=100, deadline=None)
@given(raw=json_values)
def test_validate_spec_never_raises_on_any_json(raw: object) -> None:
    assert validate_spec(raw) is None or isinstance(validate_spec(raw), CheckSpec)


def test_run_check_rejects_bad_mode_and_unvalidated_junk() -> None:
    spec = validate_spec({"kind": "word_count", "params": {"max": 3}})
    assert spec is not None
    with pytest.raises(ValueError, match="mode"):
        run_check(spec, "a b", mode="lenient")
    with pytest.raises(ValueError, match="unknown check kind"):
        run_check(CheckSpec("nope", {}), "a b")
    with pytest.raises(ValueError, match="invalid params"):
        run_check(CheckSpec("word_count", {"max": "three"}), "a b")
    assert run_check(CheckSpec("word_count", {"max": 3}), "a b") == Verdict(True, "2 words, expected at most 3")


def test_json_schema_simple_and_detailed() -> None:
    simple = check_spec_json_schema()
    assert simple["properties"]["kind"]["enum"] == sorted(KINDS)
    assert simple["required"] == ["kind", "params"]
    json.dumps(simple)
    detailed = check_spec_json_schema(detailed=True)
    assert len(detailed["anyOf"]) == len(KINDS)
    consts = {variant["properties"]["kind"]["const"] for variant in detailed["anyOf"]}
    assert consts == set(KINDS)
    json.dumps(detailed)


def test_schemas_accepted_by_xgrammar() -> None:
    xgrammar = pytest.importorskip("xgrammar")
    xgrammar.Grammar.from_json_schema(json.dumps(check_spec_json_schema()))
    xgrammar.Grammar.from_json_schema(json.dumps(check_spec_json_schema(detailed=True)))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_describe_kinds_lists_every_kind_once(language: str) -> None:
    catalogue = describe_kinds(language)
    lines = catalogue.splitlines()
    assert len(lines) == len(KINDS) + 1
    for name in KINDS:
        assert sum(line.startswith(f"- {name}(") for line in lines) == 1
    assert "keyword_frequency(keyword: str," in catalogue  # required params come first


def test_describe_kinds_in_chinese_is_chinese() -> None:
    assert "词数" in describe_kinds("zh")
    assert "词数" not in describe_kinds("en")
    with pytest.raises(ValueError):
        describe_kinds("fr")


def test_kinds_for_dimension() -> None:
    assert "word_count" in kinds_for_dimension("numerical")
    assert "response_language" in kinds_for_dimension("multilingual")
    assert "json_valid" in kinds_for_dimension("output_format")
    assert kinds_for_dimension("no_such_dimension") == []
    assert kinds_for_dimension("value") == []  # values are for the LLM judge
    covered = {dim for kind in KINDS.values() for dim in kind.dimensions}
    for dimension in covered:
        assert kinds_for_dimension(dimension) == sorted(kinds_for_dimension(dimension))


def test_docs_checks_page_names_every_kind() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "checks.md").read_text(encoding="utf-8")
    missing = [name for name in KINDS if f"`{name}`" not in page]
    assert not missing, f"docs/checks.md lacks {missing}"
