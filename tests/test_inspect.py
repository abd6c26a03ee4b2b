"""`inspect`: chosen columns, seeded samples, a table by default, JSON lines on request, JSON text decoded once."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from trace_builder.cli import app
from trace_builder.errors import UserError
from trace_builder.report.inspect import cell_text, parse_columns, pick_rows, plain

CHECK = json.dumps({"kind": "keyword_include", "params": {"keywords": ["kw1"]}})


@pytest.fixture
def shard(tmp_path):
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(20)],
            "constraint_count": list(range(20)),
            "constraints": [["Use kw1.", "Be brief."]] * 20,
            "checks": [[CHECK, None]] * 20,
            "judgement": [[{"score": 10, "decided_by": "code"}, {"score": 4, "decided_by": "llm"}]] * 20,
            "quality_problems": ["[]"] * 20,
            "respond_attempts": [1.0, float("nan")] * 10,
            "response": ["a long answer " * 100] * 20,
        }
    )
    path = tmp_path / "part-00000.parquet"
    frame.to_parquet(path)
    return path


def invoke(*args: str):
    result = CliRunner().invoke(app, ["inspect", *args], env={"COLUMNS": "100"})
    return result


def test_values_are_plain_data_and_json_text_is_decoded_once(shard):
    row = pd.read_parquet(shard).iloc[1]
    assert plain(row["checks"]) == [json.loads(CHECK), None]
    assert plain(row["judgement"])[1] == {"score": 4, "decided_by": "llm"}
    assert plain(row["quality_problems"]) == []
    assert plain(row["respond_attempts"]) is None
    assert plain("[not json") == "[not json"
    assert plain(row["constraint_count"]) == 1 and type(plain(row["constraint_count"])) is int


def test_cells_read_as_text():
    assert cell_text(["a", None, {"k": 1}]) == '1. a\n2. null\n3. {"k": 1}'
    assert cell_text("x" * 50, max_chars=10) == "x" * 10 + "... (40 more characters)"
    assert cell_text(None) == ""


def test_columns_and_samples():
    frame = pd.DataFrame({"a": range(50), "b": range(50)})
    assert parse_columns(" b, a ", ["a", "b"]) == ["b", "a"]
    assert parse_columns(None, ["a"]) is None
    with pytest.raises(UserError, match="'c'.*the columns are: a, b"):
        parse_columns("a,c", ["a", "b"])
    first = pick_rows(frame, limit=3, sample=None, seed=0)
    assert list(first["a"]) == [0, 1, 2]
    drawn = pick_rows(frame, limit=3, sample=5, seed=7)
    assert len(drawn) == 5 and list(drawn["a"]) == list(pick_rows(frame, limit=3, sample=5, seed=7)["a"])
    assert list(drawn["a"]) != list(pick_rows(frame, limit=3, sample=5, seed=8)["a"])
    assert len(pick_rows(frame, limit=3, sample=500, seed=0)) == 50


def test_json_lines_on_request(shard):
    result = invoke(str(shard), "--json", "--sample", "4", "--seed", "1", "--columns", "id,checks,judgement")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 4 and set(rows[0]) == {"id", "checks", "judgement"}
    assert rows[0]["checks"][0]["kind"] == "keyword_include"  # an object, not a string holding one
    assert rows[0]["judgement"][0] == {"score": 10, "decided_by": "code"}
    again = invoke(str(shard), "--json", "--sample", "4", "--seed", "1", "--columns", "id")
    assert [json.loads(line)["id"] for line in again.output.splitlines()] == [r["id"] for r in rows]


def test_a_table_by_default(shard):
    few = invoke(str(shard), "--columns", "id,constraint_count,checks", "--limit", "2")
    assert few.exit_code == 0, few.output
    lines = few.output.splitlines()
    assert any(line.split()[:3] == ["id", "constraint_count", "checks"] for line in lines)
    assert '"keyword_include"' in few.output and '\\"' not in few.output  # decoded: no escaped quotes
    assert "2 of 20 rows" in few.output
    many = invoke(str(shard), "--limit", "1")
    assert "row 0 (1 of 1)" in many.output and "(800 more" in many.output  # long text is cut
    assert all(len(line) <= 100 for line in many.output.splitlines())


def test_unknown_column_is_one_clear_error(shard):
    result = invoke(str(shard), "--columns", "id,nope")
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError) and "nope" in str(result.exception)
