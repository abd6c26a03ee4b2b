"""Tests for the built-in seed set, seed file loading, dedup and balanced selection."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trace_builder.errors import UserError
from trace_builder.records import NULL_INPUT, content_id
from trace_builder.seeds import (
    Seed,
    dedupe_seeds,
    detect_language,
    load_builtin_seeds,
    load_seed_file,
    seed_id,
    select_seeds,
)

ROWS = [
    {"text": "Write a short story about a lighthouse keeper.", "domain": "literature"},
    {"text": "介绍一下长城的历史。", "domain": "history"},
    {"text": "Summarize the following paragraph.", "input": "Bees dance to share where food is.", "domain": "biology"},
]


# ---------------------------------------------------------------- built-in set


@pytest.fixture(scope="module")
def builtin() -> list[Seed]:
    return load_builtin_seeds()


def test_builtin_size_domains_languages(builtin):
    assert len(builtin) >= 240
    domains = Counter(s.domain for s in builtin)
    assert len(domains) >= 24
    assert min(domains.values()) >= 6  # every domain has several seeds
    languages = Counter(s.language for s in builtin)
    assert set(languages) == {"en", "zh"}
    assert languages["en"] >= 0.4 * len(builtin) and languages["zh"] >= 0.4 * len(builtin)
    # Every domain has seeds in both languages.
    for domain in domains:
        assert {s.language for s in builtin if s.domain == domain} == {"en", "zh"}, domain


def test_builtin_ids_unique_and_no_duplicates(builtin):
    assert len({s.id for s in builtin}) == len(builtin)
    assert dedupe_seeds(builtin) == builtin
    assert len({" ".join(s.text.lower().split()) for s in builtin}) == len(builtin)
    for s in builtin:
        assert s.id == seed_id(s.text, s.input)
        assert s.source == "builtin"


def test_builtin_language_labels_match_text(builtin):
    for s in builtin:
        assert detect_language(s.text) == s.language, s.text


def test_builtin_inputs_are_separate_and_about_a_fifth(builtin):
    with_input = [s for s in builtin if s.input != NULL_INPUT]
    assert 0.15 <= len(with_input) / len(builtin) <= 0.3
    for s in with_input:
        assert s.input.strip() and s.input not in s.text
    # Both languages carry inputs.
    assert {s.language for s in with_input} == {"en", "zh"}


def test_builtin_file_is_clean_jsonl():
    path = Path(__file__).resolve().parents[1] / "trace_builder" / "data" / "seeds.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        assert set(row) <= {"text", "language", "domain", "input"}, number
        assert row["language"] in ("en", "zh") and row["domain"] and row["text"].strip() == row["text"]


# ---------------------------------------------------------------- ids, dedup, language


def test_seed_id_normalises_whitespace():
    assert seed_id("Write  a poem.\n") == seed_id(" Write a poem.")
    assert seed_id("Write a poem.") == content_id("Write a poem.", NULL_INPUT)
    assert seed_id("Summarize:", "a  b") == seed_id("Summarize:", "a b")
    assert seed_id("Summarize:", "a b") != seed_id("Summarize:", "a c")
    assert seed_id("Write a poem.", "") == seed_id("Write a poem.")


def test_dedupe_keeps_first_in_order():
    def make(text, source, input_text=NULL_INPUT):
        return Seed(seed_id(text, input_text), text, "en", "x", input_text, source)

    seeds = [
        make("Write a poem.", "a"),
        make("Explain tides.", "b"),
        make("Write  a poem. ", "c"),
        make("Explain tides.", "d", "Tides are caused by the moon."),
        make("Explain tides.", "e"),
    ]
    assert [s.source for s in dedupe_seeds(seeds)] == ["a", "b", "d"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("介绍一下长城的历史。", "zh"),
        ("用 Python 写一个快速排序函数。", "zh"),
        ("Write a haiku.", "en"),
        ("Translate 'hello' into 中文.", "en"),
        ("12345 !!!", "en"),
    ],
)
def test_detect_language(text, expected):
    assert detect_language(text) == expected


# ---------------------------------------------------------------- user files


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows) -> Path:
    columns = sorted({k for r in rows for k in r})
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows) -> Path:
    columns = sorted({k for r in rows for k in r})
    pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), path)
    return path


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet, "json": write_json}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_load_every_format(tmp_path, suffix):
    path = WRITERS[suffix](tmp_path / f"seeds.{suffix}", ROWS)
    seeds = load_seed_file(path)
    assert [s.text for s in seeds] == [r["text"] for r in ROWS]
    assert [s.language for s in seeds] == ["en", "zh", "en"]
    assert [s.domain for s in seeds] == ["literature", "history", "biology"]
    assert [s.input for s in seeds] == [NULL_INPUT, NULL_INPUT, "Bees dance to share where food is."]
    assert all(s.source == str(path) for s in seeds)
    assert seeds[2].id == seed_id(ROWS[2]["text"], ROWS[2]["input"])


def test_ndjson_suffix_and_uppercase(tmp_path):
    assert len(load_seed_file(write_jsonl(tmp_path / "s.NDJSON", ROWS))) == 3


def test_column_selection_and_language_override(tmp_path):
    rows = [
        {"prompt": "Explain rainbows.", "material": "Light bends in droplets.", "id": 1},
        {"prompt": "解释彩虹的成因。", "material": None, "id": 2},
    ]
    path = write_parquet(tmp_path / "custom.parquet", rows)
    seeds = load_seed_file(path, text_column="prompt", input_column="material")
    assert [(s.text, s.input, s.language, s.domain) for s in seeds] == [
        ("Explain rainbows.", "Light bends in droplets.", "en", "general"),
        ("解释彩虹的成因。", NULL_INPUT, "zh", "general"),
    ]
    forced = load_seed_file(path, text_column="prompt", language="de")
    assert {s.language for s in forced} == {"de"}


def test_language_column_is_used_and_normalised(tmp_path):
    rows = [
        {"text": "Bonjour tout le monde, écris un poème.", "language": "fr-FR"},
        {"text": "Write a poem.", "language": ""},
    ]
    seeds = load_seed_file(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [s.language for s in seeds] == ["fr", "en"]


def test_blank_texts_skipped_and_trace_null_input(tmp_path):
    rows = [
        {"text": "  ", "input": "x"},
        {"text": None},
        {"text": "Write a limerick.", "input": "NULL"},
        {"text": "\tDescribe autumn.\n", "input": "  "},
    ]
    seeds = load_seed_file(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [(s.text, s.input) for s in seeds] == [("Write a limerick.", NULL_INPUT), ("Describe autumn.", NULL_INPUT)]


def test_csv_with_bom_quoted_newlines_and_commas(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes('\ufefftext,input\n"Summarize, briefly:","line one\nline two"\n'.encode("utf-8"))
    [seed] = load_seed_file(path)
    assert seed.text == "Summarize, briefly:" and seed.input == "line one\nline two"


def test_jsonl_tolerates_blank_lines_crlf_and_line_separator_in_strings(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes('{"text": "A\u2028B"}\r\n\r\n{"text": "Write a poem."}\r\n'.encode("utf-8"))
    assert [s.text for s in load_seed_file(path)] == ["A\u2028B", "Write a poem."]


def test_official_trace_file_loads_with_description_column(tmp_path):
    rows = [
        {"description": "为一首歌曲写一个简短描述", "input": '"Hotel California" — 老鹰乐队。', "constraints": "1. x"}
    ]
    [seed] = load_seed_file(write_jsonl(tmp_path / "t.jsonl", rows), text_column="description")
    assert seed.language == "zh" and seed.input.startswith('"Hotel')


# ---------------------------------------------------------------- errors


def assert_one_line_error(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_seed_file(tmp_path / "nope.jsonl")
    assert_one_line_error(excinfo, "nope.jsonl", "does not exist", "--seeds")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_seed_file(tmp_path)
    assert_one_line_error(excinfo, "is a directory", "--seeds")


@pytest.mark.parametrize("name", ["seeds.txt", "seeds.xlsx", "seeds"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("Write a poem.\n", encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, "unsupported type", ".jsonl", ".csv", ".parquet")


BAD_FILES = {
    "jsonl line not JSON": (
        "s.jsonl",
        '{"text": "ok"}\n\n{"text": broken}\n',
        ("line 3", "not valid JSON", "fix that line"),
    ),
    "jsonl line not an object": (
        "s.jsonl",
        '{"text": "ok"}\n["a", "b"]\n',
        ("line 2", "not an object", "one object per line"),
    ),
    "json not a list": ("s.json", '{"text": "not a list"}', ("s.json", "JSON")),
    "json list of numbers": ("s.json", "[1, 2]", ("s.json", "JSON")),
    "json cut short": ("s.json", "[{", ("s.json", "JSON")),
    "csv row with a stray comma": ("s.csv", "text\nWrite a poem.\nWrite, a, story\n", ("line 3", "quote")),
    "parquet that is not": ("s.parquet", "this is not parquet", ("not a readable Parquet file", "re-export")),
    "not UTF-8": ("s.jsonl", '{"text": "写一首诗"}\n'.encode("gbk"), ("not UTF-8", "re-save")),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_seed_file_is_one_line_naming_the_fix(tmp_path, case):
    name, content, fragments = BAD_FILES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, *fragments)


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_missing_text_column_names_columns_and_flag(tmp_path, suffix):
    path = WRITERS[suffix](tmp_path / f"s.{suffix}", [{"prompt": "Write a poem.", "topic": "sea"}])
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, "no column 'text'", "prompt", "topic", "--seed-column")


def test_missing_input_column(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", ROWS)
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path, input_column="material")
    assert_one_line_error(excinfo, "no input column 'material'", "text", "domain")


@pytest.mark.parametrize(
    "suffix,content", [("jsonl", ""), ("jsonl", "\n\n"), ("json", "[]"), ("csv", ""), ("csv", "text\n")]
)
def test_empty_file(tmp_path, suffix, content):
    path = tmp_path / f"s.{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, "has no rows", "add seed instructions")


def test_empty_parquet(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, "has no rows")


def test_only_blank_texts(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(UserError) as excinfo:
        load_seed_file(path)
    assert_one_line_error(excinfo, "only blank values", "--seed-column")


# ---------------------------------------------------------------- selection


def test_select_small_limit_is_varied(builtin):
    picked = select_seeds(builtin, 4)
    assert len(picked) == 4
    assert Counter(s.language for s in picked) == {"en": 2, "zh": 2}
    assert len({s.domain for s in picked}) == 4


def test_select_is_deterministic_and_seed_dependent(builtin):
    assert select_seeds(builtin, 10, rng_seed=3) == select_seeds(builtin, 10, rng_seed=3)
    assert select_seeds(builtin, 10, rng_seed=3) != select_seeds(builtin, 10, rng_seed=4)
    assert select_seeds(builtin, None) == builtin  # no limit: everything, as given


def test_select_balances_domains(builtin):
    picked = select_seeds(builtin, 62)
    domains = Counter(s.domain for s in picked)
    # Each language covers every domain once before any domain repeats.
    assert set(domains) == {s.domain for s in builtin}
    assert set(domains.values()) == {2}
    assert Counter(s.language for s in picked) == {"en": 31, "zh": 31}


def test_select_prefix_property(builtin):
    # A larger limit extends a smaller one: --limit 8 then --limit 16 reuses the first 8.
    assert select_seeds(builtin, 16)[:8] == select_seeds(builtin, 8)


def test_select_languages_filter(builtin):
    picked = select_seeds(builtin, 20, languages=["zh"])
    assert len(picked) == 20 and {s.language for s in picked} == {"zh"}
    assert len({s.domain for s in picked}) == 20


def test_select_limit_larger_than_pool_and_zero(builtin):
    assert sorted(s.id for s in select_seeds(builtin, 10_000)) == sorted(s.id for s in builtin)
    assert select_seeds(builtin, 0) == []
    with pytest.raises(ValueError):
        select_seeds(builtin, -1)


def test_select_unknown_language_is_user_error(builtin):
    with pytest.raises(UserError) as excinfo:
        select_seeds(builtin, 4, languages=["fr"])
    assert_one_line_error(excinfo, "no seeds in language(s) fr", "en, zh")
