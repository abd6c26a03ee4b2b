"""The scripted LLM (trace_builder.testing.scripted), called directly with request bodies of the pipeline's shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trace_builder.llm.structured import schema_violation
from trace_builder.records import build_user_prompt
from trace_builder.testing.scripted import ScriptedResponder, keyword_for, lenient_respond, mark, respond
from trace_builder.verify import KINDS, run_check, validate_spec


def validated(text: str, schema: dict) -> dict:
    answer = json.loads(text)
    assert schema_violation(answer, schema) is None
    return answer


# -- request bodies of the pipeline's shapes ----------------------------------------------------
CHECK_SPEC = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": sorted(KINDS)},
        "params": {"type": "object", "additionalProperties": True},
    },
    "required": ["kind", "params"],
    "additionalProperties": False,
}
DIMENSION_IDS = ["theme", "exclusion", "inclusion", "numerical", "tone_style", "output_format"]


def _closed(properties: dict, **extra) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


def _slot(dimension: str, pin: str = "enum") -> dict:
    pinned = {"type": "string", "enum": [dimension]} if pin == "enum" else {"const": dimension, "type": "string"}
    return _closed(
        {
            "dimension": pinned,
            "text": {"type": "string", "minLength": 1},
            "check": {"anyOf": [{"$ref": "#/$defs/CheckSpec"}, {"type": "null"}]},
        }
    )


def _slots(dimensions: list[str], pin: str = "enum") -> dict:
    return _closed({str(i): _slot(d, pin) for i, d in enumerate(dimensions, start=1)})


def structure_schema(dimensions: list[str], pin: str = "enum") -> dict:
    return _closed(
        {
            "description": {"type": "string", "minLength": 1},
            "constraints": _slots(dimensions, pin),
            "input": {"type": "string"},
        },
        **{"$defs": {"CheckSpec": CHECK_SPEC}},
    )


def quality_schema(dimensions: list[str], nullable: bool = False) -> dict:
    problem = _closed(
        {
            "kind": {"type": "string", "enum": ["redundant", "incomplete", "contradictory"]},
            "constraint": {"type": "integer", "minimum": 1},
            "explanation": {"type": "string"},
        }
    )
    repaired = {"anyOf": [_slots(dimensions), {"type": "null"}]} if nullable else _slots(dimensions)
    return _closed(
        {
            "problems": {"type": "array", "items": problem, "maxItems": 20},
            "verdict": {"type": "string", "enum": ["pass", "repair", "reject"]},
            "repaired_constraints": repaired,
        },
        **{"$defs": {"CheckSpec": CHECK_SPEC}},
    )


def judge_schema(count: int) -> dict:
    score = _closed(
        {
            "index": {"type": "integer"},
            "reason": {"type": "string"},
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
        }
    )
    return _closed({"scores": {"type": "array", "items": score, "minItems": count, "maxItems": count}})


def perturb_schema(low: int, high: int) -> dict:
    item = _closed(
        {
            "text": {"type": "string", "minLength": 1},
            "dimension": {"type": "string", "enum": DIMENSION_IDS},
            "check": {"anyOf": [{"$ref": "#/$defs/CheckSpec"}, {"type": "null"}]},
        }
    )
    return _closed(
        {
            "constraints": {"type": "array", "items": item, "minItems": low, "maxItems": high},
            "explanation": {"type": "string"},
        },
        **{"$defs": {"CheckSpec": CHECK_SPEC}},
    )


def body(user: str, schema: dict | None = None, seed: int | None = None, system: str = "Any system prompt.") -> dict:
    request: dict[str, Any] = {
        "model": "scripted",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    if schema is not None:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
    if seed is not None:
        request["seed"] = seed
    return request


def numbered(items: list[tuple[str, str]]) -> str:
    return "\n".join(f"{i}. [{d}] {t}" for i, (d, t) in enumerate(items, start=1))


KEYWORD_TEXT = "Mention the keyword 'kw0123abcd' at least once."
BANNED_TEXT = "Never use the word 'banned89abcdef'."
X1 = [("inclusion", KEYWORD_TEXT), ("exclusion", BANNED_TEXT), ("theme", "Stay on the topic of tides.")]


def _meets(response: str, text: str, check: dict | None) -> bool:
    """What the hybrid judge decides with the consistent script: the check when there is one, else the mark."""
    if check is not None:
        return run_check(validate_spec(check), response).passed
    return mark(text) in response


# -- expand ----------------------------------------------------------------------------------------
def test_rewrite_is_deterministic_and_follows_the_message():
    one = respond("expand.rewrite", body("Any wording at all: seed A"))
    assert one == respond("expand.rewrite", body("Any wording at all: seed A"))
    assert one != respond("expand.rewrite", body("Other wording: seed B"))


@pytest.mark.parametrize("pin", ["enum", "const"])
def test_structure_answers_one_constraint_per_slot_with_its_dimension(pin):
    planned = ["inclusion", "exclusion", "numerical", "theme", "tone_style"]
    schema = structure_schema(planned, pin)
    answer = validated(respond("expand.structure", body("whatever the rewrite said", schema)), schema)
    assert list(answer["constraints"]) == ["1", "2", "3", "4", "5"]
    assert [c["dimension"] for c in answer["constraints"].values()] == planned
    kinds = [c["check"] and c["check"]["kind"] for c in answer["constraints"].values()]
    assert kinds == ["keyword_include", "keyword_exclude", "word_count", None, None]
    for item in answer["constraints"].values():
        assert item["check"] is None or validate_spec(item["check"]) is not None
    assert answer["input"] == "NULL" and answer["description"]
    other = json.loads(respond("expand.structure", body("another rewrite", schema)))
    assert other["description"] != answer["description"]  # different seeds give different instructions


def test_structure_leaves_checks_out_when_the_schema_cannot_hold_them():
    schema = structure_schema(["inclusion"])
    schema["properties"]["constraints"]["properties"]["1"]["properties"]["check"] = {"type": "null"}
    answer = validated(respond("expand.structure", body("x", schema)), schema)
    assert answer["constraints"]["1"]["check"] is None


def test_structure_refuses_a_schema_without_slots():
    schema = _closed(
        {"description": {"type": "string"}, "constraints": {"type": "array", "items": {}}, "input": {"type": "string"}}
    )
    with pytest.raises(ValueError, match="slots"):
        respond("expand.structure", body("x", schema))


@pytest.mark.parametrize("nullable", [False, True])
def test_quality_rejects_about_one_in_eleven_and_passes_the_rest(nullable):
    planned = ["inclusion", "theme"]
    schema = quality_schema(planned, nullable)
    verdicts = []
    for i in range(220):
        user = (
            f"Description: task {i}\n"
            + numbered([("inclusion", KEYWORD_TEXT), ("theme", f"Rule {i}.")])
            + "\nInput: NULL"
        )
        text = respond("expand.quality", body(user, schema))
        assert text == respond("expand.quality", body(user, schema))
        answer = validated(text, schema)
        verdicts.append(answer["verdict"])
        assert answer["verdict"] == "pass" or answer["problems"]
        if nullable:
            assert answer["repaired_constraints"] is None
        else:  # nothing repaired: the constraints as they are
            assert answer["repaired_constraints"]["2"]["text"] == f"Rule {i}."
    assert set(verdicts) == {"pass", "reject"}
    assert 5 <= verdicts.count("reject") <= 45


def test_quality_tolerates_a_list_of_repaired_constraints():
    schema = _closed(
        {
            "problems": {"type": "array"},
            "verdict": {"type": "string"},
            "repaired_constraints": {"type": "array", "items": {}},
        }
    )
    assert json.loads(respond("expand.quality", body("1. [theme] x", schema)))["repaired_constraints"] == []


# -- answers and judges ----------------------------------------------------------------------------
def test_answer_meets_every_constraint_of_a_trace_prompt():
    constraints = [text for _, text in X1]
    prompt = build_user_prompt("Describe the sea.", constraints, "1. not a constraint\n2. nor this")
    answer = respond("respond.answer", body(prompt, seed=1))
    for text in constraints:
        assert mark(text) in answer
    assert keyword_for(KEYWORD_TEXT) in answer and "banned" not in answer
    assert mark("not a constraint") not in answer  # the # Inputs: block holds no constraints
    assert respond("perturb.answer", body(prompt)) == respond("eval.answer", body(prompt))


def _judge_user(graded: list[str], response: str, wording: int) -> str:
    listing = "\n".join(f"{i}. {t}" for i, t in enumerate(graded, start=1))
    if wording == 0:
        return f"Task description: d\nConstraints to grade:\n{listing}\n\nResponse:\n<<<\n{response}\n>>>\nGrade them."
    # Reworded, with the whole TRACE prompt (its own numbered lines) ahead of the graded list.
    trace = build_user_prompt("d", [t for _, t in X1])
    return f"Instruction as the user saw it:\n{trace}\nScore only these:\n{listing}\nAnswer under review <<<{response}>>> end"


@pytest.mark.parametrize("tag", ["respond.judge", "perturb.judge_rejected", "perturb.judge", "eval.judge"])
@pytest.mark.parametrize("wording", [0, 1])
def test_judge_scores_the_last_min_items_numbered_lines_by_their_marks(tag, wording):
    graded = [BANNED_TEXT, "Stay on the topic of tides."]
    response = f"intro\n{mark(graded[1])}\n1. a numbered line inside the response"
    schema = judge_schema(2)
    answer = validated(respond(tag, body(_judge_user(graded, response, wording), schema)), schema)
    assert [s["score"] for s in answer["scores"]] == [2, 10]
    assert [s["index"] for s in answer["scores"]] == [1, 2]
    lenient = validated(lenient_respond(tag, body(_judge_user(graded, response, wording), schema)), schema)
    assert [s["score"] for s in lenient["scores"]] == [10, 10]


def test_judge_and_answer_agree_through_a_whole_prompt():
    texts = [text for _, text in X1]
    response = respond("respond.answer", body(build_user_prompt("d", texts)))
    schema = judge_schema(3)
    answer = validated(respond("respond.judge", body(_judge_user(texts, response, 0), schema)), schema)
    assert [s["score"] for s in answer["scores"]] == [10, 10, 10]


def test_worse_drops_a_mark_uses_banned_words_and_runs_long():
    texts = [text for _, text in X1]
    prompt = build_user_prompt("Describe the sea.", texts)
    good = respond("respond.answer", body(prompt))
    worse = respond("perturb.worse", body(f"Any wording\n{prompt}\nGood one:\n<<<\n{good}\n>>>\nDo worse."))
    assert mark(texts[0]) not in worse and keyword_for(KEYWORD_TEXT) not in worse
    assert mark(texts[1]) in worse and mark(texts[2]) in worse
    assert "banned89abcdef" in worse and len(worse.split()) > 300


# -- perturb ---------------------------------------------------------------------------------------
def _perturb_user(items: list[tuple[str, str]], response: str, operation: str, wording: str = "Operation:") -> str:
    return (
        f"Description: Describe the sea.\nConstraints:\n{numbered(items)}\nInput: NULL\n<<<\n{response}\n>>>\n"
        f"{wording} {operation.upper()}.\nChange them."
    )


@pytest.mark.parametrize("wording", ["Operation:", "操作："])
@pytest.mark.parametrize(
    ("operation", "low", "high", "count"), [("add", 4, 5, 4), ("delete", 1, 2, 2), ("revise", 3, 3, 3)]
)
def test_perturb_does_what_the_prompt_names_and_y1_fails_x2(operation, low, high, count, wording):
    y1 = respond("respond.answer", body(build_user_prompt("Describe the sea.", [t for _, t in X1])))
    schema = perturb_schema(low, high)
    answer = validated(respond("perturb.rewrite", body(_perturb_user(X1, y1, operation, wording), schema)), schema)
    x2 = answer["constraints"]
    assert len(x2) == count and operation in answer["explanation"]
    if operation == "add":
        assert x2[:3] == [{"text": t, "dimension": d, "check": x2[i]["check"]} for i, (d, t) in enumerate(X1)]
        assert x2[3]["dimension"] == "inclusion" and x2[3]["check"]["kind"] == "keyword_include"
    else:
        assert x2[0]["text"] == KEYWORD_TEXT + " Revised." and x2[0]["check"] is None
        assert [c["text"] for c in x2[1:]] == [t for _, t in X1[1:count]]
    for item in x2:
        assert item["check"] is None or validate_spec(item["check"]) is not None
    assert not all(_meets(y1, c["text"], c["check"]) for c in x2)  # y1 violates x2
    y2 = respond("perturb.answer", body(build_user_prompt("Describe the sea.", [c["text"] for c in x2])))
    assert all(_meets(y2, c["text"], c["check"]) for c in x2)  # y2 follows x2


# -- seeds -----------------------------------------------------------------------------------------
def test_seed_synthesis_gives_ten_instructions_per_request():
    schema = _closed({"instructions": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 20}})
    one = validated(respond("seeds.synthesize", body("round 1", schema)), schema)["instructions"]
    two = validated(respond("seeds.synthesize", body("round 2", schema)), schema)["instructions"]
    assert len(one) == 10 and not set(one) & set(two)


def test_an_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="no script"):
        respond("nobody.knows", body("x"))


# -- the realism knob ------------------------------------------------------------------------------
def test_mark_rate_decides_each_constraint_by_text_and_seed():
    texts = [f"Follow rule number {i}." for i in range(200)]
    prompt = build_user_prompt("Describe the sea.", texts)
    responder = ScriptedResponder(mark_rate=0.7)
    first = responder("respond.answer", body(prompt, seed=1))
    assert first == responder("respond.answer", body(prompt, seed=1))  # the same request, the same answer
    shares = [
        sum(mark(t) in responder("respond.answer", body(prompt, seed=s)) for t in texts) / len(texts) for s in range(5)
    ]
    assert all(0.55 < share < 0.85 for share in shares)
    assert first != responder("respond.answer", body(prompt, seed=2))
    assert ScriptedResponder(mark_rate=1.0)("respond.answer", body(prompt, seed=3)) == respond(
        "respond.answer", body(prompt, seed=3)
    )
    assert "<ok:" not in ScriptedResponder(mark_rate=0.0)("respond.answer", body(prompt, seed=3))


def test_a_request_re_asked_with_another_seed_can_succeed():
    texts = [text for _, text in X1]
    prompt = build_user_prompt("Describe the sea.", texts)
    responder = ScriptedResponder(mark_rate=0.5)
    met = [all(mark(t) in responder("respond.answer", body(prompt, seed=s)) for t in texts) for s in range(64)]
    assert any(met) and not all(met)
    # a keyword constraint's keyword comes and goes with its mark
    for s in range(16):
        answer = responder("respond.answer", body(prompt, seed=s))
        assert (mark(KEYWORD_TEXT) in answer) == (keyword_for(KEYWORD_TEXT) in answer)


def test_structure_fits_a_schema_as_pydantic_writes_it():
    """$defs, $ref, const and anyOf-with-null, as strict_schema emits them for a model with slots."""
    from typing import Literal

    from pydantic import BaseModel, Field, create_model

    from trace_builder.llm.structured import strict_schema

    class Check(BaseModel):
        kind: Literal[tuple(KINDS)]  # type: ignore[valid-type]
        params: dict[str, Any]

    planned = ["numerical", "inclusion", "theme"]
    slots = {
        str(i): (
            create_model(
                f"Slot{i}", dimension=(Literal[d], ...), text=(str, Field(min_length=1)), check=(Check | None, ...)
            ),
            ...,
        )
        for i, d in enumerate(planned, start=1)
    }
    model = create_model(
        "Structured", description=(str, ...), constraints=(create_model("Slots", **slots), ...), input=(str, ...)
    )
    schema = strict_schema(model)
    text = respond("expand.structure", body("some rewrite", schema))
    parsed = model.model_validate_json(text)
    assert [getattr(parsed.constraints, k).dimension for k in ("1", "2", "3")] == planned
    validated(text, schema)


# -- model-like behaviour ------------------------------------------------------------------------
def test_model_like_answers_fail_more_often_as_the_count_grows():
    model = ScriptedResponder.model_like(off_check_rate=0.0, refuse_rate=0.0)

    def full_marks_rate(count: int) -> float:
        texts = [f"Follow the rule #{i}." for i in range(count)]
        prompt = build_user_prompt("Describe the sea.", texts)
        answers = [model("respond.answer", body(prompt, seed=s)) for s in range(300)]
        return sum(all(mark(t) in a for t in texts) for a in answers) / len(answers)

    one, five, fifteen = full_marks_rate(1), full_marks_rate(5), full_marks_rate(15)
    assert one > 0.8 and five < 0.6 and fifteen < 0.1 and one > five > fifteen


def test_model_like_refusals_are_the_same_whatever_the_seed():
    from trace_builder.testing.scripted import Refused

    model = ScriptedResponder.model_like(refuse_rate=0.3)
    prompts = [build_user_prompt(f"Describe sea number {i}.", ["Be brief."]) for i in range(60)]
    refused = set()
    for prompt in prompts:
        outcomes = set()
        for seed in range(3):
            try:
                model("respond.answer", body(prompt, seed=seed))
                outcomes.add("answered")
            except Refused:
                outcomes.add("refused")
                refused.add(prompt)
        assert len(outcomes) == 1
    assert 5 < len(refused) < 35


def test_model_like_lists_are_off_by_one_and_numbers_out_of_bounds_sometimes():
    model = ScriptedResponder.model_like(miscount_rate=0.3, out_of_bounds_rate=0.3)
    schema = judge_schema(3)
    user = _judge_user([t for _, t in X1], "no marks here", 0)
    answers = [json.loads(model("respond.judge", body(user, schema, seed=s))) for s in range(100)]
    sizes = {len(a["scores"]) for a in answers}
    assert sizes == {2, 3, 4}
    assert any(s["score"] > 10 for a in answers for s in a["scores"])
    broken = sum(schema_violation(a, schema) is not None for a in answers)
    assert 30 < broken < 75  # the rest fit: a re-asked question (another seed) can succeed


def test_model_like_prose_can_carry_a_mark_but_fail_its_check():
    model = ScriptedResponder.model_like(mark_rate=1.0, off_check_rate=1.0, refuse_rate=0.0)
    prompt = build_user_prompt("Describe the sea.", [t for _, t in X1])
    answer = model("respond.answer", body(prompt, seed=1))
    assert all(mark(text) in answer for _, text in X1)
    assert keyword_for(KEYWORD_TEXT) not in answer and "banned89abcdef" in answer


def test_a_refusal_is_an_http_400_from_the_server():
    import openai

    from trace_builder.testing.devserver import ScriptedServer

    with ScriptedServer(ScriptedResponder.model_like(refuse_rate=1.0)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="content management policy"):
            client.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": build_user_prompt("Describe the sea.", ["Be brief."])}],
                extra_headers={"X-Trace-Build-Task": "respond.answer"},
            )


def test_the_server_records_when_each_answer_kept_it_busy():
    import time
    import urllib.request

    import openai

    from trace_builder.testing.devserver import ScriptedServer

    with ScriptedServer(respond, latency_s=0.05, record_busy=True) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        before = time.time()
        for _ in range(2):
            client.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": build_user_prompt("Describe the sea.", ["Be brief."])}],
                extra_headers={"X-Trace-Build-Task": "respond.answer"},
            )
        with urllib.request.urlopen(server.base_url + "/_busy", timeout=10) as reply:
            busy = json.loads(reply.read())["busy"]
    assert [task for _, _, task in busy] == ["respond.answer", "respond.answer"]
    assert all(before <= began and ended - began >= 0.05 for began, ended, _ in busy)
    assert busy[0][1] <= busy[1][0]  # one after the other
    with ScriptedServer(respond, latency_s=0.01) as server:  # off by default: it grows with every request
        openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": build_user_prompt("Describe the sea.", ["Be brief."])}],
            extra_headers={"X-Trace-Build-Task": "respond.answer"},
        )
        with urllib.request.urlopen(server.base_url + "/_busy", timeout=10) as reply:
            assert json.loads(reply.read())["busy"] == []
