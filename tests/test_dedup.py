"""Near-duplicate detection: recall and precision on planted near-duplicates, LSH tuned to the threshold."""

from __future__ import annotations

import random

from trace_builder.pipeline.dedup import BandIndex, jaccard, lsh_index, near_duplicates, shingles, signatures

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
