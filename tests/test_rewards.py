"""Rewards from a row's own checks (TRL's reward-function form), the LLM judge's reward, and the
prompts export that RL frameworks read (ours and open-instruct's IFEval verifier layout)."""

from __future__ import annotations

import ast
import asyncio
import json
from functools import partial

import pytest

from tests.conftest import write_config
from tests.test_cli import cli
from trace_builder.config import BackendConfig
from trace_builder.report.export import export
from trace_builder.rewards import GROUND_TRUTH, JudgeReward, answer_text, constraint_reward, repeats_prompt
from trace_builder.run.store import read_parquet_dir
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond
from trace_builder.train.data import grpo_records
from trace_builder.verify import validate_spec
from trace_builder.verify.ifeval import ifeval_ground_truth, ifeval_instructions


def _spec(kind: str, **params) -> str:
    return json.dumps({"kind": kind, "params": params})


def _row(checks: list[str | None], prompt: str = "Describe the sea for a child.") -> dict:
    return {
        "id": "r1",
        "language": "en",
        "description": "Describe the sea.",
        "input": "NULL",
        "constraints": [f"constraint {i + 1}" for i in range(len(checks))],
        "dimensions": ["numerical"] * len(checks),
        "checks": checks,
        "prompt": prompt,
    }


def _rewards(row: dict, completions: list, **kwargs) -> list:
    record = grpo_records([row], None)[0]
    n = len(completions)
    return constraint_reward(
        [record["prompt"]] * n,
        completions,
        **{GROUND_TRUTH: [record[GROUND_TRUTH]] * n},
        completion_ids=[[]] * n,  # what TRL passes besides: ignored
        trainer_state=None,
        **kwargs,
    )


ROW = _row([_spec("word_count", max=5), _spec("keyword_include", keywords=["waves"]), None])


def test_the_reward_is_the_share_of_checkable_constraints_met():
    answers = ["Waves roll in.", "Blue water is everywhere here today.", "The waves are big here today."]
    assert _rewards(ROW, answers) == [1.0, 0.0, 0.5]  # at most 5 words; mentions waves
    assert _rewards(ROW, answers, mode="all") == [1.0, 0.0, 0.0]


def test_completions_as_messages_and_thinking_sections():
    messages = [[{"role": "assistant", "content": "<think>long musing about many things</think>Waves roll in."}]]
    assert _rewards(ROW, messages) == [1.0]
    assert answer_text("<think>x</think>\n answer ") == "answer"


def test_empty_or_prompt_repeating_answers_earn_nothing_and_rows_without_checks_none():
    row = _row([_spec("keyword_include", keywords=["sea"])], prompt="Describe the sea for a child in simple words.")
    assert _rewards(row, ["", "   ", "Describe the sea for a child in simple words."]) == [0.0, 0.0, 0.0]
    assert _rewards(row, ["The sea is big and blue."]) == [1.0]
    assert repeats_prompt("Describe the sea for a child in simple words, please.", row["prompt"])
    assert not repeats_prompt("The sea is big and blue, and a child loves it.", row["prompt"])
    assert _rewards(_row([None, None]), ["anything"]) == [None]


def test_a_partial_with_a_mode_is_what_trl_is_given():
    reward = partial(constraint_reward, mode="all")
    record = grpo_records([ROW], "You are helpful.")[0]
    assert record["prompt"][0] == {"role": "system", "content": "You are helpful."}
    assert reward([record["prompt"]], ["Waves."], **{GROUND_TRUTH: [record[GROUND_TRUTH]]}) == [1.0]
    with pytest.raises(ValueError, match="mode"):
        constraint_reward([], [], mode="most", **{GROUND_TRUTH: []})


@pytest.fixture(scope="module")
def built_run(tmp_path_factory):
    """A run built against the scripted server: final rows carry each constraint's check."""
    root = tmp_path_factory.mktemp("rl")
    with ScriptedServer(respond) as server:
        config = write_config(root / "c.yaml", server.base_url, limit=24)
        done = cli("run", "--config", config, "--out", str(root / "run"), timeout=300)
        assert done.returncode == 0, done.stderr
        yield root / "run", server


def test_a_rows_own_full_marks_answer_out_earns_an_empty_one(built_run):
    run_dir, _ = built_run
    rows = read_parquet_dir(run_dir / "final" / "sft").to_dict("records")
    checkable = [r for r in rows if any(c for c in r["checks"])]
    assert len(checkable) >= 5
    better = 0
    for row in checkable:
        own, empty = _rewards(row, [row["response"], ""])
        better += own > empty
    assert better >= 0.9 * len(checkable), (better, len(checkable))


