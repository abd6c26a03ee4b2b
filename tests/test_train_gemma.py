"""A few real LoRA steps of IOPO on the embedded gemma-3-270m (slow: loads and trains a 270M model on CPU)."""

import json

import pytest
import torch

from tests.conftest import quick_train_config
from trace_builder.testing.tiny import synthetic_rows, write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_dir():
    local = pytest.importorskip("trace_builder.llm.local")
    return local.ensure_embedded_model()


def test_iopo_lora_steps_on_gemma(gemma_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from trace_builder.train.runner import run_training

    rows = synthetic_rows("iopo", 1, prompt_words=10, response_words=9)
    data = write_dataset(tmp_path / "final" / "iopo", "iopo", rows)
    out = tmp_path / "out"
    config = quick_train_config(
        "iopo",
        data,
        "gemma3-270m",
        out,
        max_steps=3,
        learning_rate=2e-4,
        per_device_train_batch_size=1,
        max_length=96,
        logprob_chunk_tokens=64,
    )
    metrics = run_training(config)

    assert metrics["steps"] == 3 and metrics["model_path"] == str(gemma_dir)
    assert metrics["first_loss"] == pytest.approx(0.6931, abs=1e-3)  # a fresh adapter is the reference
    assert metrics["final_loss"] < metrics["first_loss"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.config.model_type.startswith("gemma3")


def test_chunked_logps_match_gemma_logits(gemma_dir):
    from transformers import AutoModelForCausalLM

    from trace_builder.train.iopo import group_logps
    from trace_builder.train.logprobs import IGNORE_INDEX, naive_sequence_logps

    model = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    input_ids = torch.randint(10, 5000, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    labels = input_ids.clone()
    labels[:, :5] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    with torch.no_grad():
        chunked, _ = group_logps(model, batch, chunk_tokens=8)
        naive, _ = naive_sequence_logps(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
    torch.testing.assert_close(chunked[0], naive, rtol=1e-4, atol=1e-3)


def test_grpo_smoke_on_gemma_with_the_command_line(gemma_dir, tmp_path):
    """`trace-build train --method grpo` as a user runs it: two steps, the reward on the console line."""
    from tests.test_cli import cli

    data = write_dataset(tmp_path / "final" / "sft", "sft", synthetic_rows("sft", 2, response_words=12))
    out = tmp_path / "out"
    config = tmp_path / "grpo.yaml"
    config.write_text("per_device_train_batch_size: 4\nlogging_steps: 1\nsave_merged: false\n")
    done = cli(
        "train", "--method", "grpo", "--data", str(data), "--model", "gemma3-270m", "--output", str(out),
        "--config", str(config), "--max-steps", "2", "--num-generations", "2", "--max-completion-length", "16",
        "--device", "cpu", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reward" in done.stdout and "checks" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["method"] == "grpo"
    assert 0.0 <= metrics["final_reward"] <= 1.0
    print(f"grpo smoke: {metrics['train_runtime_s']} s for 2 steps, reward {metrics['first_reward']} -> "
          f"{metrics['final_reward']}, peak {metrics['peak_memory_bytes'] / 2**30:.2f} GiB")  # fmt: skip
