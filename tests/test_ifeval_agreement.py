"""scripts/ifeval_agreement.py without IFEval's reference: its corpus, its exclusions and its missing-reference exit."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from trace_builder.verify import units, validate_spec
from trace_builder.verify.ifeval import TRANSLATIONS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ifeval_agreement.py"


@pytest.fixture(scope="module")
def agreement() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("ifeval_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ifeval_agreement"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stand_in(agreement: types.ModuleType):
    """A reference whose counts are ours: enough to build the corpus, which only places thresholds."""
    util = types.SimpleNamespace(count_sentences=units.count_sentences, count_words=units.count_words)
    return agreement.Reference(instructions={}, util=util, punkt="stand-in", langdetect=None)


def test_a_missing_reference_exits_with_one_line_naming_the_install(agreement, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "nltk", None)  # as if not installed, wherever the test runs
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert agreement.main(["--reference", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "not importable" in error and agreement.INSTALL in error


def test_the_corpus_is_large_seeded_and_covers_every_translated_kind(agreement, stand_in):
    corpus = agreement.build_corpus(stand_in, seed=19)
    assert len(corpus) >= 2000
    assert {case.kind for case in corpus} == set(TRANSLATIONS)
    assert agreement.build_corpus(stand_in, seed=19) == corpus
    assert agreement.build_corpus(stand_in, seed=20) != corpus
    assert all(validate_spec({"kind": case.kind, "params": case.params}) for case in corpus)


def test_exclusions_name_translated_kinds_only(agreement):
    assert set(agreement.DELIBERATE) <= set(TRANSLATIONS)
    assert all(kind in TRANSLATIONS for kind, _ in agreement.ISSUE_CATEGORIES.values())


def test_punkt_tables_are_written_in_nltks_tab_format(agreement, tmp_path):
    folder = tmp_path / "english"
    agreement.write_punkt_tab(str(folder), {"dr", "u.s"}, {("##number##", "abreast")}, {"the"}, {"the": 6})
    assert (folder / "abbrev_types.txt").read_text() == "dr\nu.s"
    assert (folder / "collocations.tab").read_text() == "##number##\tabreast"
    assert (folder / "sent_starters.txt").read_text() == "the"
    assert (folder / "ortho_context.tab").read_text() == "the\t6"
