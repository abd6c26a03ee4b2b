"""A tiny random Qwen2 (local tokenizer, nothing downloaded) trains with each method; the reference modes agree."""

import json

import pytest
import torch

from tests.conftest import quick_train_config
from trace_builder.testing.tiny import save_tiny_model, synthetic_rows, write_dataset
from trace_builder.train.iopo import IOPOTrainer
from trace_builder.train.runner import build_iopo_trainer, load_model, load_tokenizer, run_training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize("method", ["sft", "dpo", "iopo"])
def test_each_method_trains_and_the_loss_goes_down(method, tiny_model, tmp_path):
    data = write_dataset(tmp_path / "final" / method, method, synthetic_rows(method, 8))
    steps = 30 if method == "iopo" else 12
    out = tmp_path / "out"
    metrics = run_training(quick_train_config(method, data, tiny_model, out, max_steps=steps))

    assert metrics["steps"] == steps
    assert metrics["final_loss"] < metrics["first_loss"] - 0.05, metrics
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0
    written = json.loads((out / "metrics.json").read_text())
    assert written["final_loss"] == metrics["final_loss"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in log) == steps
    assert (out / "train_config.yaml").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "merged" / "config.json").is_file()
    if method == "iopo":
        last_step = [r for r in log if "loss" in r][-1]
        assert {"rewards/x1y1", "margins/pair1", "margins/pair2", "accuracies/pair1", "accuracies/pair2"} <= set(
            last_step
        )
        assert (out / "reference_logps.parquet").is_file()


def test_merged_model_equals_base_plus_adapter(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_dataset(tmp_path / "final" / "iopo", "iopo", synthetic_rows("iopo", 8))
    out = tmp_path / "out"
    run_training(quick_train_config("iopo", data, tiny_model, out, max_steps=5, gradient_checkpointing=True))
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.randint(0, 80, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        assert not torch.allclose(base(ids).logits, merged(ids).logits)  # training did change the weights


def _trainer(config) -> IOPOTrainer:
    tokenizer = load_tokenizer(config.model)
    return build_iopo_trainer(config, load_model(config.model, config), tokenizer, _rows(config))


def _rows(config):
    from trace_builder.train.data import read_rows

    return read_rows(config.data, "iopo")


def test_precomputed_and_adapter_reference_give_the_same_loss(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "final" / "iopo", "iopo", synthetic_rows("iopo", 6))
    pre = _trainer(quick_train_config("iopo", data, tiny_model, tmp_path / "pre", reference="precompute"))
    live = _trainer(quick_train_config("iopo", data, tiny_model, tmp_path / "live", reference="adapter"))
    assert pre.reference_source == "computed"
    # move both policies away from the reference the same way (a fresh LoRA adapter is the identity)
    for trainer in (pre, live):
        torch.manual_seed(7)
        for name, param in trainer.model.named_parameters():
            if "lora_" in name:
                param.data.normal_(0, 0.5)
    batch_pre = pre.data_collator(pre.train_dataset[:6])
    batch_live = live.data_collator(live.train_dataset[:6])
    assert "ref_logps" in batch_pre and "ref_logps" not in batch_live
    with torch.no_grad():
        loss_pre = pre.compute_loss(pre.model, batch_pre)
        loss_live = live.compute_loss(live.model, batch_live)
    assert abs(loss_pre.item() - 0.6931) > 1e-3  # the policy really differs from the reference
    torch.testing.assert_close(loss_pre, loss_live, rtol=1e-5, atol=1e-6)


def test_reference_file_is_reused_on_restart_and_redone_when_data_changes(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "final" / "iopo", "iopo", synthetic_rows("iopo", 4))
    config = quick_train_config("iopo", data, tiny_model, tmp_path / "out")
    first = _trainer(config)
    again = _trainer(config)
    assert (first.reference_source, again.reference_source) == ("computed", "reused")
    assert again.data_collator.reference_logps == first.data_collator.reference_logps
    write_dataset(data, "iopo", synthetic_rows("iopo", 4, seed=1))
    assert _trainer(config).reference_source == "computed"


def test_full_finetune_iopo_with_precomputed_reference(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "final" / "iopo", "iopo", synthetic_rows("iopo", 8))
    out = tmp_path / "out"
    metrics = run_training(
        quick_train_config("iopo", data, tiny_model, out, lora=False, max_steps=15, learning_rate=1e-3)
    )
    assert metrics["final_loss"] < metrics["first_loss"]
    assert not (out / "adapter").exists() and (out / "merged" / "config.json").is_file()


def test_grpo_steps_with_the_checks_as_reward_and_logs_them(tiny_model, tmp_path, capsys):
    # word_count max 8: random answers of up to 12 tokens meet it sometimes, so the reward varies
    rows = synthetic_rows("sft", 4, response_words=8)
    data = write_dataset(tmp_path / "final" / "sft", "sft", rows)
    out = tmp_path / "out"
    config = quick_train_config(
        "grpo",
        data,
        tiny_model,
        out,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=12,
        learning_rate=1e-4,
        save_merged=False,
    )
    metrics = run_training(config)

    assert metrics["steps"] == 2 and metrics["first_reward"] is not None
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "reward" in r]
    assert len(steps) == 2 and all("rewards/constraint_reward/mean" in r for r in steps)
    assert all(0.0 <= r["reward"] <= 1.0 for r in steps)
    assert "reward " in capsys.readouterr().out  # the readable console line names it
