"""Read an evaluation set from a path: the official TRACE JSONL, or our final/eval Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trace_builder.errors import UserError
from trace_builder.evaluate.items import UNKNOWN_DIMENSION, EvalItem
from trace_builder.evaluate.official import load_official
from trace_builder.records import FINAL_SCHEMAS, NULL_INPUT, SYSTEM_PROMPT, build_user_prompt
from trace_builder.run.store import verified_parts, verify_part
from trace_builder.taxonomy import dimension_for_label

# What an eval item needs from our Parquet; `response` and `prompt` are optional (the
# prompt is rebuilt from the fields, the response is only kept as a reference).
OUR_REQUIRED = ("id", "language", "description", "constraints", "dimensions", "input")


def _parquet_files(path: Path) -> list[Path]:
    """A Parquet file, a folder of part-*.parquet, or a run folder holding final/eval/."""
    if path.is_file():
        verify_part(path)
        return [path]
    for folder in (path, path / "eval", path / "final" / "eval"):
        if any(folder.glob("part-*.parquet")):
            return verified_parts(folder)
        if parts := sorted(folder.glob("*.parquet")):
            return parts
    raise UserError(f"{path} holds no Parquet files: pass the official JSONL, a final/eval Parquet file or its folder")


def _read_parquet(files: list[Path]) -> pa.Table:
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(
                f"{file} is not a readable Parquet file ({str(exc)[:80]}): pass our final/eval Parquet"
            ) from None
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid:
        raise UserError(
            f"the Parquet files under {files[0].parent} have different columns: pass one eval split"
        ) from None


def _dimension_id(value: str) -> str:
    dimension = dimension_for_label(value)
    return dimension.id if dimension is not None else UNKNOWN_DIMENSION


def _checks(raw: object, count: int) -> tuple[object, ...] | None:
    """Check specs as stored (JSON strings or mappings), aligned with the constraints; junk becomes None."""
    if not isinstance(raw, list) or not raw:
        return None
    specs: list[object] = []
    for spec in raw[:count]:
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError:
                spec = None
        specs.append(spec if isinstance(spec, dict) else None)
    specs += [None] * (count - len(specs))
    return tuple(specs) if any(s is not None for s in specs) else None


def load_ours(path: Path) -> list[EvalItem]:
    files = _parquet_files(path)
    table = _read_parquet(files)
    missing = [c for c in OUR_REQUIRED if c not in table.column_names]
    if missing:
        expected = ", ".join(FINAL_SCHEMAS["eval"].names)
        raise UserError(
            f"{path} lacks column(s) {', '.join(missing)}: pass our final/eval Parquet (columns {expected}) or the official JSONL"
        )
    items = []
    seen: set[str] = set()
    for row in table.to_pylist():
        constraints = [str(c) for c in (row["constraints"] or [])]
        dimensions = [str(d) for d in (row["dimensions"] or [])]
        if not constraints:
            raise UserError(f"{path}: row {row['id']!r} has no constraints: every eval item needs at least one")
        if len(dimensions) != len(constraints):
            raise UserError(
                f"{path}: row {row['id']!r} has {len(constraints)} constraints but {len(dimensions)} dimensions"
            )
        item_id = str(row["id"])
        if item_id in seen:
            raise UserError(f"{path}: id {item_id!r} occurs twice: ids must be unique")
        seen.add(item_id)
        input_text = row["input"] if row["input"] not in (None, "") else NULL_INPUT
        items.append(
            EvalItem(
                id=item_id,
                source="ours",
                language=str(row["language"] or "en"),
                system=SYSTEM_PROMPT,
                prompt=build_user_prompt(row["description"], constraints, input_text),
                description=row["description"],
                constraints=tuple(constraints),
                dimensions=tuple(_dimension_id(d) for d in dimensions),
                input_text=input_text,
                category=str(row.get("category") or ""),
                dimension_labels=tuple(dimensions),
                reference=str(row.get("response") or ""),
                checks=_checks(row.get("checks"), len(constraints)),
            )
        )
    return items


def sample_items(items: list[EvalItem], size: int, seed: int = 0) -> list[EvalItem]:
    """`size` items stratified by constraint count (as the pipeline's eval split), in file order."""
    import pandas as pd

    from trace_builder.pipeline.filter import split_by_count

    chosen = split_by_count(pd.Series([item.constraint_count for item in items]), size, seed)
    return [item for i, item in enumerate(items) if i in chosen]


def load_items(path: Path | str, limit: int | None = None, sample: int | None = None) -> list[EvalItem]:
    """Every item of the evaluation set at `path`; the first `limit`, or a stratified `sample`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass --data with the official TRACE JSONL or our final/eval Parquet")
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json"):
        items = load_official(path)
    elif path.is_dir() or path.suffix.lower() == ".parquet":
        items = load_ours(path)
    else:
        raise UserError(
            f"{path} is neither a .jsonl nor a .parquet file: pass the official TRACE JSONL or our final/eval Parquet"
        )
    if sample is not None:
        items = sample_items(items, sample)
    return items[:limit] if limit is not None else items
