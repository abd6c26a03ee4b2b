"""Decontamination: seeds and final rows that overlap a known eval set are kept out, and counted."""

from __future__ import annotations

import asyncio
import json
import re

import pandas as pd
import pytest

from tests.conftest import write_config
from trace_builder.config import load_config
from trace_builder.errors import UserError
from trace_builder.pipeline.decontaminate import Decontaminator, EvalSet, file_set, official_set, tokens
from trace_builder.pipeline.filter import mark_filtered
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.resources import official_eval_path
from trace_builder.run.store import StageStore, read_parquet_dir
from trace_builder.seeds import load_builtin_seeds
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond


def _official_items() -> list[dict]:
    return [json.loads(line) for line in official_eval_path().read_text(encoding="utf-8").splitlines()]


def test_the_official_set_ships_with_its_licence():
    assert len(_official_items()) == 1042
    assert "MIT License" in official_eval_path().with_suffix(".LICENSE").read_text()


def test_chinese_counts_characters_and_english_words():
    assert tokens("写一首诗 about the Sea, 1 2 3") == ["写", "一", "首", "诗", "about", "the", "sea"]


def test_every_official_prompt_is_found_and_ordinary_instructions_are_not():
    checker = Decontaminator([official_set()])
    items = _official_items()
    assert all(checker.match(item["messages"][1]["content"]) for item in items)  # copied whole
    assert all(checker.match(item["description"]) for item in items)  # copied as a seed
    # rewritten around a copied description: still the eval item's task
    english = next(i for i in items if i["description"].startswith("Make a delightful blueberry cheesecake"))
    assert checker.match("Please help me. " + english["description"] + " Keep it short.")
    assert not any(checker.first_match([s.text, s.input]) for s in load_builtin_seeds())
    assert checker.match("Write a poem about the sea.") is None and checker.match("写一首关于大海的诗。") is None


def test_a_short_eval_text_matches_only_whole():
    checker = Decontaminator([EvalSet("mine.jsonl", ("剪辑视频", "Say hello to the world"))])
    assert checker.match("剪辑视频") == "mine.jsonl" and checker.match("say hello to the world!") == "mine.jsonl"
    assert checker.match("我想学习剪辑视频的技巧，请给我一个计划") is None


def test_a_user_file_reads_text_columns_and_chat_messages(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"prompt": "Explain the rules of chess to a child in five sentences."}]
    rows += [{"messages": [{"role": "user", "content": "List three uses of baking soda around the house please."}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    found = file_set(path)
    assert found.name == "bench.jsonl" and len(found.texts) == 2
    (tmp_path / "empty.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(UserError, match="no text columns"):
        file_set(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        file_set(tmp_path / "missing.jsonl")


def test_final_rows_that_overlap_are_marked_contaminated():
    item = _official_items()[10]
    rows = pd.DataFrame(
        {
            "status": ["ok", "ok", "failed"],
            "description": [item["description"], "Describe the tides for children.", item["description"]],
            "input": ["NULL", "NULL", "NULL"],
            "prompt": ["a b c", "d e f", "g h i"],
            "response": ["r", "s", "t"],
        }
    )
    marked = mark_filtered(rows, load_config(profile="trace").filter, Decontaminator([official_set()]))
    assert list(marked["filter_status"]) == ["contaminated", "kept", "failed"]
    assert marked["contaminated_by"].iloc[0] == "trace_eval_official.jsonl"


def test_planted_eval_prompts_never_reach_the_server_or_the_data(tmp_path):
    items = _official_items()
    chinese = [i for i in items if re.search("[\u4e00-\u9fff]", i["description"])][:3]
    english = [i for i in items if not re.search("[\u4e00-\u9fff]", i["description"])][:2]
    planted = [i["messages"][1]["content"] for i in chinese + english[:1]] + [english[1]["description"]]
    own = ["Bench mark prompt that a user wants kept out of the data entirely, please."]
    ordinary = [s.text for s in load_builtin_seeds()[:10]]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in ordinary + planted + own))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt": own[0]}) + "\n")

    asked: list[str] = []

    def recording(task: str, body: dict) -> str:
        asked.append(json.dumps(body["messages"], ensure_ascii=False))
        return respond(task, body)

    with ScriptedServer(recording) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=40)
        config = load_config(cfg)
        config.seeds.source = str(seeds)
        config.decontamination.files = [str(bench)]
        asyncio.run(
            run_pipeline(config, tmp_path / "run", ["seeds", "taxonomy", "expand", "respond", "perturb", "filter"])
        )
    kept = read_parquet_dir(tmp_path / "run" / "seeds")
    assert sorted(kept["seed_text"]) == sorted(ordinary)
    for text in planted + own:
        assert not any(text[:30] in request for request in asked)
    manifest = StageStore(tmp_path / "run", "seeds").manifest
    assert manifest["decontaminated"] == {"trace_eval_official.jsonl": 5, "bench.jsonl": 1}
    assert StageStore(tmp_path / "run", "filter").manifest["decontaminated"] == {}


def test_the_index_gives_the_garbage_collector_nothing_to_walk():
    import gc

    gc.collect()
    before = len(gc.get_objects())
    checker = Decontaminator([official_set()])
    gc.collect()  # tuples of ints are untracked once a collection has seen them
    # As tuples of tokens with lists of owners, the official set's n-grams were ~170K tracked objects.
    assert len(gc.get_objects()) - before < 2000
    assert checker.match(_official_items()[0]["messages"][1]["content"]) == official_eval_path().name
