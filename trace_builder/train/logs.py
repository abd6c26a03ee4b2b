"""Readable training logs: one line per logging step with the key numbers, instead of the Trainer's raw dicts."""

from __future__ import annotations

from typing import Any

# (log keys in order of preference, short name, format): the first key present is shown.
# SFT logs mean_token_accuracy; TRL's DPO rewards/*; our IOPO Trainer margins/* and accuracies/*;
# TRL's GRPO reward, rewards/<function>/mean, completions/* and kl.
KEY_NUMBERS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("loss",), "loss", "{:.4f}"),
    (("rewards/margins", "margins/total"), "margin", "{:.3f}"),
    (("rewards/accuracies", "accuracies/total"), "acc", "{:.2f}"),
    (("mean_token_accuracy",), "token acc", "{:.2f}"),
    # GRPO: the reward, each reward function's part, the answers' length, the KL to the start
    (("reward",), "reward", "{:.3f}"),
    (("rewards/constraint_reward/mean",), "checks", "{:.3f}"),
    (("rewards/judge_reward/mean",), "judge", "{:.3f}"),
    (("completions/mean_length",), "length", "{:.0f}"),
    (("kl",), "kl", "{:.4f}"),
    (("grad_norm",), "grad", "{:.3g}"),
    (("learning_rate",), "lr", "{:.2e}"),
    (("train_tokens_per_second",), "tokens/s", "{:.0f}"),
)
# Only the Trainer's closing record has train_loss (step records carry train_runtime too).
SUMMARY_KEY = "train_loss"


def _first(logs: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = logs.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def step_line(step: int, max_steps: int, epoch: float | None, logs: dict[str, Any]) -> str:
    """'step 10/120  epoch 0.25  loss 0.6931  margin 0.120  acc 0.75  grad 1.23  lr 5.00e-06'."""
    if SUMMARY_KEY in logs:
        runtime = logs.get("train_runtime")
        return (
            f"done: {step} steps"
            + (f" in {float(runtime):.1f} s" if isinstance(runtime, (int, float)) else "")
            + f", mean loss {float(logs[SUMMARY_KEY]):.4f}"
            + (
                f", {float(logs['train_samples_per_second']):.3g} examples/s"
                if "train_samples_per_second" in logs
                else ""
            )
        )
    parts = [f"step {step}/{max_steps}" if max_steps and max_steps > 0 else f"step {step}"]
    if epoch is not None:
        parts.append(f"epoch {epoch:.2f}")
    for keys, name, fmt in KEY_NUMBERS:
        value = _first(logs, keys)
        if value is not None:
            parts.append(f"{name} {fmt.format(value)}")
    return "  ".join(parts)


def use_readable_progress(trainer: Any) -> None:
    """Swap the Trainer's log printer (raw dicts, under the tqdm bar or bare) for one line per logging step."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    def line(state: Any, logs: dict[str, Any] | None) -> str | None:
        if not state.is_world_process_zero or not logs:
            return None
        return step_line(state.global_step, state.max_steps, state.epoch, logs)

    class ReadableProgress(ProgressCallback):
        """The tqdm bar, with a readable line written above it per logging step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            text = line(state, logs)
            if text and self.training_bar is not None:
                self.training_bar.write(text)

    class ReadablePrinter(TrainerCallback):
        """No bar (disable_tqdm): the readable lines only."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            text = line(state, logs)
            if text:
                print(text, flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ReadablePrinter() if trainer.args.disable_tqdm else ReadableProgress())
