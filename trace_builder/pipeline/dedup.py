"""Near-duplicate detection: MinHash of word/character 3-gram shingles, LSH banded for the threshold (datasketch)."""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)

NUM_PERM = 128
# datasketch picks bands x rows for the threshold, minimising these weights x (false-positive,
# false-negative) probability mass. Every candidate is confirmed by its exact Jaccard, so a false
# candidate costs one set comparison while a miss keeps a duplicate in the data: weight misses
# 49:1 (0.85 with 128 permutations -> 14 bands of 9 rows; recall on planted pairs at Jaccard
# >= 0.85: 0.99-1.0, against 0.88 with equal weights (8 x 16); tests/test_dedup.py).
LSH_WEIGHTS = (0.02, 0.98)
# datasketch >= 2.0's "affine32": a*h + b mod 2^32 with a odd, a bijection (no wrapped modulus).
SCHEME = "affine32"


def shingles(text: str, n: int = 3) -> set[str]:
    """Word 3-grams; each CJK character counts as a word, so Chinese gets character 3-grams."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def signatures(sets: list[set[str]], num_perm: int = NUM_PERM, seed: int = 0) -> list[MinHash]:
    """One MinHash per shingle set (all with the same permutations)."""
    return MinHash.bulk(
        ([s.encode("utf-8") for s in items] for items in sets), num_perm=num_perm, seed=seed, scheme=SCHEME
    )


def lsh_index(threshold: float, num_perm: int = NUM_PERM) -> MinHashLSH:
    """An empty in-memory LSH index whose bands are tuned to `threshold`."""
    return MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)


def near_duplicates(texts: list[str], threshold: float, num_perm: int = NUM_PERM, seed: int = 0) -> dict[int, int]:
    """Map index -> index of an earlier text it nearly duplicates (Jaccard >= threshold).

    LSH finds candidate pairs in about linear time; each candidate is confirmed with the
    exact Jaccard, so a reported pair is never a false positive.
    """
    sets = [shingles(t) for t in texts]
    index = lsh_index(threshold, num_perm)
    duplicate_of: dict[int, int] = {}
    for i, signature in enumerate(signatures(sets, num_perm, seed)):
        candidates = sorted(index.query(signature))
        match = next((j for j in candidates if jaccard(sets[i], sets[j]) >= threshold), None)
        if match is not None:
            duplicate_of[i] = match
            continue  # only originals enter the index, so chains resolve to the first text
        index.insert(i, signature)
    return duplicate_of
