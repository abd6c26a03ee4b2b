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
from trace_builder.verify.units import CJK_CHAR

Instruction = tuple[str, dict[str, Any]]

# IFEval's constrained_response options, verbatim: any other set of options has no counterpart.
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
# The languages IFEval's response_language names: for any other code its instruction raises.
IFEVAL_LANGUAGES = frozenset(
    "en es pt ar hi fr ru de ja it bn uk th ur ta te bg ko pl he fa vi ne sw kn mr gu pa ml fi".split()
)
# IFEval reads a keyword as a regular expression: one holding these means something else there.
_REGEX_SPECIALS = frozenset(".^$*+?{}[]\\|()")
# IFEval cuts a paragraph's first word at these (and lower-cases it): a first word holding one never matches.
_FIRST_WORD_CUTS = frozenset(".,?!'\"")


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
    """IFEval instructions that only take a minimum (of at least 1: IFEval draws a random one for 0)."""

    def translate(params: dict[str, Any]) -> list[Instruction] | None:
        if params.get("max") is not None or params.get("exact") is not None or params.get(param, 1) < 1:
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


def _literal_keywords(params: dict[str, Any], keywords: list[str]) -> bool:
    """IFEval matches keywords in any case and as regular expressions: a case-sensitive spec, or
    a keyword such as "C++" or "e.g.", it cannot state."""
    return not params.get("case_sensitive") and not any(_REGEX_SPECIALS & set(keyword) for keyword in keywords)


def _keyword_frequency(params: dict[str, Any]) -> list[Instruction] | None:
    bounds = _relations(params, "frequency", "relation")
    if not bounds or not _literal_keywords(params, [params["keyword"]]):
        return None
    return [("keywords:frequency", {"keyword": params["keyword"], **b}) for b in bounds]


def _letter_frequency(params: dict[str, Any]) -> list[Instruction] | None:
    # IFEval takes an ASCII letter only (it draws a random one for any other).
    if params.get("case_sensitive") or not ("a" <= params["letter"].lower() <= "z"):
        return None
    bounds = _relations(params, "let_frequency", "let_relation")
    return [("keywords:letter_frequency", {"letter": params["letter"], **b}) for b in bounds] if bounds else None


def _keywords(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("require", "all") != "all" or not _literal_keywords(params, params["keywords"]):
        return None
    return [("keywords:existence", {"keywords": list(params["keywords"])})]


def _forbidden(params: dict[str, Any]) -> list[Instruction] | None:
    # IFEval forbids whole words (\b): a spec forbidding the keyword inside longer words has no counterpart.
    if params.get("whole_word") is False or not _literal_keywords(params, params["keywords"]):
        return None
    return [("keywords:forbidden_words", {"forbidden_words": list(params["keywords"])})]


def _paragraphs(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("separator") != "divider" or params.get("exact") is None:
        return None
    return [("length_constraints:number_paragraphs", {"num_paragraphs": params["exact"]})]


def _first_word(params: dict[str, Any]) -> list[Instruction] | None:
    word = params["first_word"].strip()
    readable = not (_FIRST_WORD_CUTS & set(word)) and len(word.split()) == 1 and not CJK_CHAR.search(word)
    if params.get("paragraphs") is None or not readable:
        return None  # IFEval needs the count, and reads one Latin word, cut at punctuation
    kwargs = {
        "num_paragraphs": params["paragraphs"],
        "nth_paragraph": params["nth"],
        "first_word": word,
    }
    return [("length_constraints:nth_paragraph_first_word", kwargs)]


def _sections(params: dict[str, Any]) -> list[Instruction] | None:
    if params.get("min") is None or params.get("max") is not None:
        return None  # IFEval counts "at least" sections: an exact count or a maximum has no counterpart
    return [
        ("detectable_format:multiple_sections", {"section_spliter": params["marker"], "num_sections": params["min"]})
    ]


def _options(params: dict[str, Any]) -> list[Instruction] | None:
    # IFEval's check passes a response that contains an option: "nothing but the option" has no counterpart.
    if tuple(params["options"]) != CONSTRAINED_OPTIONS or params.get("exact"):
        return None
    return [("detectable_format:constrained_response", {})]


def _title(params: dict[str, Any]) -> list[Instruction] | None:
    lengths = ("exact_length", "min_length", "max_length")
    if params.get("style", "<<>>") != "<<>>" or any(params.get(key) is not None for key in lengths):
        return None
    return [("detectable_format:title", {})]


def _ends_with(params: dict[str, Any]) -> list[Instruction] | None:
    return None if params.get("case_sensitive") else [("startend:end_checker", {"end_phrase": params["phrase"]})]


def _postscript(params: dict[str, Any]) -> list[Instruction] | None:
    return [("detectable_content:postscript", {"postscript_marker": params.get("marker", "P.S.")})]


def _language(params: dict[str, Any]) -> list[Instruction] | None:
    if params["language"] not in IFEVAL_LANGUAGES:
        return None
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
