"""Seed instructions: the built-in set, user files (JSONL, JSON, CSV, Parquet), dedup and a balanced selection."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trace_builder.errors import UserError
from trace_builder.records import NULL_INPUT, content_id

SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
BUILTIN_SOURCE = "builtin"
UNKNOWN_DOMAIN = "general"

_WHITESPACE = re.compile(r"\s+")
# Han ideographs, kana and CJK punctuation.
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Seed:
    """A simple instruction to expand: a task text and, optionally, the material it works on."""

    id: str
    text: str
    language: str  # "en" | "zh" (or what a user file declares)
    domain: str
    input: str = NULL_INPUT
    source: str = BUILTIN_SOURCE


def normalise(text: str) -> str:
    """Whitespace-insensitive form used for ids and duplicate detection."""
    return _WHITESPACE.sub(" ", text).strip()


def seed_id(text: str, input_text: str = NULL_INPUT) -> str:
    return content_id(normalise(text), normalise(input_text or NULL_INPUT))


def detect_language(text: str) -> str:
    """'zh' when CJK characters make up a fair share of the letters, else 'en' (cheap, no model).

    Chinese instructions often quote code, brand names or English titles: a fifth of the
    letters being CJK already means the text is Chinese (the official TRACE file's Chinese
    items never fall below 0.4, its English ones are at 0).
    """
    cjk = len(_CJK.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk / (cjk + len(_LATIN.findall(text))) >= 0.2 else "en"


def _normalise_language(value: str) -> str:
    # 'zh-CN', 'ZH_hans', 'en-US' -> 'zh', 'en'
    return re.split(r"[-_]", value.strip().lower(), maxsplit=1)[0]


def _cell_text(value: Any) -> str | None:
    """A cell as stripped text; None for missing values (None, NaN, empty)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = text.strip()
    return text or None


def seeds_from_rows(
    rows: Iterable[dict[str, Any]],
    source: str,
    text_column: str = "text",
    input_column: str | None = None,
    language: str | None = None,
) -> list[Seed]:
    """Seeds from row dicts; rows with a blank text are skipped.

    `input_column` None means: use an "input" column when there is one. The language is
    `language` when given, else the row's "language" value, else detected from the text.
    """
    seeds = []
    for row in rows:
        text = _cell_text(row.get(text_column))
        if text is None:
            continue
        input_text = _cell_text(row.get(input_column or "input"))
        if input_text is None or input_text.upper() == NULL_INPUT:
            input_text = NULL_INPUT
        lang = language or _cell_text(row.get("language"))
        lang = _normalise_language(lang) if lang else detect_language(text)
        domain = _cell_text(row.get("domain")) or UNKNOWN_DOMAIN
        seeds.append(
            Seed(
                id=seed_id(text, input_text),
                text=text,
                language=lang,
                domain=domain,
                input=input_text,
                source=source,
            )
        )
    return seeds


def _json_lines(text: str) -> list[str]:
    # Not str.splitlines(): JSON strings may hold raw U+2028 and friends, which it splits on.
    return text.replace("\r\n", "\n").split("\n")


def _parse_jsonl(lines: Iterable[str], where: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where} line {number} is not valid JSON ({exc.msg}); fix that line so each line holds one JSON object"
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f'{where} line {number} holds a JSON {type(row).__name__}, not an object; write one object per line, e.g. {{"text": "..."}}'
            )
        rows.append(row)
    return rows


def _parse_json(text: str, where: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}); fix it or save the seeds as JSONL"
        ) from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UserError(
            f'{where} must hold a JSON list of objects, e.g. [{{"text": "..."}}]; rewrite it in that shape or as JSONL'
        )
    return data


def _parse_csv(text: str, where: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:
            if None in row:  # more cells than the header has names
                raise UserError(
                    f"{where} line {reader.line_num} has more fields than the header; quote fields that contain commas"
                )
            rows.append(row)
    except csv.Error as exc:
        raise UserError(
            f"{where} line {reader.line_num} is malformed CSV ({exc}); fix the quoting on that line"
        ) from None
    return rows


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        # newline="": keep line ends as written, so CSV can see newlines inside quoted cells.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise UserError(f"seed file {path} is not UTF-8 text; re-save it with UTF-8 encoding") from None
    except OSError as exc:
        raise UserError(f"cannot read seed file {path} ({exc.strerror}); check its permissions") from None


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"seed file {path} is not a readable Parquet file ({reason}); re-export it as Parquet, JSONL or CSV"
        ) from None


def _bounded_lines(path: Path, max_bytes: int, too_long: list[int]) -> Iterator[str]:
    """The lines of a text file; a line over `max_bytes` is skipped (its number noted in `too_long`)
    without ever being held whole: a 50 MB line costs one buffer, not 50 MB of str and JSON."""
    try:
        with path.open("rb") as handle:
            for number in itertools.count(1):
                line = handle.readline(max_bytes + 1)
                if not line:
                    return
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                    too_long.append(number)
                    yield ""  # keeps the line numbers of later errors right
                    continue
                yield line.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UserError(f"seed file {path} is not UTF-8 text; re-save it with UTF-8 encoding") from None
    except OSError as exc:
        raise UserError(f"cannot read seed file {path} ({exc.strerror}); check its permissions") from None


def line_budget(max_chars: int) -> int:
    """Bytes a JSONL line may take to hold a seed of `max_chars` (\\uXXXX escapes: 6 bytes a char)."""
    return 6 * max_chars + 65536


