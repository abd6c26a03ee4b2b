"""Exports load in the tools they are for: `datasets` + TRL (trained one DPO step), LLaMA-Factory's schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trace_builder.errors import UserError
from trace_builder.report.export import SPLITS, export, iopo_pairs
from trace_builder.testing.tiny import synthetic_rows, write_dataset


def make_run(root: Path, rows: int = 3, empty: tuple[str, ...] = ()) -> Path:
    """A run folder holding only final/{sft,dpo,iopo,eval}, in the final schemas."""
    for split in SPLITS:
        write_dataset(root / "final" / split, split, [] if split in empty else synthetic_rows(split, rows, seed=1))
    return root


@pytest.fixture()
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- IOPO groups as stock preference pairs ---


def test_iopo_group_is_two_pairs_each_preferring_the_answer_to_its_own_instruction():
    row = synthetic_rows("iopo", 1)[0]
    first, second = iopo_pairs(row)
    assert (first["prompt"], first["chosen"], first["rejected"]) == (row["prompt"], row["response"], row["response_2"])
    assert (second["prompt"], second["chosen"], second["rejected"]) == (
        row["prompt_2"],
        row["response_2"],
        row["response"],
    )


# --- TRL ---


def test_trl_files_load_with_datasets_and_trl_takes_them(run_dir, tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from trace_builder.testing.tiny import build_tokenizer

    written = export(run_dir, "trl", tmp_path / "trl")
    assert written == {"sft.jsonl": 3, "eval.jsonl": 3, "dpo.jsonl": 3, "iopo.jsonl": 6}
    tokenizer = build_tokenizer()
    for name, keys in [
        ("sft", {"prompt", "completion"}),
        ("eval", {"prompt", "completion"}),
        ("dpo", {"prompt", "chosen", "rejected"}),
        ("iopo", {"prompt", "chosen", "rejected"}),
    ]:
        data = load_dataset("json", data_files=str(tmp_path / "trl" / f"{name}.jsonl"), split="train")
        assert set(data.column_names) == keys and len(data) == written[f"{name}.jsonl"]
        assert is_conversational(data[0])
        text = maybe_apply_chat_template(data[0], tokenizer)
        assert text["prompt"].startswith("<|system|> ") and text["prompt"].endswith("<|assistant|> ")
    iopo = read_jsonl(tmp_path / "trl" / "iopo.jsonl")
    rows = synthetic_rows("iopo", 3, seed=1)
    assert iopo[1]["prompt"][-1]["content"] == rows[0]["prompt_2"]
    assert iopo[1]["chosen"][0]["content"] == rows[0]["response_2"]


def test_one_dpo_step_on_the_iopo_pairs(run_dir, tmp_path):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trace_builder.testing.tiny import save_tiny_model

    export(run_dir, "trl", tmp_path / "trl")
    data = load_dataset("json", data_files=str(tmp_path / "trl" / "iopo.jsonl"), split="train")
    model_dir = save_tiny_model(tmp_path / "tiny")  # DPOTrainer loads its reference model from the path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model gains nothing from threads on a shared box
    try:
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=DPOConfig(
                output_dir=str(tmp_path / "out"),
                max_steps=1,
                per_device_train_batch_size=2,
                max_length=64,
                report_to="none",
                use_cpu=True,
                save_strategy="no",
                logging_steps=1,
            ),
            train_dataset=data,
            processing_class=tokenizer,
        )
        result = trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert result.global_step == 1 and result.training_loss > 0


# --- LLaMA-Factory: its documented dataset_info schema and sharegpt converter rules ---

# data/README.md and data/parser.py (DatasetAttr): what a dataset_info entry may hold.
LF_ENTRY_KEYS = {"file_name", "formatting", "ranking", "columns", "tags", "split", "subset", "folder", "num_samples"}
LF_SHAREGPT_COLUMNS = {"messages", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag"}


def llamafactory_problem(example: dict, entry: dict) -> str | None:
    """Why LLaMA-Factory's sharegpt converter would skip `example` (None: it is accepted).

    Its rules, with the default tags: turns alternate human (odd) / gpt (even); a ranking row's
    conversation has an odd number of turns (it ends with the human) and chosen / rejected are
    gpt turns; a plain row has an even number.
    """
    columns = entry["columns"]
    messages = example[columns.get("messages", "conversations")]
    for i, message in enumerate(messages):
        if message["from"] not in (("human", "observation"), ("gpt", "function_call"))[i % 2]:
            return "Invalid role tag"
    ranking = entry.get("ranking", False)
    if (len(messages) % 2 == 0) == ranking:
        return "Invalid message count"
    if ranking:
        for side in ("chosen", "rejected"):
            if not isinstance(example[columns[side]], dict) or example[columns[side]]["from"] != "gpt":
                return "Invalid role tag"
    return None


def check_llamafactory_folder(folder: Path) -> dict[str, list[dict]]:
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    loaded = {}
    for name, entry in info.items():
        assert set(entry) <= LF_ENTRY_KEYS and entry["formatting"] == "sharegpt"
        assert set(entry["columns"]) <= LF_SHAREGPT_COLUMNS
        loaded[name] = read_jsonl(folder / entry["file_name"])
        for example in loaded[name]:
            assert set(entry["columns"].values()) <= set(example)
            assert isinstance(example[entry["columns"]["system"]], str)
    return loaded


def test_llamafactory_export_follows_its_schema_and_converter(run_dir, tmp_path):
    from datasets import load_dataset

    written = export(run_dir, "llamafactory", tmp_path / "lf")
    assert written == {"trace_sft.jsonl": 3, "trace_eval.jsonl": 3, "trace_dpo.jsonl": 3, "trace_iopo.jsonl": 6}
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    loaded = check_llamafactory_folder(tmp_path / "lf")
    for name, examples in loaded.items():
        assert all(llamafactory_problem(e, info[name]) is None for e in examples), name
        # LLaMA-Factory reads local files with `datasets`' json builder
        assert len(load_dataset("json", data_files=str(tmp_path / "lf" / f"{name}.jsonl"), split="train")) == len(
            examples
        )
    assert info["trace_iopo"]["ranking"] is True and info["trace_sft"].get("ranking", False) is False


def test_fork_layout_is_kept_under_its_own_name(run_dir, tmp_path):
    written = export(run_dir, "llamafactory", tmp_path / "fork", iopo_layout="fork")
    assert "trace_iopo_fork.jsonl" in written and "trace_iopo.jsonl" not in written
    info = json.loads((tmp_path / "fork" / "dataset_info.json").read_text())
    group = read_jsonl(tmp_path / "fork" / "trace_iopo_fork.jsonl")[0]
    assert [t["from"] for t in group["conversations"]] == ["human", "human"]
    # why it is not the default: stock LLaMA-Factory skips every such row
    assert llamafactory_problem(group, info["trace_iopo_fork"]) == "Invalid role tag"
    with pytest.raises(UserError, match="llamafactory"):
        export(run_dir, "trl", tmp_path / "x", iopo_layout="fork")


# --- TRACE JSONL, any split ---


@pytest.mark.parametrize("split", SPLITS)
def test_trace_jsonl_exports_any_split(run_dir, tmp_path, split):
    dest = tmp_path / f"{split}.jsonl"
    assert export(run_dir, "trace-jsonl", dest, split=split) == {str(dest): 3}
    record = read_jsonl(dest)[0]
    assert {"id", "messages", "constraints_splits", "levels2", "constraints_num"} <= set(record)
    roles = [m["role"] for m in record["messages"]]
    assert roles == (["system", "user", "assistant"] if split == "sft" else ["system", "user"])


# --- empty splits ---


def test_empty_split_refuses_unless_allowed(tmp_path):
    run_dir = make_run(tmp_path / "run", empty=("eval",))
    with pytest.raises(UserError, match="final/eval .*--allow-empty"):
        export(run_dir, "trl", tmp_path / "trl")
    assert not (tmp_path / "trl").exists()  # nothing written
    written = export(run_dir, "trl", tmp_path / "trl", allow_empty=True)
    assert written["eval.jsonl"] == 0 and written["sft.jsonl"] == 3
    # a split folder missing from a finished run (no file for 0 rows) reads the same way
    missing = make_run(tmp_path / "run2")
    for part in (missing / "final" / "iopo").iterdir():
        part.unlink()
    (missing / "final" / "iopo").rmdir()
    with pytest.raises(UserError, match="final/iopo"):
        export(missing, "llamafactory", tmp_path / "lf")


def test_cli_warns_and_exits_non_zero_on_an_empty_split(tmp_path):
    run_dir = make_run(tmp_path / "run", empty=("sft",))
    args = [sys.executable, "-m", "trace_builder", "export", "--out", str(run_dir), "--format", "trace-jsonl"]
    args += ["--split", "sft", "--dest", str(tmp_path / "sft.jsonl")]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--allow-empty" in refused.stderr and "Traceback" not in refused.stderr
    allowed = subprocess.run(args + ["--allow-empty"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0 and "empty" in allowed.stderr
