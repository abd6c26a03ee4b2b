"""The dataset card: the Hub's front matter, `datasets.load_dataset` on every config, its body and figures."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import datasets
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import write_config
from trace_builder.cli import app
from trace_builder.config import load_config
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.report.card import SPLITS, bar_chart_svg, front_matter, size_category
from trace_builder.run.store import read_parquet_dir


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from trace_builder.testing.devserver import ScriptedServer
    from trace_builder.testing.scripted import respond

    tmp = tmp_path_factory.mktemp("card")
    with ScriptedServer(respond) as server:
        cfg = write_config(tmp / "c.yaml", server.base_url, limit=24, eval_size=4, card="{license: cc-by-4.0}")
        asyncio.run(run_pipeline(load_config(cfg), tmp / "run", list(STAGE_NAMES), console=Console(quiet=True)))
    return tmp / "run"


def test_size_categories_follow_the_hub_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 120_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "100K<n<1M",
        "1M<n<10M",
    ]


def test_front_matter_lists_non_empty_datasets_with_globs():
    config = load_config(profile="trace", backend_kind="openai")
    matter = front_matter(config, {"sft": 10, "dpo": 8, "iopo": 0, "eval": 2}, ["en", "zh"])
    assert matter["license"] == "unknown"  # the documented default
    names = [c["config_name"] for c in matter["configs"]]
    assert names == ["sft", "dpo", "eval"]  # a 0-row file is unreadable: iopo is left out
    eval_entry = matter["configs"][-1]
    assert eval_entry["data_files"] == [{"split": "test", "path": "eval/*.parquet"}]
    assert matter["configs"][0]["default"] is True
    assert matter["size_categories"] == ["n<1K"]


def test_every_run_writes_a_card_with_hub_metadata(finished_run):
    matter, body = split_card((finished_run / "final" / "README.md").read_text(encoding="utf-8"))
    for key in ("license", "language", "task_categories", "size_categories", "pretty_name", "configs"):
        assert key in matter
    assert matter["license"] == "cc-by-4.0"  # from the config's card.license
    assert set(matter["language"]) == {"en", "zh"}
    assert {c["config_name"] for c in matter["configs"]} == set(SPLITS)
    for entry in matter["configs"]:
        assert entry["data_files"][0]["path"] == f"{entry['config_name']}/*.parquet"
    for needle in ("trace-build", "scripted", "config digest", "prompts digest", "builtin", "2411.06208"):
        assert needle in body
    for section in ("## Statistics", "### Constraints per instruction", "### IOPO", "## Known limitations"):
        assert section in body
    for svg in ("constraint_counts_train.svg", "constraint_counts_eval.svg", "type_mix.svg"):
        assert f"figures/{svg}" in body
        ET.parse(finished_run / "final" / "figures" / svg)  # well-formed XML


def test_load_dataset_reads_every_config_from_the_folder(finished_run, tmp_path):
    final = finished_run / "final"
    for name, split in SPLITS.items():
        loaded = datasets.load_dataset(str(final), name, cache_dir=str(tmp_path / "hf"))
        assert list(loaded) == [split]
        assert loaded[split].num_rows == len(read_parquet_dir(final / name)) > 0
    default = datasets.load_dataset(str(final), cache_dir=str(tmp_path / "hf"))
    assert list(default) == ["train"]  # sft, not whichever folder sorts first


def test_card_command_rewrites_the_card(finished_run):
    readme = finished_run / "final" / "README.md"
    readme.write_text("stale", encoding="utf-8")
    result = CliRunner().invoke(app, ["card", "--out", str(finished_run)])
    assert result.exit_code == 0, result.output
    assert readme.read_text(encoding="utf-8").startswith("---\nlicense: cc-by-4.0")


def test_bar_chart_is_standalone_svg():
    svg = bar_chart_svg("a < b", ["1", "2"], {"ours": [0.2, 0.8], "TRACE": [0.5, 0.5]})
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("rect")]) >= 1 + 4 + 2  # background, bars, legend
