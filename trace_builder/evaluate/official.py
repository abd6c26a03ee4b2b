"""The official TRACE evaluation file (JSONL): its layout, its user message, and its rows as EvalItems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trace_builder.errors import UserError
from trace_builder.evaluate.items import UNKNOWN_DIMENSION, EvalItem
from trace_builder.records import NULL_INPUT, SYSTEM_PROMPT, strip_numbering
from trace_builder.seeds import detect_language
from trace_builder.taxonomy import dimension_for_label

OFFICIAL_FIELDS = (
    "id",
    "messages",
    "type",
    "description",
    "constraints",
    "input",
    "constraints_num",
    "constraints_splits",
    "levels2",
    "category",
)


def official_user_prompt(description: str, numbered_constraints: str, input_text: str) -> str:
    """The user message exactly as the official file holds it.

    The official constraints keep their own numbering ('1.以…', '3.以…', '2. 确保…'),
    so they are laid out verbatim rather than renumbered.
    """
    text = description + "\n" + numbered_constraints + "\n"
    if input_text != NULL_INPUT:
        text += "# Inputs:\n" + input_text + "\n"
    return text


def dimension_id(label: str) -> str:
    dimension = dimension_for_label(label)
    return dimension.id if dimension is not None else UNKNOWN_DIMENSION


def looks_official(row: Any) -> bool:
    return isinstance(row, dict) and {"messages", "constraints_splits", "levels2"} <= row.keys()


def item_from_official(row: dict[str, Any], where: str) -> EvalItem:
    """One official row as an EvalItem; a malformed row is a UserError naming its line."""
    missing = [name for name in OFFICIAL_FIELDS if name not in row]
    if missing:
        raise UserError(
            f"{where}: missing field(s) {', '.join(missing)}: the official TRACE layout needs {', '.join(OFFICIAL_FIELDS)}"
        )
    splits, labels = row["constraints_splits"], row["levels2"]
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits) or not splits:
        raise UserError(f"{where}: constraints_splits must be a non-empty list of strings")
    if not isinstance(labels, list) or len(labels) != len(splits):
        raise UserError(f"{where}: levels2 must list one dimension label per constraint ({len(splits)})")
    for name in ("description", "constraints", "input"):
        if not isinstance(row[name], str):
            raise UserError(f"{where}: field {name} must be a string")
    messages = row["messages"]
    system = SYSTEM_PROMPT
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[0], dict)
        and messages[0].get("role") == "system"
    ):
        system = str(messages[0].get("content", SYSTEM_PROMPT))
    plain = tuple(strip_numbering(s) for s in splits)
    return EvalItem(
        id=str(row["id"]),
        source="official",
        language=detect_language(row["description"] + "\n" + row["constraints"]),
        system=system,
        prompt=official_user_prompt(row["description"], row["constraints"], row["input"]),
        description=row["description"],
        constraints=plain,
        dimensions=tuple(dimension_id(str(label)) for label in labels),
        input_text=row["input"],
        category=str(row.get("category") or ""),
        dimension_labels=tuple(str(label) for label in labels),
    )


def read_official_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(
                    f"{path}:{number} is not valid JSON: pass the official TRACE JSONL file (one object per line)"
                ) from None
    return rows


def load_official(path: Path) -> list[EvalItem]:
    rows = read_official_rows(path)
    if not rows:
        raise UserError(f"{path} holds no rows: pass the official TRACE JSONL file")
    if not looks_official(rows[0]):
        raise UserError(
            f"{path} is not in the official TRACE layout (needs {', '.join(OFFICIAL_FIELDS)}): "
            "pass the official JSONL or our final/eval Parquet"
        )
    items = [item_from_official(row, f"{path}:{n}") for n, row in enumerate(rows, start=1)]
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise UserError(f"{path}: id {item.id!r} occurs twice: ids must be unique")
        seen.add(item.id)
    return items
