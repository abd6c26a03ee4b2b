"""Parquet -> examples, the four-sequence collator, settings and the clear errors of `trace-build train`."""

import pytest
import typer
from typer.testing import CliRunner

from trace_builder.chat_format import PLAIN_CHAT_TEMPLATE
from trace_builder.errors import UserError
from trace_builder.records import SYSTEM_PROMPT
from trace_builder.testing.tiny import build_tokenizer, synthetic_rows, write_dataset
from trace_builder.train.config import load_config
from trace_builder.train.data import (
    PAIRINGS,
    ensure_chat_template,
    fit_to_length,
    iopo_examples,
    read_rows,
    tokenize_pair,
)
from trace_builder.train.iopo import IOPOCollator
from trace_builder.train.logprobs import IGNORE_INDEX
from trace_builder.train.runner import resolve_model_path


@pytest.fixture()
def datasets(tmp_path):
    return {m: write_dataset(tmp_path / "final" / m, m, synthetic_rows(m, 3)) for m in ("sft", "dpo", "iopo")}


def test_reads_rows_for_each_method(datasets):
    for method, folder in datasets.items():
        rows = read_rows(folder, method)
        assert len(rows) == 3 and rows[0]["id"] == "ex00000"
    assert read_rows(datasets["iopo"], "iopo", limit=2)[1]["prompt_2"].endswith("reply as a pirate")


def test_method_data_mismatch_names_the_problem_and_the_fix(datasets):
    with pytest.raises(UserError) as err:
        read_rows(datasets["sft"], "iopo")
    message = str(err.value)
    assert "prompt_2/response_2" in message and "final/iopo" in message and "sft" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="chosen/rejected.*final/dpo"):
        read_rows(datasets["iopo"], "dpo")
    # iopo data has prompt/response, so it can feed SFT
    assert len(read_rows(datasets["iopo"], "sft")) == 3


def test_missing_or_empty_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_rows(tmp_path / "nope", "sft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .parquet files"):
        read_rows(tmp_path / "empty", "sft")


def test_missing_model_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_path(str(tmp_path / "no-model"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(UserError, match="config.json"):
        resolve_model_path(str(tmp_path / "not-a-model"))


def test_tokenize_pair_splits_at_the_generation_prompt():
    tok = build_tokenizer()
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "write a poem"}]
    prompt_ids, completion_ids = tokenize_pair(tok, messages, "one two")
    assert tok.decode(prompt_ids).endswith("<|assistant|>")
    assert tok.decode(completion_ids).split() == ["one", "two", "<|end|>"]


def test_fallback_chat_template_for_tokenizers_without_one():
    tok = build_tokenizer()
    tok.chat_template = None
    assert ensure_chat_template(tok) and tok.chat_template == PLAIN_CHAT_TEMPLATE
    assert not ensure_chat_template(tok)


def test_fit_to_length_cuts_completion_tail_then_prompt_head():
    assert fit_to_length([1, 2, 3], [4, 5], 10) == ([1, 2, 3], [4, 5])
    assert fit_to_length([1, 2, 3], [4, 5, 6, 7], 5) == ([1, 2, 3], [4, 5])
    assert fit_to_length([1, 2, 3, 4, 5], [6, 7], 3) == ([4, 5], [6])


def test_collator_lays_out_four_blocks_with_completion_labels(datasets):
    tok = build_tokenizer()
    examples = iopo_examples(read_rows(datasets["iopo"], "iopo"), tok, None, max_length=512)
    collator = IOPOCollator(tok.pad_token_id)
    batch = collator(examples[:2])
    assert batch["input_ids"].shape[0] == 8 and "ref_logps" not in batch
    for block in range(len(PAIRINGS)):
        for b, ex in enumerate(examples[:2]):
            row = block * 2 + b
            prompt, completion = ex.sequences[block]
            n = len(prompt) + len(completion)
            assert batch["input_ids"][row, :n].tolist() == list(prompt + completion)
            assert (batch["labels"][row, : len(prompt)] == IGNORE_INDEX).all()
            assert batch["labels"][row, len(prompt) : n].tolist() == list(completion)
            assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
            assert batch["attention_mask"][row].sum().item() == n
    # x1y1 and x1y2 share the prompt x1; x2y2 and x1y2 share the response y2
    assert examples[0].sequences[0][0] == examples[0].sequences[1][0]
    assert examples[0].sequences[1][1] == examples[0].sequences[2][1]
    collator.reference_logps = {ex.id: (1.0, 2.0, 3.0, 4.0) for ex in examples}
    assert collator(examples[:2])["ref_logps"].shape == (2, 4)


def test_config_defaults_are_the_papers(tmp_path):
    sft, dpo, iopo = (load_config(m) for m in ("sft", "dpo", "iopo"))
    assert sft.learning_rate == 1e-4 and dpo.learning_rate == 5e-6 and iopo.learning_rate == 5e-6
    assert iopo.beta == 0.1 and dpo.beta == 0.1 and sft.num_train_epochs == 3 and iopo.lora
    user = tmp_path / "mine.yaml"
    user.write_text("learning_rate: 2.0e-5\nbeta: 0.2\n")
    mine = load_config("iopo", user, beta=0.5)
    assert mine.learning_rate == 2e-5 and mine.beta == 0.5


def test_config_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1\n")
    with pytest.raises(UserError, match="unknown training setting.*learning_rat"):
        load_config("sft", bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("sft", broken)
    with pytest.raises(UserError, match="unknown training method"):
        load_config("ppo")
    with pytest.raises(UserError, match="needs LoRA"):
        load_config("iopo", reference="adapter", lora=False)


def test_cli_reports_mismatch_as_user_error(datasets, tmp_path):
    from trace_builder.train.cli import train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands, so `train` stays a sub-command
    args = [
        "train",
        "--method",
        "iopo",
        "--data",
        str(datasets["sft"]),
        "--model",
        str(tmp_path / "m"),
        "--output",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UserError)
    assert "final/iopo" in str(result.exception)
    assert not (tmp_path / "out").exists()  # nothing written before the input checks pass
