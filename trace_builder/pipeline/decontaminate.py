"""Decontamination: keep texts that overlap a known evaluation set out of a run.

Seeds are checked before any request is spent on them, final rows (description and input)
after generation. The measure is the one Tulu 3 / open-instruct use: the share of an eval
text's n-grams found in the candidate, contaminated at `threshold` (0.5) or more. Tokens
are words, except in Chinese and Japanese, where each character is a token (no spaces to
split on), and numbers are left out; n is `word_ngram` for a text mostly of words, `char_ngram` for one mostly of
characters. An eval text shorter than n tokens matches only a candidate equal to it.

The known sets: the official TRACE eval file (shipped with the package, MIT) unless
`decontamination.official` is false, and any files given (`--decontaminate FILE`: JSONL or
Parquet, every text column read). A set is named by its file name, never its path: the name
goes into manifests and the dataset card.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq

from trace_builder.errors import UserError
from trace_builder.records import NULL_INPUT
from trace_builder.resources import official_eval_path

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")
# Columns read from a user's eval file, when present (chat `messages` give their user turns).
_TEXT_COLUMNS = ("prompt", "instruction", "question", "description", "input", "text", "query")


def tokens(text: str) -> list[str]:
    """Lower-cased words, and single characters of Chinese and Japanese. Numbers are left out:
    runs like "1 2 3 4 5 6 7 8" say nothing about where a text came from."""
    return [t for t in _TOKEN.findall(text.lower()) if not t.isdigit()]


def _is_cjk(token: str) -> bool:
    return len(token) == 1 and _CJK_CHAR.match(token) is not None


@dataclass(frozen=True)
class EvalSet:
    name: str  # the file name
    texts: tuple[str, ...]


def official_set() -> EvalSet:
    """The official TRACE eval file: each item's description, input and whole user message (a short
    description is matched only whole; the message it heads is long enough to be found in a copy)."""
    texts = []
    with open(official_eval_path(), encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            user = [m["content"] for m in item.get("messages") or [] if m.get("role") == "user"]
            texts += [item["description"], item["input"], *user]
    return EvalSet(official_eval_path().name, tuple(t for t in texts if t and t.strip() != NULL_INPUT))


def file_set(path: str | Path) -> EvalSet:
    """A user's eval set: the text columns of a JSONL or Parquet file."""
    path = _existing(path)
    try:
        if path.suffix.lower() == ".parquet":
            rows = pq.read_table(path).to_pylist()
        else:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise UserError(
            f"decontamination file {path} is not readable JSONL or Parquet ({str(exc)[:80]}): fix or remove it"
        ) from None
    texts = [text for row in rows if isinstance(row, dict) for text in _row_texts(row)]
    if not texts:
        raise UserError(
            f"decontamination file {path} has no text columns ({', '.join(_TEXT_COLUMNS)} or messages): "
            "give each row one of them"
        )
    return EvalSet(path.name, tuple(texts))


def _row_texts(row: dict) -> Iterable[str]:
    for column in _TEXT_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and value.strip() and value.strip() != NULL_INPUT:
            yield value
    for message in row.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            yield message["content"]


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"decontamination file {path} does not exist: pass --decontaminate with a JSONL or Parquet file"
        )
    return path


def file_digest(path: str | Path) -> str:
    """What a run's fingerprint records of a file: its name and content, not where it lies."""
    return f"{Path(path).name}:{hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]}"


def _ngrams(toks: list[str], n: int) -> set[str]:
    """The distinct n-grams of `toks`, each its tokens joined by a space."""
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


class Decontaminator:
    """Which known eval set, if any, a text overlaps.

    The index holds only strings, ints and tuples of ints (an n-gram is its tokens joined by a
    space, which no token holds): none of them is a container the garbage collector tracks. As
    tuples of tokens with lists of owners, the official set's 170K n-grams were 170K more
    objects for every full collection to walk, and a run stalled ~0.1 s on each.
    """

    def __init__(self, sets: list[EvalSet], word_ngram: int = 8, char_ngram: int = 8, threshold: float = 0.5):
        self.sets = sets
        self.sizes = {"word": word_ngram, "char": char_ngram}
        self.threshold = threshold
        # Tuples, not lists, even while building: a young collection untracks them, so building the
        # index does not promote 170K containers into the old generation for full collections to walk.
        self._grams: dict[str, dict[str, tuple[int, ...]]] = {"word": {}, "char": {}}
        self._whole: dict[str, int] = {}  # eval texts shorter than n: matched whole
        self._owner: list[str] = []  # eval text -> its set's name
        self._total: list[int] = []  # eval text -> its distinct n-grams
        for eval_set in sets:
            for text in eval_set.texts:
                unit = len(self._owner)
                self._owner.append(eval_set.name)
                toks = tokens(text)
                kind = self._kind(toks)
                grams = _ngrams(toks, self.sizes[kind])
                self._total.append(len(grams))
                if toks and not grams:
                    self._whole.setdefault(" ".join(toks), unit)
                table = self._grams[kind]
                for gram in grams:
                    table[gram] = table.get(gram, ()) + (unit,)

    @staticmethod
    def _kind(toks: list[str]) -> str:
        return "char" if toks and sum(map(_is_cjk, toks)) * 2 > len(toks) else "word"

    def match(self, text: str) -> str | None:
        """The name of the eval set `text` overlaps, or None."""
        toks = tokens(text)
        if not toks:
            return None
        whole = self._whole.get(" ".join(toks))
        if whole is not None:
            return self._owner[whole]
        hits: Counter = Counter()
        for kind in ("word", "char"):
            table = self._grams[kind]
            if table:
                for gram in _ngrams(toks, self.sizes[kind]):
                    hits.update(table.get(gram, ()))
        return next((self._owner[u] for u, found in hits.items() if found / self._total[u] >= self.threshold), None)

    def first_match(self, texts: Iterable[str | None]) -> str | None:
        """The eval set the first overlapping text of `texts` overlaps (None entries and NULL skipped)."""
        for text in texts:
            if text and text != NULL_INPUT and (found := self.match(text)) is not None:
                return found
        return None


@lru_cache(maxsize=4)
def _cached(
    official: bool, files: tuple[str, ...], word_ngram: int, char_ngram: int, threshold: float
) -> Decontaminator:
    sets = ([official_set()] if official else []) + [file_set(f) for f in files]
    return Decontaminator(sets, word_ngram, char_ngram, threshold)


def decontaminator(config) -> Decontaminator | None:
    """The run's decontaminator (built once per process), None when no eval set is configured."""
    cfg = config.decontamination
    if not cfg.official and not cfg.files:
        return None
    return _cached(cfg.official, tuple(cfg.files), cfg.word_ngram, cfg.char_ngram, cfg.threshold)


def settings(config) -> dict:
    """What decontamination contributes to a fingerprint: the sets by name and content, and the measure."""
    cfg = config.decontamination
    return {
        "official": cfg.official,
        "files": [file_digest(_existing(f)) for f in cfg.files],
        "ngrams": [cfg.word_ngram, cfg.char_ngram],
        "threshold": cfg.threshold,
    }
