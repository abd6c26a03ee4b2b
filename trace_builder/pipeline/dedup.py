"""Near-duplicate detection: MinHash of word/character 3-gram shingles, LSH banded for the threshold (datasketch)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np
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


def _hashed(items: set[str]) -> np.ndarray:
    """A shingle set as sorted 64-bit hashes: an eighth of its strings' memory, exact Jaccard kept
    (up to hash collisions, about 1 in 2^64 per pair)."""
    hashes = (int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "big") for s in items)
    return np.unique(np.fromiter(hashes, dtype=np.uint64, count=len(items)))


def _jaccard_hashed(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


class BandIndex:
    """The LSH index of the originals' signatures, in datasketch's band layout for the threshold, kept
    in SQLite (a row per band of an original) with each original's hashed shingles for the exact
    confirmation: about 1.5 KB per original, which at a file path stays on disk behind a 16 MB page
    cache, so the filter's memory does not grow with the run (held in Python it was 2 KB per original,
    240 MB for a 120K-row run)."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, path: str | Path = ":memory:"):
        layout = lsh_index(threshold, num_perm)
        self.bands, self.rows = layout.b, layout.r
        # A scratch file, rebuilt from scratch by every filter run: nothing to journal or sync.
        self._db = sqlite3.connect(str(path))
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA cache_size = -16384;
            CREATE TABLE buckets (key INTEGER, original INTEGER, PRIMARY KEY (key, original)) WITHOUT ROWID;
            CREATE TABLE originals (id INTEGER PRIMARY KEY, shingles BLOB);
            """
        )
        marks = ", ".join("?" * self.bands)
        self._query = f"SELECT DISTINCT original FROM buckets WHERE key IN ({marks}) ORDER BY original"

    def close(self) -> None:
        self._db.close()

    def _keys(self, signature: MinHash) -> list[int]:
        """A 64-bit key per band: its rows' hash values with the band's number (equal rows in two
        different bands are no collision)."""
        values = signature.hashvalues[: self.bands * self.rows].reshape(self.bands, self.rows)
        return [
            int.from_bytes(
                hashlib.blake2b(row.tobytes(), digest_size=8, salt=band.to_bytes(8, "big")).digest(), "big", signed=True
            )
            for band, row in enumerate(values)
        ]

    def query(self, signature: MinHash) -> list[int]:
        """The originals sharing at least one band with `signature`, in insertion order."""
        return [original for (original,) in self._db.execute(self._query, self._keys(signature))]

    def insert(self, original: int, signature: MinHash, shingles: np.ndarray | None = None) -> None:
        """Index `original` by its bands, keeping its hashed shingles (`shingles_of`) when given."""
        self._db.executemany(
            "INSERT OR IGNORE INTO buckets VALUES (?, ?)", [(key, original) for key in self._keys(signature)]
        )
        if shingles is not None:
            self._db.execute("INSERT INTO originals VALUES (?, ?)", (original, shingles.tobytes()))

    def shingles_of(self, original: int) -> np.ndarray:
        (blob,) = self._db.execute("SELECT shingles FROM originals WHERE id = ?", (original,)).fetchone()
        return np.frombuffer(blob, dtype=np.uint64)


class NearDuplicates:
    """Texts seen one at a time: `check_all(texts)` says which earlier text each nearly duplicates
    (Jaccard >= threshold) or None, and remembers it as an original when it is none. Only originals
    are kept, in a `BandIndex` (in memory, or at `path` for a run's worth of texts)."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, seed: int = 0, path: str | Path = ":memory:"):
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self._index = BandIndex(threshold, num_perm, path)
        self._seen = 0

    def close(self) -> None:
        self._index.close()

    def check_all(self, texts: list[str]) -> list[int | None]:
        """Each text checked in order against the originals before it (signatures computed together,
        which is faster)."""
        sets = [shingles(t) for t in texts]
        out = []
        for items, signature in zip(sets, signatures(sets, self.num_perm, self.seed)):
            key, self._seen = self._seen, self._seen + 1
            hashed = _hashed(items)
            candidates = self._index.query(signature)
            match = next(
                (j for j in candidates if _jaccard_hashed(hashed, self._index.shingles_of(j)) >= self.threshold), None
            )
            if match is None:  # only originals enter the index, so chains resolve to the first text
                self._index.insert(key, signature, hashed)
            out.append(match)
        return out


def near_duplicates(texts: list[str], threshold: float, num_perm: int = NUM_PERM, seed: int = 0) -> dict[int, int]:
    """Map index -> index of an earlier text it nearly duplicates (Jaccard >= threshold).

    LSH finds candidate pairs in about linear time; each candidate is confirmed with the
    exact Jaccard, so a reported pair is never a false positive.
    """
    with contextlib.closing(NearDuplicates(threshold, num_perm, seed)) as index:
        found = index.check_all(texts)
    return {i: j for i, j in enumerate(found) if j is not None}
