"""Near-duplicate detection: recall and precision on planted near-duplicates, LSH tuned to the threshold."""

from __future__ import annotations

import random
import sqlite3

import pytest

from trace_builder.config import load_config
from trace_builder.pipeline.dedup import (
    BandIndex,
    NearDuplicates,
    jaccard,
    lsh_index,
    near_duplicates,
    shingles,
    signatures,
)
from trace_builder.pipeline.filter import DECISION_COLUMNS, screen_stage
from trace_builder.run.exits import os_error_line

THRESHOLD = 0.85


def planted(originals: int, seed: int, words: int = 60) -> tuple[list[str], dict[int, int]]:
    """Unrelated random texts, then one edited copy of each (0..8 words replaced), shuffled.

    Returns the texts and copy index -> original index. Replacing k words changes up to 3k
    of the ~58 shingles, so copies span Jaccard ~0.6..1 around the threshold.
    """
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    bases = [[rng.choice(vocab) for _ in range(words)] for _ in range(originals)]
    copies = []
    for index, base in enumerate(bases):
        copy = list(base)
        for _ in range(rng.randint(0, 8)):
            copy[rng.randrange(words)] = rng.choice(vocab)
        copies.append((index, " ".join(copy)))
    rng.shuffle(copies)
    texts = [" ".join(b) for b in bases]
    copy_of = {}
    for index, text in copies:
        copy_of[len(texts)] = index
        texts.append(text)
    return texts, copy_of


def test_recall_and_precision_on_planted_near_duplicates():
    texts, copy_of = planted(originals=600, seed=7)
    sets = [shingles(t) for t in texts]
    similarity = {i: jaccard(sets[i], sets[j]) for i, j in copy_of.items()}
    truth = {i for i, s in similarity.items() if s >= THRESHOLD}
    assert 100 < len(truth) < len(copy_of) - 100  # both sides of the threshold are planted

    found = near_duplicates(texts, THRESHOLD)

    hits = {i for i, j in found.items() if copy_of.get(i) == j}
    recall = len(hits & truth) / len(truth)
    precision = len(hits & truth) / len(found)
    assert precision == 1.0  # candidates are confirmed by exact Jaccard
    assert recall >= 0.97, recall
    assert all(i in copy_of for i in found)  # no original is a duplicate of another original


def test_bands_follow_the_threshold():
    strict, loose = lsh_index(0.95), lsh_index(0.5)
    assert strict.b * strict.r <= 128 and loose.b * loose.r <= 128
    assert strict.r > loose.r  # more rows per band: a higher similarity needed to collide


def test_the_compact_band_index_finds_what_datasketchs_index_finds():
    texts, _ = planted(originals=300, seed=3)
    ours, theirs = BandIndex(THRESHOLD), lsh_index(THRESHOLD)
    found = 0
    for key, signature in enumerate(signatures([shingles(t) for t in texts])):
        candidates = ours.query(signature)
        assert candidates == sorted(theirs.query(signature))
        found += bool(candidates)
        ours.insert(key, signature)
        theirs.insert(key, signature)
    assert found > 100  # the planted copies collide with their originals


def test_chains_resolve_to_the_first_text_and_chinese_uses_characters():
    a = "请用正式的语气写一封给邻居的信，介绍蜜蜂的好处，并且不要超过三百字。"
    texts = [a, a + "谢谢", "完全不同的一段文字，讲的是天气和火车时刻表的事情。", a]
    assert near_duplicates(texts, THRESHOLD) == {1: 0, 3: 0}
    assert near_duplicates([], THRESHOLD) == {}
    assert near_duplicates(["", ""], THRESHOLD) == {1: 0}


def test_an_index_on_disk_finds_what_the_one_in_memory_finds(tmp_path):
    texts, _ = planted(originals=200, seed=5)
    on_disk = NearDuplicates(THRESHOLD, path=tmp_path / "index.sqlite")
    try:
        assert on_disk.check_all(texts[:250]) + on_disk.check_all(texts[250:]) == NearDuplicates(THRESHOLD).check_all(
            texts
        )
    finally:
        on_disk.close()


class _OneShard:
    """A perturb stage of one shard, as screen_stage reads it."""

    def __init__(self, prompts: list[str]):
        self.rows = {c: [None] * len(prompts) for c in DECISION_COLUMNS}
        self.rows.update(status=["ok"] * len(prompts), prompt=prompts, response=["r"] * len(prompts))
        self.rows.update(description=["d"] * len(prompts), input=["NULL"] * len(prompts))

    def done_shards(self) -> list[int]:
        return [0]

    def read_shard_columns(self, index: int, columns: list[str]) -> dict[str, list]:
        return {c: self.rows[c] for c in columns}


def test_the_filter_keeps_its_index_in_a_scratch_file_it_removes(tmp_path):
    config = load_config(profile="trace")
    config.decontamination.official = False
    texts, _ = planted(originals=40, seed=2)
    scratch = tmp_path / "filter" / ".screen.tmp"
    decided = screen_stage(_OneShard(texts), config, scratch)
    assert set(decided["filter_status"]) <= {"kept", "near_duplicate", "exact_duplicate"}
    assert (decided["filter_status"] == "near_duplicate").sum() >= 5  # the copies it finds
    assert not scratch.exists()


def test_a_full_disk_under_the_filter_is_named_as_its_index_not_as_the_llm_cache(tmp_path, monkeypatch):
    def full(self, texts):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(NearDuplicates, "check_all", full)
    scratch = tmp_path / ".screen.tmp"
    config = load_config(profile="trace")
    config.decontamination.official = False
    with pytest.raises(OSError) as raised:
        screen_stage(_OneShard(["a b c d"]), config, scratch)
    line = os_error_line(raised.value)
    assert str(scratch) in line and "duplicate index" in line and "free some disk space" in line
    assert "LLM cache" not in line and not scratch.exists()
