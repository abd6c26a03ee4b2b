"""Export final datasets to the layouts other tools read: TRACE JSONL, LLaMA-Factory, TRL."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from trace_builder.errors import UserError
from trace_builder.records import FINAL_SCHEMAS, SYSTEM_PROMPT, build_user_prompt, number_constraints
from trace_builder.run.store import atomic_file, read_parquet_dir
from trace_builder.taxonomy import dimension_for_label
from trace_builder.train.data import dpo_records, grpo_records, sft_records
from trace_builder.verify.ifeval import ifeval_ground_truth

FORMATS = ("trace-jsonl", "llamafactory", "trl", "grpo")
SPLITS = tuple(FINAL_SCHEMAS)
# pairs: each IOPO group as two preference pairs, (x1: y1 > y2) and (x2: y2 > y1): what stock DPO
# trainers read. fork: one row with x1 and x2 as two consecutive human turns, chosen y1, rejected
# y2: the layout of the IOPO authors' LLaMA-Factory fork, which stock LLaMA-Factory rejects.
IOPO_LAYOUTS = ("pairs", "fork")
# The splits each format writes (trace-jsonl and grpo: the one asked for).
FORMAT_SPLITS = {"llamafactory": SPLITS, "trl": SPLITS}


def load_split(run_dir: Path, name: str) -> pd.DataFrame:
    """One final split; a split folder that is missing from a finished run reads as 0 rows."""
    final = run_dir / "final"
    if not final.is_dir():
        raise UserError(f"{final} does not exist: run `trace-build run --out {run_dir}` first")
    frame = read_parquet_dir(final / name)
    if frame.empty:
        return FINAL_SCHEMAS[name].empty_table().to_pandas()
    return frame


def _write_jsonl(path: Path, records: Iterable[dict]) -> int:
    count = 0
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _rows(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


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


def trace_split_record(row: dict, split: str) -> dict:
    """The official layout for any split: sft rows end their messages with the answer (a chat SFT row).

    dpo and iopo rows give their instruction x1 only: the layout has no place for a pair.
    """
    record = trace_record(row)
    if split == "sft":
        record["messages"].append({"role": "assistant", "content": row["response"]})
    return record


def iopo_pairs(row: dict) -> list[dict]:
    """An IOPO group as its two preference pairs: (x1: y1 > y2) and (x2: y2 > y1)."""
    return [
        {"id": f"{row['id']}-x1", "prompt": row["prompt"], "chosen": row["response"], "rejected": row["response_2"]},
        {"id": f"{row['id']}-x2", "prompt": row["prompt_2"], "chosen": row["response_2"], "rejected": row["response"]},
    ]


def _preference_rows(split: str, frame: pd.DataFrame) -> list[dict]:
    """prompt / chosen / rejected rows of dpo, or of iopo laid out as pairs."""
    if split == "iopo":
        return [pair for row in _rows(frame) for pair in iopo_pairs(row)]
    return _rows(frame)


# --- LLaMA-Factory: sharegpt files + dataset_info.json (its data/README.md schema) ---

_SHAREGPT = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"}}
_SHAREGPT_RANKING = {
    "formatting": "sharegpt",
    "ranking": True,
    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
}


def _human(text: str) -> dict:
    return {"from": "human", "value": text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def llamafactory_sft_row(prompt: str, response: str) -> dict:
    return {"conversations": [_human(prompt), _gpt(response)], "system": SYSTEM_PROMPT}


def llamafactory_ranking_row(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "conversations": [_human(prompt)],
        "chosen": _gpt(chosen),
        "rejected": _gpt(rejected),
        "system": SYSTEM_PROMPT,
    }


def llamafactory_fork_row(row: dict) -> dict:
    """The IOPO fork's layout: x1 and x2 as two human turns, chosen y1, rejected y2 (y2 is right for x2)."""
    return {
        "conversations": [_human(row["prompt"]), _human(row["prompt_2"])],
        "chosen": _gpt(row["response"]),
        "rejected": _gpt(row["response_2"]),
        "system": SYSTEM_PROMPT,
    }


