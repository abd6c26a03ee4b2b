"""Loading the official TRACE file and our eval Parquet into EvalItems."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_eval_support import OFFICIAL, official_row, write_jsonl
from trace_builder.errors import UserError
from trace_builder.evaluate.loading import load_items
from trace_builder.records import FINAL_SCHEMAS, SYSTEM_PROMPT, build_user_prompt
from trace_builder.seeds import detect_language
from trace_builder.taxonomy import DIMENSIONS

needs_official = pytest.mark.skipif(not Path(OFFICIAL).is_file(), reason="official TRACE file not present")


@needs_official
def test_every_official_prompt_is_rebuilt_byte_identically():
    rows = [json.loads(line) for line in open(OFFICIAL, encoding="utf-8")]
    items = load_items(OFFICIAL)
    assert len(items) == len(rows) == 1042
    for row, item in zip(rows, items):
        assert item.id == row["id"]
        assert item.prompt.encode("utf-8") == row["messages"][1]["content"].encode("utf-8")
        assert item.messages() == row["messages"]
        assert item.constraint_count == row["constraints_num"]


@needs_official
def test_official_counts_match_the_paper():
    items = load_items(OFFICIAL)
    assert sum(i.constraint_count == 1 for i in items) == 200
    assert sum(i.constraint_count > 1 for i in items) == 842
    dims = Counter(d for i in items for d in i.dimensions)
    for dimension in DIMENSIONS:  # the eval-set counts of TRACE.md §2
        assert dims[dimension.id] == dimension.eval_count, dimension.id
    assert dims["unknown"] == 2  # 输入格式约束 and '·' fall outside the 26, and are kept
    assert {i.language for i in items} == {"zh", "en"}
    # The layout's numbers are stripped for the judge ('1. 3个景点' -> '3个景点'), the text's own kept.
    assert not any(re.match(r"\d+\s*[.、]\s", c) for i in items for c in i.constraints)
    assert "3个必去的海滩景点；" in {c for i in items for c in i.constraints}


def test_language_detection():
    assert detect_language("Write a poem about the sea.") == "en"
    assert detect_language("用Python写一个快速排序函数，并解释 `partition` 的作用") == "zh"
    assert detect_language("Translate the word 猫 into English, please, with an example sentence.") == "en"


def test_official_layout_with_input_and_unknown_label(tmp_path):
    row = official_row(
        "x", "Summarise.", ["Be brief；", "Use bullets"], ["数值约束", "输入格式约束"], input_text="a\nb"
    )
    items = load_items(write_jsonl(tmp_path / "o.jsonl", [row]))
    assert items[0].prompt == "Summarise.\n1. Be brief；\n2. Use bullets\n# Inputs:\na\nb\n"
    assert items[0].dimensions == ("numerical", "unknown")
    assert items[0].dimension_labels == ("数值约束", "输入格式约束")
    assert items[0].constraints == ("Be brief；", "Use bullets")


def _our_table(**overrides) -> pa.Table:
    rows = [
        {
            "id": "e1",
            "seed_id": "s1",
            "language": "en",
            "description": "Write a haiku.",
            "constraints": ["Mention snow", "Use three lines"],
            "dimensions": ["inclusion", "numerical"],
            "input": "NULL",
            "constraint_count": 2,
            "prompt": "ignored",
            "response": "snow falls",
        }
    ]
    rows[0].update(overrides)
    return pa.Table.from_pylist(rows, schema=FINAL_SCHEMAS["eval"])


def test_our_eval_parquet_file_and_run_folder(tmp_path):
    folder = tmp_path / "run" / "final" / "eval"
    folder.mkdir(parents=True)
    pq.write_table(_our_table(), folder / "part-00000.parquet")
    for path in (folder / "part-00000.parquet", folder, tmp_path / "run"):
        (item,) = load_items(path)
        assert item.source == "ours"
        assert item.prompt == build_user_prompt("Write a haiku.", ["Mention snow", "Use three lines"])
        assert item.system == SYSTEM_PROMPT
        assert item.dimensions == ("inclusion", "numerical")
        assert item.reference == "snow falls"


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_items(tmp_path / "missing.jsonl")
    (tmp_path / "other.jsonl").write_text('{"instruction": "hi"}\n')
    with pytest.raises(UserError, match="not in the official TRACE layout"):
        load_items(tmp_path / "other.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        load_items(tmp_path / "broken.jsonl")
    pq.write_table(pa.table({"id": ["1"], "text": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(UserError, match="lacks column") as excinfo:
        load_items(tmp_path / "wrong.parquet")
    assert "\n" not in str(excinfo.value)  # one line, naming the fix
    assert "language, description, constraints, dimensions, input" in str(excinfo.value)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="neither"):
        load_items(tmp_path / "data.csv")
    row = official_row("x", "d", ["a", "b"], ["数值约束"])  # one label for two constraints
    with pytest.raises(UserError, match="levels2"):
        load_items(write_jsonl(tmp_path / "misaligned.jsonl", [row]))


@needs_official
def test_sample_is_stratified_by_constraint_count_and_stable():
    items = load_items(OFFICIAL, sample=50)
    assert len(items) == 50
    counts = Counter(i.constraint_count for i in items)
    # 200 of 1,042 official items have one constraint: about 10 of 50
    assert 9 <= counts[1] <= 11 and sum(n for c, n in counts.items() if c > 1) >= 39
    assert [i.id for i in items] == [i.id for i in load_items(OFFICIAL, sample=50)]
    order = [i.id for i in load_items(OFFICIAL)]
    assert [i.id for i in items] == sorted((i.id for i in items), key=order.index)
