"""Near-duplicate detection: MinHash signatures of word/character 3-gram shingles, banded LSH."""

from __future__ import annotations

import hashlib
import re

import numpy as np

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)
_PRIME = (1 << 61) - 1


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


def _hashes(items: set[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") & _PRIME for s in items] or [0],
        dtype=np.uint64,
    )


def near_duplicates(
    texts: list[str], threshold: float, num_perm: int = 64, bands: int = 16, seed: int = 0
) -> dict[int, int]:
    """Map index -> index of an earlier text it nearly duplicates (Jaccard >= threshold).

    LSH finds candidate pairs in about linear time; each candidate is confirmed with the
    exact Jaccard, so a reported pair is never a false positive.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)
    rows = num_perm // bands
    sets = [shingles(t) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = {}
    duplicate_of: dict[int, int] = {}
    for i, items in enumerate(sets):
        h = _hashes(items)
        # (a*h + b) mod p over uint64 wraps; fine for hashing purposes, it stays a permutation family.
        signature = ((np.outer(h, a) + b) % _PRIME).min(axis=0)
        keys = [(band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(bands)]
        candidates = {j for key in keys for j in buckets.get(key, ())}
        match = next((j for j in sorted(candidates) if jaccard(items, sets[j]) >= threshold), None)
        if match is not None:
            duplicate_of[i] = match
            continue  # only originals enter the index, so chains resolve to the first text
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return duplicate_of