def export_llamafactory(frames: dict[str, pd.DataFrame], dest: Path, iopo_layout: str) -> dict[str, int]:
    """trace_{sft,dpo,iopo,eval}.jsonl + dataset_info.json; IOPO as pairs, or `trace_iopo_fork` in the fork layout."""
    dest.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Iterable[dict], dict]] = {
        "trace_sft": ((llamafactory_sft_row(r["prompt"], r["response"]) for r in _rows(frames["sft"])), _SHAREGPT),
        "trace_eval": ((llamafactory_sft_row(r["prompt"], r["response"]) for r in _rows(frames["eval"])), _SHAREGPT),
        "trace_dpo": (
            (llamafactory_ranking_row(r["prompt"], r["chosen"], r["rejected"]) for r in _rows(frames["dpo"])),
            _SHAREGPT_RANKING,
        ),
    }
    if iopo_layout == "fork":
        files["trace_iopo_fork"] = ((llamafactory_fork_row(r) for r in _rows(frames["iopo"])), _SHAREGPT_RANKING)
    else:
        pairs = _preference_rows("iopo", frames["iopo"])
        files["trace_iopo"] = (
            (llamafactory_ranking_row(p["prompt"], p["chosen"], p["rejected"]) for p in pairs),
            _SHAREGPT_RANKING,
        )
    written, info = {}, {}
    for name, (records, entry) in files.items():
        written[f"{name}.jsonl"] = _write_jsonl(dest / f"{name}.jsonl", records)
        info[name] = {"file_name": f"{name}.jsonl", **entry}
    (dest / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return written


def export_trl(frames: dict[str, pd.DataFrame], dest: Path) -> dict[str, int]:
    """Conversational TRL files: sft and eval (prompt/completion), dpo and iopo pairs (prompt/chosen/rejected)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "sft.jsonl": sft_records(_rows(frames["sft"]), SYSTEM_PROMPT),
        "eval.jsonl": sft_records(_rows(frames["eval"]), SYSTEM_PROMPT),
        "dpo.jsonl": dpo_records(_preference_rows("dpo", frames["dpo"]), SYSTEM_PROMPT),
        "iopo.jsonl": dpo_records(_preference_rows("iopo", frames["iopo"]), SYSTEM_PROMPT),
    }
    return {name: _write_jsonl(dest / name, records) for name, records in files.items()}


def grpo_record(row: dict) -> dict:
    """A prompt for RL: chat messages and the ground truth our rewards read (rewards.py); where
    IFEval can state some of its checks, also open-instruct's `ground_truth` and `dataset` columns
    (its IFEvalVerifier reads them as they are), else null there."""
    record = grpo_records([row], SYSTEM_PROMPT)[0]
    ifeval = ifeval_ground_truth(row.get("checks"))
    return {
        "id": row["id"],
        **record,
        "messages": record["prompt"],
        # a Python literal of a list holding one JSON object: what open-instruct's verifier parses
        "ground_truth": str([json.dumps(ifeval)]) if ifeval else None,
        "dataset": "ifeval" if ifeval else None,
    }


def check_options(fmt: str, split: str, iopo_layout: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if iopo_layout not in IOPO_LAYOUTS:
        raise UserError(f"unknown IOPO layout {iopo_layout!r}: use one of {', '.join(IOPO_LAYOUTS)}")
    if iopo_layout == "fork" and fmt != "llamafactory":
        raise UserError("--iopo-layout fork is the IOPO LLaMA-Factory fork's layout: use it with --format llamafactory")


def export(
    run_dir: Path,
    fmt: str,
    dest: Path,
    *,
    split: str = "eval",
    iopo_layout: str = "pairs",
    allow_empty: bool = False,
) -> dict[str, int]:
    """Write the export; file name -> rows. Refuses (writing nothing) when a split it reads has no rows,
    unless `allow_empty`."""
    check_options(fmt, split, iopo_layout)
    names = FORMAT_SPLITS.get(fmt, (split,))
    frames = {name: load_split(run_dir, name) for name in names}
    empty = [name for name, frame in frames.items() if frame.empty]
    if empty and not allow_empty:
        raise UserError(
            f"final/{', final/'.join(empty)} of {run_dir} has no rows: nothing written; "
            "build more rows, or pass --allow-empty to write empty files"
        )
    if fmt == "trace-jsonl":
        return {str(dest): _write_jsonl(dest, (trace_split_record(r, split) for r in _rows(frames[split])))}
    if fmt == "grpo":
        if "checks" not in frames[split]:
            raise UserError(
                f"final/{split} of {run_dir} has no checks column (built by an older trace-build): rerun the "
                "same `trace-build run` command to rebuild final/ (nothing is asked again)"
            )
        return {str(dest): _write_jsonl(dest, (grpo_record(r) for r in _rows(frames[split])))}
    if fmt == "llamafactory":
        return export_llamafactory(frames, dest, iopo_layout)
    return export_trl(frames, dest)