def test_the_judge_reward_scores_the_constraints_without_a_check(built_run):
    run_dir, server = built_run
    rows = read_parquet_dir(run_dir / "final" / "sft").to_dict("records")
    unchecked = [r for r in rows if not all(r["checks"])][:4]
    records = grpo_records(unchecked, None)
    judge = JudgeReward(BackendConfig(kind="openai", model="scripted", base_urls=[server.base_url]))

    async def ask():
        return await judge(
            [r["prompt"] for r in records],
            [row["response"] for row in unchecked],
            **{GROUND_TRUTH: [r[GROUND_TRUTH] for r in records]},
        )

    rewards = asyncio.run(ask())
    assert len(rewards) == len(unchecked) and all(r is not None and 0.0 <= r <= 1.0 for r in rewards)
    every_check = grpo_records([_row([_spec("word_count", max=5)])], None)[0]
    assert asyncio.run(judge([every_check["prompt"]], ["x"], **{GROUND_TRUTH: [every_check[GROUND_TRUTH]]})) == [None]


def test_the_grpo_export_is_read_by_our_reward_and_by_open_instructs_layout(built_run, tmp_path):
    run_dir, _ = built_run
    dest = tmp_path / "grpo.jsonl"
    written = export(run_dir, "grpo", dest, split="sft")
    lines = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    assert written == {str(dest): len(lines)} and lines
    for line in lines:
        assert line["prompt"] == line["messages"] and line["prompt"][-1]["role"] == "user"
        assert {"language", "description", "input", "constraints"} <= set(line[GROUND_TRUTH])
    mapped = [line for line in lines if line["dataset"] == "ifeval"]
    assert mapped, "no exported row has a constraint IFEval can state"
    for line in mapped:
        # open-instruct's IFEvalVerifier: literal_eval, the first item, json.loads
        truth = json.loads(ast.literal_eval(line["ground_truth"])[0])
        assert len(truth["instruction_id"]) == len(truth["kwargs"]) >= 1
    scored = constraint_reward(
        [line["prompt"] for line in lines],
        ["A plain answer."] * len(lines),
        **{GROUND_TRUTH: [json.dumps(line[GROUND_TRUTH]) for line in lines]},  # as JSON text, too
    )
    assert len(scored) == len(lines)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            ("word_count", {"exact": 5}),
            [
                ("length_constraints:number_words", {"relation": "at least", "num_words": 5}),
                ("length_constraints:number_words", {"relation": "less than", "num_words": 6}),
            ],
        ),
        (
            ("word_count", {"max": 50}),
            [("length_constraints:number_words", {"relation": "less than", "num_words": 51})],
        ),
        (("keyword_include", {"keywords": ["sea"]}), [("keywords:existence", {"keywords": ["sea"]})]),
        (("keyword_include", {"keywords": ["sea", "sky"], "require": "any"}), None),
        (
            ("paragraph_count", {"exact": 3, "separator": "divider"}),
            [("length_constraints:number_paragraphs", {"num_paragraphs": 3})],
        ),
        (("paragraph_count", {"exact": 3}), None),  # blank-line paragraphs: IFEval splits on *** only
        (
            ("answer_from_options", {"options": ["My answer is yes.", "My answer is no.", "My answer is maybe."]}),
            [("detectable_format:constrained_response", {})],
        ),
        (("title", {}), [("detectable_format:title", {})]),
        (("title", {"max_length": 10}), None),
        (("all_lowercase", {}), [("change_case:english_lowercase", {})]),
        (("markdown_table", {}), None),
        (
            ("letter_frequency", {"letter": "q", "min": 2}),
            [("keywords:letter_frequency", {"letter": "q", "let_relation": "at least", "let_frequency": 2})],
        ),
    ],
)
def test_specs_translate_to_ifeval_where_it_can_state_them(spec, expected):
    kind, params = spec
    assert ifeval_instructions(validate_spec({"kind": kind, "params": params})) == expected


def test_a_rows_ifeval_ground_truth_covers_the_constraints_ifeval_can_state():
    truth = ifeval_ground_truth([_spec("no_commas"), None, _spec("markdown_table"), _spec("postscript", marker="P.S.")])
    assert truth == {
        "instruction_id": ["punctuation:no_comma", "detectable_content:postscript"],
        "kwargs": [{}, {"postscript_marker": "P.S."}],
    }
    assert ifeval_ground_truth([None, _spec("markdown_table")]) is None
