"""The shape of an instruction, the user message TRACE builds from it, and the final datasets' columns."""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow as pa

NULL_INPUT = "NULL"

# The score a constraint must get to count as followed (TRACE.md §3 step 5 and §6).
FULL_MARKS = 10

_NUMBERING = re.compile(r"^\s*\d+\s*[.、)）]\s*")


def content_id(*parts: object, length: int = 16) -> str:
    """A stable id: the hex SHA-256 of the JSON of `parts`, shortened."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def strip_numbering(constraint: str) -> str:
    """'3. Use a formal tone；' -> 'Use a formal tone；' (the number is the layout's, not the text's)."""
    return _NUMBERING.sub("", constraint, count=1).strip()


def number_constraints(constraints: list[str]) -> list[str]:
    return [f"{i}. {text}" for i, text in enumerate(constraints, start=1)]


def build_user_prompt(description: str, constraints: list[str], input_text: str = NULL_INPUT) -> str:
    """The user message exactly as the official TRACE file lays it out.

    description, newline, the numbered constraints one per line, newline, then
    '# Inputs:\\n<input>\\n' unless the input is 'NULL'. `constraints` are plain texts
    without their numbers.
    """
    text = description + "\n" + "\n".join(number_constraints(constraints)) + "\n"
    if input_text and input_text != NULL_INPUT:
        text += "# Inputs:\n" + input_text + "\n"
    return text


SYSTEM_PROMPT = "You are a helpful assistant."

# Columns every final dataset carries, describing the instruction x (x1 for dpo/iopo).
_INSTRUCTION_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("seed_id", pa.string()),
    pa.field("language", pa.string()),
    pa.field("description", pa.string()),
    pa.field("constraints", pa.list_(pa.string())),
    pa.field("dimensions", pa.list_(pa.string())),
    pa.field("input", pa.string()),
    pa.field("constraint_count", pa.int32()),
    pa.field("prompt", pa.string()),
    # The response's final 0..10 per constraint (aligned with `constraints`), and who decided each.
    pa.field("scores", pa.list_(pa.int32())),
    pa.field("decided_by", pa.list_(pa.string())),  # 'code' (a deterministic check) or 'llm'
    # The deterministic check of each constraint as a JSON spec (verify/), null where none applies:
    # what a reward for RL reads (rewards.py).
    pa.field("checks", pa.list_(pa.string())),
]

_SCORES = pa.list_(pa.int32())

FINAL_SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema(_INSTRUCTION_FIELDS + [pa.field("response", pa.string())]),
    "dpo": pa.schema(
        _INSTRUCTION_FIELDS
        + [pa.field("chosen", pa.string()), pa.field("rejected", pa.string()), pa.field("scores_rejected", _SCORES)]
    ),
    "iopo": pa.schema(
        _INSTRUCTION_FIELDS
        + [
            pa.field("response", pa.string()),  # y1: follows x1
            pa.field("perturb_op", pa.string()),  # add | delete | revise
            pa.field("constraints_2", pa.list_(pa.string())),
            pa.field("dimensions_2", pa.list_(pa.string())),
            pa.field("checks_2", pa.list_(pa.string())),
            pa.field("prompt_2", pa.string()),  # x2
            pa.field("response_2", pa.string()),  # y2: follows x2
            pa.field("x1_y2_passes", pa.bool_()),  # recorded; filtered on only with perturb.strict
            pa.field("scores_x1_y1", _SCORES),
            pa.field("scores_x2_y2", _SCORES),
            pa.field("scores_x1_y2", _SCORES),
            pa.field("scores_x2_y1", _SCORES),
            pa.field("decided_by_2", pa.list_(pa.string())),  # who decided each of scores_x2_y2
        ]
    ),
    "eval": pa.schema(_INSTRUCTION_FIELDS + [pa.field("response", pa.string())]),
}


def final_layout() -> str:
    """A digest of the final datasets' columns: final/ is rebuilt when they change."""
    layout = {name: schema.to_string(show_schema_metadata=False) for name, schema in FINAL_SCHEMAS.items()}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]
