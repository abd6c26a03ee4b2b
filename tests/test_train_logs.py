"""Training: `--report-to` as transformers takes it, and one readable line per logging step instead of raw dicts."""

from __future__ import annotations

import pytest

from tests.conftest import quick_train_config
from trace_builder.errors import UserError
from trace_builder.train.config import load_config
from trace_builder.train.logs import step_line


def test_step_line_shows_the_key_numbers_of_each_method():
    sft = {"loss": 2.345678, "grad_norm": 1.234, "learning_rate": 5e-5, "mean_token_accuracy": 0.4, "num_tokens": 9}
    assert step_line(10, 120, 0.25, sft) == (
        "step 10/120  epoch 0.25  loss 2.3457  token acc 0.40  grad 1.23  lr 5.00e-05"
    )
    dpo = {"loss": 0.69, "rewards/margins": 0.1234, "rewards/accuracies": 0.75, "logps/chosen": -40.0}
    assert step_line(3, -1, None, dpo) == "step 3  loss 0.6900  margin 0.123  acc 0.75"
    iopo = {"loss": 0.7, "margins/total": -0.5, "accuracies/total": 0.5, "margins/pair1": 1.0}
    assert "margin -0.500  acc 0.50" in step_line(1, 2, 0.5, iopo)
    done = {"train_runtime": 12.34, "train_loss": 0.5, "train_samples_per_second": 3.21, "total_flos": 1.0}
    assert step_line(2, 2, 1.0, done) == "done: 2 steps in 12.3 s, mean loss 0.5000, 3.21 examples/s"


def test_report_to_defaults_to_none_and_is_checked_before_training():
    base = dict(data="d", model="m", output="o")
    assert load_config("sft", **base).report_to_list() == []
    assert load_config("sft", **base, report_to="none").report_to_list() == []
    assert load_config("dpo", **base, report_to="all").report_to_list() == ["all"]
    with pytest.raises(UserError, match="unknown report_to tensorbord: use none, all or any of .*tensorboard"):
        load_config("sft", **base, report_to="tensorbord")
    from transformers.integrations import get_available_reporting_integrations

    absent = [n for n in ("wandb", "mlflow", "tensorboard") if n not in get_available_reporting_integrations()]
    if absent:
        with pytest.raises(UserError, match=f"report_to {absent[0]}: not installed here.*pip install {absent[0]}"):
            load_config("sft", **base, report_to=f"none,{absent[0]}")


def test_training_prints_readable_lines_not_dicts(tmp_path, capsys):
    import torch

    from trace_builder.testing.tiny import save_tiny_model, synthetic_rows, write_dataset
    from trace_builder.train.runner import common_args, run_training

    data = write_dataset(tmp_path / "sft", "sft", synthetic_rows("sft", 4))
    config = quick_train_config(
        "sft",
        data,
        save_tiny_model(tmp_path / "model"),
        tmp_path / "out",
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=64,
        save_merged=False,
    )
    assert common_args(config)["report_to"] == "none"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(config)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "step 1/2  epoch" in out and "step 2/2" in out and "loss " in out and "done: 2 steps in" in out
    assert "{'loss'" not in out and "'learning_rate'" not in out