def _read_rows(path: Path, max_chars: int | None = None, too_long: list[int] | None = None) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        if max_chars is not None and too_long is not None:
            return _parse_jsonl(_bounded_lines(path, line_budget(max_chars), too_long), f"seed file {path}")
        return _parse_jsonl(_json_lines(_read_text(path)), f"seed file {path}")
    text = _read_text(path)
    if suffix == ".json":
        return _parse_json(text, f"seed file {path}")
    return _parse_csv(text, f"seed file {path}")


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def load_seed_file(
    path: str | Path,
    text_column: str = "text",
    input_column: str | None = None,
    language: str | None = None,
    max_chars: int | None = None,
    skipped: Counter | None = None,
) -> list[Seed]:
    """Seeds from a user file (.jsonl/.ndjson, .json list of objects, .csv, .parquet).

    Raises UserError (one line: problem and fix) for a missing, unsupported, malformed or
    empty file and for a missing text or input column. Seeds longer than `max_chars` are
    skipped and counted in `skipped['too_long']` (a JSONL line far longer is never read whole).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"seed file {path} does not exist; check the path given to --seeds")
    if path.is_dir():
        raise UserError(f"seed file {path} is a directory; pass a .jsonl, .json, .csv or .parquet file to --seeds")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UserError(
            f"seed file {path} has unsupported type {path.suffix or '(no suffix)'!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    too_long: list[int] = []
    rows = _read_rows(path, max_chars, too_long)
    if not rows and too_long:
        raise UserError(
            f"seed file {path}: every seed is longer than {max_chars:,} characters; raise seeds.max_chars or shorten them"
        )
    if not rows:
        raise UserError(f"seed file {path} has no rows; add seed instructions (one per row) or use the built-in seeds")
    columns = _columns(rows)
    if text_column not in columns:
        raise UserError(
            f"seed file {path} has no column {text_column!r} (columns: {', '.join(columns)}); choose the instruction column with --seed-column"
        )
    if input_column is not None and input_column not in columns:
        raise UserError(
            f"seed file {path} has no input column {input_column!r} (columns: {', '.join(columns)}); choose an existing column or leave the input column unset"
        )
    seeds = seeds_from_rows(rows, str(path), text_column, input_column, language)
    if max_chars is not None:
        kept = [s for s in seeds if len(s.text) + (len(s.input) if s.input != NULL_INPUT else 0) <= max_chars]
        too_long += [0] * (len(seeds) - len(kept))
        seeds = kept
    if skipped is not None and too_long:
        skipped["too_long"] += len(too_long)
    if not seeds:
        raise UserError(
            f"seed file {path} has only blank values in column {text_column!r}; fill it in or choose another column with --seed-column"
        )
    return seeds


def load_builtin_seeds() -> list[Seed]:
    """The seed set shipped with the package (trace_builder/data/seeds.jsonl)."""
    text = resources.files("trace_builder").joinpath("data", "seeds.jsonl").read_text(encoding="utf-8")
    return seeds_from_rows(_parse_jsonl(_json_lines(text), "built-in seed file"), BUILTIN_SOURCE)


def dedupe_seeds(seeds: Iterable[Seed]) -> list[Seed]:
    """Drop exact duplicates (same text and input up to whitespace), keeping the first, in order."""
    seen: set[str] = set()
    unique = []
    for seed in seeds:
        key = seed_id(seed.text, seed.input)
        if key not in seen:
            seen.add(key)
            unique.append(seed)
    return unique


def select_seeds(
    seeds: Sequence[Seed],
    limit: int | None,
    languages: Sequence[str] | None = None,
    rng_seed: int = 0,
) -> list[Seed]:
    """A deterministic subset of `limit` seeds, balanced over languages and domains.

    Languages take turns; within a language, domains take turns in a seeded shuffled
    order, and within a domain seeds come in a seeded shuffled order. So a run with
    --limit 4 sees two languages and four domains rather than the file's first lines.
    """
    pool = list(seeds)
    if languages is not None:
        wanted = {_normalise_language(lang) for lang in languages}
        available = sorted({seed.language for seed in pool})
        pool = [seed for seed in pool if seed.language in wanted]
        if not pool:
            raise UserError(
                f"no seeds in language(s) {', '.join(sorted(wanted))}; the seeds have {', '.join(available) or 'none'}: set seeds.languages in the run config to some of those"
            )
    if limit is None:
        return pool
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")

    rng = random.Random(rng_seed)
    by_language: dict[str, dict[str, list[Seed]]] = {}
    for seed in pool:
        by_language.setdefault(seed.language, {}).setdefault(seed.domain, []).append(seed)

    # Per language: one queue of seeds that cycles through its domains.
    language_queues: list[list[Seed]] = []
    for lang in sorted(by_language):
        domains = sorted(by_language[lang])
        rng.shuffle(domains)
        groups = []
        for domain in domains:
            members = list(by_language[lang][domain])
            rng.shuffle(members)
            groups.append(members)
        language_queues.append(_round_robin(groups))
    rng.shuffle(language_queues)
    return _round_robin(language_queues)[:limit]


def _round_robin(groups: Sequence[Sequence[Seed]]) -> list[Seed]:
    out = []
    for depth in range(max((len(g) for g in groups), default=0)):
        out.extend(group[depth] for group in groups if depth < len(group))
    return out
