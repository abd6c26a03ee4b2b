"""IFEval's instruction ids for the check specs whose meaning IFEval can state, for tools that read them.

open-instruct's `IFEvalVerifier`, lm-evaluation-harness and IFBench's scorer decide a response
from an `instruction_id_list` and a `kwargs` list. A spec translates into one or two such
instructions (an exact count is "at least N" and "less than N + 1") or into none: a kind with
no IFEval counterpart, or parameters IFEval cannot express (a maximum of headings, a title's
length). Where the kinds differ in detail, docs/checks.md says how.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from trace_builder.verify.registry import CheckSpec, validate_spec

Instruction = tuple[str, dict[str, Any]]

# IFEval's constrained_response options, verbatim: any other set of options has no counterpart.
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _relations(params: dict[str, Any], count_key: str, relation_key: str) -> list[dict[str, Any]] | None:
    """Count bounds as IFEval relations: min -> at least, max -> less than max + 1, exact -> both."""
    low = params.get("exact", params.get("min"))
    high = params.get("exact", params.get("max"))
    bounds = []
    if low is not None and low > 0:
        bounds.append({relation_key: "at least", count_key: low})
    if high is not None:
        bounds.append({relation_key: "less than", count_key: high + 1})
    return bounds or None


def _counted(instruction_id: str, count_key: str, relation_key: str = "relation", **fixed: Any):
    def translate(params: dict[str, Any]) -> list[Instruction] | None:
        bounds = _relations(params, count_key, relation_key)
        return [(instruction_id, {**fixed, **bound}) for bound in bounds] if bounds else None

    return translate


def _exact(instruction_id: str, count_key: str):
    """IFEval instructions that only take an exact count."""

    def translate(params: dict[str, Any]) -> list[Instruction] | None:
        exact = params.get("exact")
        return [(instruction_id, {count_key: exact})] if exact is not None else None

    return translate


def _at_least(instruction_id: str, count_key: str, param: str = "min"):
    """IFEval instructions that only take a minimum."""

    def translate(params: dict[str, Any]) -> list[Instruction] | None:
        if params.get("max") is not None or params.get("exact") is not None:
            return None
        return [(instruction_id, {count_key: params.get(param, 1)})]

    return translate


def _plain(instruction_id: str, **required: Any):
    """IFEval instructions without arguments, matching only when the spec's parameters are `required`."""

    def translate(params: dict[str, Any]) -> list[Instruction] | None:
        if any(params.get(key, value) != value for key, value in required.items()):
            return None
        return [(instruction_id, {})]

    return translate


def _keyword_frequency(params: dict[str, Any]) -> list[Instruction] | None:
    bounds = _relations(params, "frequency", "relation")
    return [("keywords:frequency", {"keyword": params["keyword"], **b}) for b in bounds] if bounds else None


def _letter_frequency(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("case_sensitive"):
        return None
    bounds = _relations(params, "let_frequency", "let_relation")
    return [("keywords:letter_frequency", {"letter": params["letter"], **b}) for b in bounds] if bounds else None


def _keywords(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("require", "all") != "all":
        return None
    return [("keywords:existence", {"keywords": list(params["keywords"])})]


def _forbidden(params: dict[str, Any]) -> list[Instruction] | None:
    return [("keywords:forbidden_words", {"forbidden_words": list(params["keywords"])})]


def _paragraphs(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("separator") != "divider" or params.get("exact") is None:
        return None
    return [("length_constraints:number_paragraphs", {"num_paragraphs": params["exact"]})]


def _first_word(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("paragraphs") is None:
        return None
    kwargs = {
        "num_paragraphs": params["paragraphs"],
        "nth_paragraph": params["nth"],
        "first_word": params["first_word"],
    }
    return [("length_constraints:nth_paragraph_first_word", kwargs)]


def _sections(params: dict[str, Any]) -> list[Instruction] | None:
    low = params.get("exact", params.get("min"))
    if low is None or (params.get("max") is not None and params.get("exact") is None):
        return None  # IFEval counts "at least" sections
    return [("detectable_format:multiple_sections", {"section_spliter": params["marker"], "num_sections": low})]


def _options(params: dict[str, Any]) -> list[Instruction] | None:
    return [("detectable_format:constrained_response", {})] if tuple(params["options"]) == CONSTRAINED_OPTIONS else None


def _title(params: dict[str, Any]) -> list[Instruction] | None:
    lengths = ("exact_length", "min_length", "max_length")
    if params.get("style", "<<>>") != "<<>>" or any(params.get(key) is not None for key in lengths):
        return None
    return [("detectable_format:title", {})]


def _ends_with(params: dict[str, Any]) -> list[Instruction] | None:
    return [("startend:end_checker", {"end_phrase": params["phrase"]})]


def _postscript(params: dict[str, Any]) -> list[Instruction] | None:
    return [("detectable_content:postscript", {"postscript_marker": params.get("marker", "P.S.")})]


def _language(params: dict[str, Any]) -> list[Instruction] | None:
    return [("language:response_language", {"language": params["language"]})]


# kind -> the IFEval instructions its spec states, or None where its parameters have no counterpart.
TRANSLATIONS: dict[str, Callable[[dict[str, Any]], list[Instruction] | None]] = {
    "keyword_include": _keywords,
    "keyword_exclude": _forbidden,
    "keyword_frequency": _keyword_frequency,
    "letter_frequency": _letter_frequency,
    "word_count": _counted("length_constraints:number_words", "num_words"),
    "sentence_count": _counted("length_constraints:number_sentences", "num_sentences"),
    "paragraph_count": _paragraphs,
    "paragraph_first_word": _first_word,
    "response_language": _language,
    "json_valid": _plain("detectable_format:json_format", required_keys=None),
    "bullet_list_items": _exact("detectable_format:number_bullet_lists", "num_bullets"),
    "highlight_count": _at_least("detectable_format:number_highlighted_sections", "num_highlights"),
    "section_count": _sections,
    "placeholders": _at_least("detectable_content:number_placeholders", "num_placeholders", param="min_count"),
    "postscript": _postscript,
    "title": _title,
    "answer_from_options": _options,
    "separated_responses": _plain("combination:two_responses", separator="******", count=2),
    "ends_with": _ends_with,
    "wrapped_in_quotes": _plain("startend:quotation"),
    "all_lowercase": _plain("change_case:english_lowercase"),
    "all_uppercase": _plain("change_case:english_capital"),
    "capital_word_count": _counted("change_case:capital_word_frequency", "capital_frequency", "capital_relation"),
    # IFEval forbids ASCII commas only; "all" forbids the CJK forms too, which English text lacks.
    "no_commas": _plain("punctuation:no_comma"),
}


def ifeval_instructions(spec: CheckSpec) -> list[Instruction] | None:
    """The IFEval instructions that state `spec`, or None where IFEval has none."""
    translate = TRANSLATIONS.get(spec.kind)
    if translate is None:
        return None
    return translate({key: value for key, value in spec.params.items() if value is not None})


def ifeval_ground_truth(checks: Sequence[str | None] | None) -> dict[str, list] | None:
    """IFEval's `instruction_id` and `kwargs` lists for a row's check specs (JSON, None where a
    constraint has none), over the constraints IFEval can state; None where it can state none."""
    ids: list[str] = []
    kwargs: list[dict[str, Any]] = []
    for check in checks if checks is not None else []:
        spec = validate_spec(json.loads(check)) if check else None
        for instruction_id, arguments in (ifeval_instructions(spec) if spec else None) or []:
            ids.append(instruction_id)
            kwargs.append(arguments)
    return {"instruction_id": ids, "kwargs": kwargs} if ids else None
