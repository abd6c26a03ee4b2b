"""DPO applies label_smoothing as IOPO does (conservative DPO), instead of TRL's sigmoid loss ignoring it."""

import pytest
import torch

from trace_builder.testing.tiny import save_tiny_model, synthetic_rows, write_dataset
from trace_builder.train.config import load_config
from trace_builder.train.data import read_rows
from trace_builder.train.runner import build_dpo_trainer, load_model, load_tokenizer

ROWS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dpo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    model = save_tiny_model(root / "model")
    data = write_dataset(root / "final" / "dpo", "dpo", synthetic_rows("dpo", ROWS))
    return model, data, root


def _loss_and_margin(dpo_data, label_smoothing: float) -> tuple[float, float]:
    """Loss on one fixed batch with the policy moved off the reference, and the mean reward margin b*D."""
    model_dir, data, root = dpo_data
    config = load_config(
        "dpo",
        data=str(data),
        model=str(model_dir),
        output=str(root / f"out-{label_smoothing}"),
        max_steps=1,
        per_device_train_batch_size=ROWS,
        max_length=128,
        device="cpu",
        label_smoothing=label_smoothing,
    )
    trainer = build_dpo_trainer(
        config, load_model(config.model, config), load_tokenizer(config.model), read_rows(config.data, "dpo")
    )
    # A fresh LoRA adapter is the identity (margin 0, where smoothing cannot show): move it, the same way each time.
    torch.manual_seed(7)
    for name, param in trainer.model.named_parameters():
        if "lora_" in name:
            param.data.normal_(0, 0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    return loss, trainer._metrics["train"]["rewards/margins"][-1]


def test_label_smoothing_changes_the_dpo_loss_as_conservative_dpo(dpo_data):
    plain, margin = _loss_and_margin(dpo_data, 0.0)
    smoothed, margin_again = _loss_and_margin(dpo_data, 0.2)
    assert abs(margin) > 1e-3  # the policy really differs from the reference
    assert margin_again == pytest.approx(margin, rel=1e-5)
    assert smoothed != pytest.approx(plain, abs=1e-4)
    # conservative DPO: mean[(1-e)*-logsig(bD) + e*-logsig(-bD)] = mean[-logsig(bD)] + e*mean(bD), as in iopo_loss
    assert smoothed == pytest.approx(plain + 0.2 * margin, rel=1e-4, abs=1e-5)


def test_label_smoothing_is_refused_where_nothing_applies_it(tmp_path):
    from trace_builder.errors import UserError

    with pytest.raises(UserError, match="label_smoothing applies to dpo and iopo only"):
        load_config("sft", data=str(tmp_path), model=str(tmp_path), output=str(tmp_path), label_smoothing=0.1)
    assert load_config("dpo", data=str(tmp_path), model=str(tmp_path), output=str(tmp_path), label_smoothing=0.1)
