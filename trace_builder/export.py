"""Export final datasets to the layouts other tools read: TRACE JSONL, LLaMA-Factory, TRL."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from trace_builder.errors import UserError
from trace_builder.records import SYSTEM_PROMPT, build_user_prompt, number_constraints
from trace_builder.store import read_parquet_dir
from trace_builder.taxonomy import dimension_for_label

FORMATS = ("trace-jsonl", "llamafactory", "trl")


def _load(run_dir: Path, name: str) -> pd.DataFrame:
    frame = read_parquet_dir(run_dir / "final" / name)
    if frame.empty and not (run_dir / "final" / name).is_dir():
        raise UserError(f"{run_dir}/final/{name} does not exist: run `trace-build run --out {run_dir}` first")
    return frame


def _write_jsonl(path: Path, records: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def trace_record(row: dict) -> dict:
    """One row in exactly the official TRACE eval file's fields and user-message layout."""
    constraints = list(row["constraints"])
    splits = number_constraints(constraints)
    labels = []
    for dim_id in row["dimensions"]:
        dim = dimension_for_label(dim_id)
        labels.append(dim.label_zh if dim else dim_id)
    return {
        "id": row["id"],
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_user_prompt(row["description"], constraints, row["input"])},
        ],
        "type": "trace",
        "description": row["description"],
        "constraints": "\n".join(splits),
        "input": row["input"],
        "constraints_num": len(constraints),
        "constraints_splits": splits,
        "levels2": labels,
        "category": "trace-build",
    }


def export_trace_jsonl(run_dir: Path, dest: Path, dataset: str = "eval") -> dict[str, int]:
    frame = _load(run_dir, dataset)
    return {str(dest): _write_jsonl(dest, (trace_record(r) for r in frame.to_dict("records")))}


def export_llamafactory(run_dir: Path, dest: Path) -> dict[str, int]:
    """sharegpt files + dataset_info.json; IOPO in the released two-human-turn layout.

    IOPO: conversations [x1, x2] (two consecutive human turns), chosen = y1, rejected = y2,
    as the authors' data has it (y2 is the right answer for x2, despite the name).
    """
    dest.mkdir(parents=True, exist_ok=True)
    written, info = {}, {}
    sft = _load(run_dir, "sft")
    written["trace_sft.jsonl"] = _write_jsonl(
        dest / "trace_sft.jsonl",
        (
            {
                "conversations": [{"from": "human", "value": r["prompt"]}, {"from": "gpt", "value": r["response"]}],
                "system": SYSTEM_PROMPT,
            }
            for r in sft.to_dict("records")
        ),
    )
    info["trace_sft"] = {
        "file_name": "trace_sft.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
    }
    dpo = _load(run_dir, "dpo")
    written["trace_dpo.jsonl"] = _write_jsonl(
        dest / "trace_dpo.jsonl",
        (
            {
                "conversations": [{"from": "human", "value": r["prompt"]}],
                "chosen": {"from": "gpt", "value": r["chosen"]},
                "rejected": {"from": "gpt", "value": r["rejected"]},
                "system": SYSTEM_PROMPT,
            }
            for r in dpo.to_dict("records")
        ),
    )
    info["trace_dpo"] = {
        "file_name": "trace_dpo.jsonl",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    }
    iopo = _load(run_dir, "iopo")
    written["trace_iopo.jsonl"] = _write_jsonl(
        dest / "trace_iopo.jsonl",
        (
            {
                "conversations": [{"from": "human", "value": r["prompt"]}, {"from": "human", "value": r["prompt_2"]}],
                "chosen": {"from": "gpt", "value": r["response"]},
                "rejected": {"from": "gpt", "value": r["response_2"]},
                "system": SYSTEM_PROMPT,
            }
            for r in iopo.to_dict("records")
        ),
    )
    info["trace_iopo"] = dict(info["trace_dpo"], file_name="trace_iopo.jsonl")
    (dest / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return written


def export_trl(run_dir: Path, dest: Path) -> dict[str, int]:
    """Conversational TRL files: sft (prompt/completion), dpo and iopo (prompt/chosen/rejected)."""
    dest.mkdir(parents=True, exist_ok=True)

    def user(text: str) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]

    def assistant(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    written = {}
    sft = _load(run_dir, "sft")
    written["sft.jsonl"] = _write_jsonl(
        dest / "sft.jsonl",
        ({"prompt": user(r["prompt"]), "completion": assistant(r["response"])} for r in sft.to_dict("records")),
    )
    dpo = _load(run_dir, "dpo")
    written["dpo.jsonl"] = _write_jsonl(
        dest / "dpo.jsonl",
        (
            {"prompt": user(r["prompt"]), "chosen": assistant(r["chosen"]), "rejected": assistant(r["rejected"])}
            for r in dpo.to_dict("records")
        ),
    )
    return written


def export(run_dir: Path, fmt: str, dest: Path) -> dict[str, int]:
    if fmt == "trace-jsonl":
        return export_trace_jsonl(run_dir, dest)
    if fmt == "llamafactory":
        return export_llamafactory(run_dir, dest)
    if fmt == "trl":
        return export_trl(run_dir, dest)
    raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
