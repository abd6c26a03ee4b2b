"""Our final Parquet datasets -> chat messages, TRL datasets and tokenized IOPO groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from trace_builder.chat_format import PLAIN_CHAT_TEMPLATE, has_chat_template
from trace_builder.errors import UserError
from trace_builder.rewards import GROUND_TRUTH, GROUND_TRUTH_COLUMNS, ground_truth
from trace_builder.run.store import verified_parts, verify_part

# What each method reads; the rest of the final schema is carried but unused.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("id", "prompt", "response"),
    "dpo": ("id", "prompt", "chosen", "rejected"),
    "iopo": ("id", "prompt", "response", "prompt_2", "response_2"),
    "grpo": ("id", "prompt"),
}
# The dataset a method's columns come from, for the error message.
_PRODUCER = {"sft": "final/sft", "dpo": "final/dpo", "iopo": "final/iopo", "grpo": "a final dataset, e.g. final/sft"}


def parquet_files(data_dir: str | Path) -> list[Path]:
    """The part-*.parquet files of a dataset directory (a single .parquet file is accepted too)."""
    path = Path(data_dir)
    if path.is_file() and path.suffix == ".parquet":
        verify_part(path)
        return [path]
    if not path.is_dir():
        raise UserError(f"data dir {path} does not exist: pass a final dataset dir, e.g. <run>/final/sft")
    files = verified_parts(path) if any(path.glob("part-*.parquet")) else sorted(path.glob("*.parquet"))
    if not files:
        raise UserError(
            f"data dir {path} holds no .parquet files: pass a final dataset dir written by `trace-build run`"
        )
    return files


def check_columns(method: str, columns: set[str], where: str) -> None:
    """Raise a one-line UserError when `columns` cannot feed `method` (and say which dataset would)."""
    needed = REQUIRED_COLUMNS[method]
    missing = [c for c in needed if c not in columns]
    if not missing:
        return
    suited = [m for m, cols in REQUIRED_COLUMNS.items() if m != method and all(c in columns for c in cols)]
    hint = f" (it looks like data for {'/'.join(suited)})" if suited else ""
    raise UserError(
        f"data dir {where} has no {'/'.join(missing)} column{'s' if len(missing) > 1 else ''}{hint}: "
        f"{method} needs {_PRODUCER[method]} (trace-build run writes it)"
    )


def read_rows(data_dir: str | Path, method: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a final dataset as dicts, after checking that they can feed `method`."""
    files = parquet_files(data_dir)
    rows: list[dict[str, Any]] = []
    needed = list(REQUIRED_COLUMNS[method])
    carried = list(GROUND_TRUTH_COLUMNS) if method == "grpo" else []
    for file in files:
        try:
            schema = pq.read_schema(file)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise UserError(f"{file} is not a readable Parquet file ({exc}): rewrite it or remove it") from None
        check_columns(method, set(schema.names), str(data_dir))
        if "checks" in carried and "checks" not in schema.names:
            raise UserError(
                f"data dir {data_dir} has no checks column (built by an older trace-build): rerun the same "
                "`trace-build run` command to rebuild final/ (nothing is asked again)"
            )
        table = pq.read_table(file, columns=needed + carried)
        rows.extend(table.to_pylist())
        if limit is not None and len(rows) >= limit:
            rows = rows[:limit]
            break
    bad = [r["id"] for r in rows if any(not isinstance(r[c], str) or not r[c] for c in needed)]
    if bad:
        raise UserError(
            f"data dir {data_dir} has {len(bad)} row(s) with empty {'/'.join(needed)} (first id {bad[0]}): "
            "rebuild the final dataset with `trace-build run --stage filter`"
        )
    if not rows:
        raise UserError(f"data dir {data_dir} has no rows: run the pipeline until it writes examples")
    return rows


def prompt_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return messages


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def sft_records(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """TRL's conversational prompt/completion format (the loss falls on the completion only)."""
    return [
        {"prompt": prompt_messages(r["prompt"], system_prompt), "completion": assistant(r["response"])} for r in rows
    ]


def dpo_records(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """TRL's conversational preference format: prompt / chosen / rejected."""
    return [
        {
            "prompt": prompt_messages(r["prompt"], system_prompt),
            "chosen": assistant(r["chosen"]),
            "rejected": assistant(r["rejected"]),
        }
        for r in rows
    ]


def grpo_records(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """TRL's conversational prompt-only format, with the ground truth the rewards read."""
    return [{"prompt": prompt_messages(r["prompt"], system_prompt), GROUND_TRUTH: ground_truth(r)} for r in rows]


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the plain layout the local backend prompts with.

    Returns True when it had to. The tokenizer is saved with the trained model, so the model
    is later prompted exactly as it was trained.
    """
    if has_chat_template(tokenizer):
        return False
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return True


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The chat template already writes any BOS; adding special tokens again would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_pair(tokenizer: Any, prompt: list[dict[str, str]], response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) for one chat turn, split where the generation prompt ends.

    The prompt is rendered with the generation prompt, exactly as the model sees it at
    inference; the completion is the rest of the full conversation's rendering (the
    response and the template's end-of-turn marker), tokenized separately so the
    boundary never merges tokens across it.
    """
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + assistant(response), tokenize=False)
    if full_text.startswith(prompt_text):
        return _encode(tokenizer, prompt_text), _encode(tokenizer, full_text[len(prompt_text) :])
    # Templates that render the last turn differently with and without a generation prompt:
    # split the full token sequence at the longest common prefix instead.
    prompt_ids, full_ids = _encode(tokenizer, prompt_text), _encode(tokenizer, full_text)
    common = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        common += 1
    return full_ids[:common], full_ids[common:]


def fit_to_length(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut an over-long pair: the completion's tail first, then the prompt's head, never to empty."""
    if len(prompt_ids) + len(completion_ids) <= max_length:
        return prompt_ids, completion_ids
    keep_completion = max(1, max_length - len(prompt_ids))
    completion_ids = completion_ids[:keep_completion]
    keep_prompt = max(1, max_length - len(completion_ids))
    return prompt_ids[-keep_prompt:], completion_ids


# The four pairings of an IOPO group, in the order the collator lays the rows out.
PAIRINGS = ("x1y1", "x1y2", "x2y2", "x2y1")


@dataclass(frozen=True)
class IOPOExample:
    """One IOPO group, tokenized: prompt and completion ids for the four pairings."""

    id: str
    sequences: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # PAIRINGS order: (prompt_ids, completion_ids)

    def num_tokens(self) -> int:
        return sum(len(p) + len(c) for p, c in self.sequences)


def iopo_examples(
    rows: list[dict[str, Any]], tokenizer: Any, system_prompt: str | None, max_length: int
) -> list[IOPOExample]:
    """Tokenize each group's x1y1, x1y2, x2y2, x2y1 (x = the full user message, y = a response)."""
    examples = []
    for row in rows:
        x = {"x1": prompt_messages(row["prompt"], system_prompt), "x2": prompt_messages(row["prompt_2"], system_prompt)}
        y = {"y1": row["response"], "y2": row["response_2"]}
        sequences = []
        for pairing in PAIRINGS:
            prompt_ids, completion_ids = tokenize_pair(tokenizer, x[pairing[:2]], y[pairing[2:]])
            prompt_ids, completion_ids = fit_to_length(prompt_ids, completion_ids, max_length)
            sequences.append((tuple(prompt_ids), tuple(completion_ids)))
        examples.append(IOPOExample(id=str(row["id"]), sequences=tuple(sequences)))
    return examples
