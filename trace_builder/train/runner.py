"""One training job: load data and model, run SFT/DPO (TRL) or IOPO (ours), save adapter, merged model, metrics."""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from trace_builder.errors import ModelLoadError, UserError
from trace_builder.train.config import TrainConfig
from trace_builder.train.data import (
    dpo_records,
    ensure_chat_template,
    ensure_pad_token,
    grpo_records,
    iopo_examples,
    read_rows,
    sft_records,
)
from trace_builder.train.logs import use_readable_progress

EMBEDDED_MODEL_NAMES = ("gemma3-270m", "embedded")
TRAIN_LOG = "train_log.jsonl"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.yaml"


def resolve_model_path(model: str) -> str:
    """A local model dir, the embedded model ("gemma3-270m"), or a hub id already in the local cache."""
    if model in EMBEDDED_MODEL_NAMES:
        from trace_builder.llm.local import ensure_embedded_model

        return str(ensure_embedded_model())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model path {path} has no config.json: pass a Hugging Face model directory")
        return str(path)
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep + os.sep in model
    if looks_like_path or not model:
        raise UserError(f"model path {model} does not exist: pass an existing model dir, a hub id, or gemma3-270m")
    return model


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the tokenizer of {model_path} ({_first_line(exc)}): pass a local model dir"
        ) from None
    ensure_chat_template(tokenizer)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_model(model_path: str, config: TrainConfig) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if config.resolved_bf16() else torch.float32}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except Exception as exc:
        raise ModelLoadError.of(model_path, exc, "pass a local causal-LM dir (config, weights)") from exc
    model.config.use_cache = False
    return model


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def common_args(config: TrainConfig) -> dict[str, Any]:
    """TrainingArguments fields shared by the three methods."""
    output = Path(config.output)
    args: dict[str, Any] = {
        "output_dir": str(output / "checkpoints"),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": float(config.warmup_ratio),  # transformers 5: a float < 1 is a ratio
        "lr_scheduler_type": config.lr_scheduler_type,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "bf16": config.resolved_bf16(),
        "use_cpu": not config.uses_gpu(),
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "report_to": config.report_to_list() or "none",
        "include_num_input_tokens_seen": "non_padding",
        "dataloader_num_workers": 0,
    }
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    name = "activation_checkpointing" if _has_training_arg("activation_checkpointing") else "gradient_checkpointing"
    args[name] = config.resolved_gradient_checkpointing()
    if args[name]:
        args[name + "_kwargs"] = {"use_reentrant": False}
    if not config.uses_gpu():
        args["optim"] = "adamw_torch"
    args.update(config.extra_args)
    return args


def _has_training_arg(name: str) -> bool:
    import dataclasses

    from transformers import TrainingArguments

    return any(f.name == name for f in dataclasses.fields(TrainingArguments))


def _json_logger(path: Path) -> Any:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Append every log record (loss, rewards, margins, ...) as one JSON line; always log the last step."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True  # so metrics.json's final_loss is the last step's

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                record = {"step": state.global_step, "epoch": state.epoch, **logs}
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record, default=float) + "\n")

    return JsonlLog()


def _last_checkpoint(config: TrainConfig) -> str | None:
    if not config.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(config.output) / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def build_sft_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: list[dict]) -> Any:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_args(config), max_length=config.max_length, completion_only_loss=True)
    return _trl_trainer(SFTTrainer, args, config, model, tokenizer, sft_records(rows, config.system_prompt))


def build_dpo_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: list[dict]) -> Any:
    from trl import DPOConfig, DPOTrainer

    # TRL's "sigmoid" loss ignores label_smoothing; IOPO applies conservative DPO (cDPO),
    # (1 - eps) * S + eps * -log sigmoid(-b*D) with S = -log sigmoid(b*D), which equals S + eps*b*D.
    # TRL's "robust" loss is R = S - eps*b*D / (1 - 2*eps), so cDPO = 2(1 - eps) * S - (1 - 2*eps) * R:
    # the same loss as IOPO's, from two loss types TRL supports (validate keeps eps in [0, 0.5)).
    eps = config.label_smoothing
    loss_type, loss_weights = (
        (["sigmoid"], None) if eps == 0 else (["sigmoid", "robust"], [2 * (1 - eps), -(1 - 2 * eps)])
    )
    args = DPOConfig(
        **common_args(config),
        max_length=config.max_length,
        beta=config.beta,
        label_smoothing=eps,
        loss_type=loss_type,
        loss_weights=loss_weights,
        precompute_ref_log_probs=config.reference == "precompute",
        precompute_ref_batch_size=config.precompute_batch_size,
    )
    return _trl_trainer(DPOTrainer, args, config, model, tokenizer, dpo_records(rows, config.system_prompt))


def build_grpo_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: list[dict]) -> Any:
    from functools import partial

    from trl import GRPOConfig, GRPOTrainer

    from trace_builder.rewards import GROUND_TRUTH, JudgeReward, check_specs, constraint_reward
    from trace_builder.train.config import judge_backend

    rewards: list[Any] = [partial(constraint_reward, mode=config.reward_mode)]
    if config.judge is not None:
        cache = str(Path(config.output) / "judge_cache.sqlite")
        rewards.append(JudgeReward(judge_backend(config), mode=config.reward_mode, cache_path=cache))
    records = grpo_records(rows, config.system_prompt)
    if config.judge is None:  # a row no check decides would only ever earn no reward
        records = [r for r in records if any(check_specs(r[GROUND_TRUTH]))]
        if not records:
            raise UserError(
                f"no row of {config.data} has a constraint with a check: GRPO needs the checks or a judge "
                "(set `judge:` in the training config)"
            )
    args = GRPOConfig(
        **common_args(config),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        log_completions=False,
    )
    return _trl_trainer(GRPOTrainer, args, config, model, tokenizer, records, reward_funcs=rewards)


def _trl_trainer(
    trainer_class: Any, args: Any, config: TrainConfig, model: Any, tokenizer: Any, records: list[dict], **extra: Any
) -> Any:
    from datasets import Dataset

    return trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(config) if config.lora else None,
        **extra,
    )


def build_iopo_trainer(config: TrainConfig, model: Any, tokenizer: Any, rows: list[dict]) -> Any:
    from transformers import TrainingArguments

    from trace_builder.train.iopo import IOPOCollator, IOPOTrainer, disable_dropout
    from trace_builder.train.reference import REFERENCE_FILE, fingerprint, load_reference, save_reference

    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        duplicate = Counter(ids).most_common(1)[0][0]
        raise UserError(
            f"data dir {config.data} repeats id {duplicate}: IOPO keys reference log-probs by id; "
            "rebuild the dataset with `trace-build run --stage filter`"
        )
    examples = iopo_examples(rows, tokenizer, config.system_prompt, config.max_length)
    # The reference is the model before any step: the base weights (a fresh LoRA adapter is the
    # identity, and precompute_reference disables it anyway). Fingerprint them before LoRA is added.
    reference_key = fingerprint(examples, model) if config.reference == "precompute" else ""
    if config.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config))
    disable_dropout(model)
    args = TrainingArguments(**common_args(config), remove_unused_columns=False)
    collator = IOPOCollator(tokenizer.pad_token_id)
    trainer = IOPOTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=collator,
        processing_class=tokenizer,
        beta=config.beta,
        label_smoothing=config.label_smoothing,
        sft_weight=config.sft_weight,
        reference=config.reference,
        logprob_chunk_tokens=config.logprob_chunk_tokens,
    )
    if config.reference == "precompute":
        path = Path(config.output) / REFERENCE_FILE
        stored = load_reference(path, reference_key)
        if stored is None or any(ex.id not in stored for ex in examples):
            stored = trainer.precompute_reference(examples, config.precompute_batch_size)
            if trainer.is_world_process_zero():
                save_reference(path, stored, reference_key)
            trainer.accelerator.wait_for_everyone()
            trainer.reference_source = "computed"
        else:
            trainer.reference_source = "reused"
        collator.reference_logps = stored
    return trainer


BUILDERS = {
    "sft": build_sft_trainer,
    "dpo": build_dpo_trainer,
    "iopo": build_iopo_trainer,
    "grpo": build_grpo_trainer,
}


def peak_memory_bytes(device_is_gpu: bool) -> int:
    import torch

    if device_is_gpu and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def save_outputs(config: TrainConfig, trainer: Any, tokenizer: Any, model_path: str) -> dict[str, str]:
    """adapter/ (LoRA) and merged/ (full weights + tokenizer, for transformers and vLLM)."""
    output = Path(config.output)
    saved: dict[str, str] = {}
    if config.lora:
        trainer.save_model(str(output / "adapter"))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(output / "adapter"))
        saved["adapter"] = str(output / "adapter")
        if config.save_merged:
            trainer.accelerator.wait_for_everyone()
            if trainer.is_world_process_zero():
                merge_adapter(model_path, output / "adapter", output / "merged", tokenizer)
            saved["merged"] = str(output / "merged")
    else:
        trainer.save_model(str(output / "merged"))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(output / "merged"))
        saved["merged"] = str(output / "merged")
    return saved


def merge_adapter(model_path: str, adapter_dir: Path, merged_dir: Path, tokenizer: Any) -> None:
    """Fold the adapter into a fresh copy of the base weights (works however training was sharded)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(merged_dir))
    tokenizer.save_pretrained(str(merged_dir))


def run_training(config: TrainConfig) -> dict[str, Any]:
    """Train as `config` says; returns the metrics also written to <output>/metrics.json."""
    import torch

    rows = read_rows(config.data, config.method, config.limit)
    model_path = resolve_model_path(config.model)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
    if not config.resume:
        (output / TRAIN_LOG).unlink(missing_ok=True)

    from transformers import set_seed

    set_seed(config.seed)  # LoRA's initialisation happens before the Trainer would seed
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, config)
    if config.uses_gpu() and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = BUILDERS[config.method](config, model, tokenizer, rows)
    trainer.add_callback(_json_logger(output / TRAIN_LOG))
    use_readable_progress(trainer)  # a line per logging step instead of raw dicts

    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=_last_checkpoint(config))
    runtime = time.perf_counter() - started
    saved = save_outputs(config, trainer, tokenizer, model_path)

    tokens = int(trainer.state.num_input_tokens_seen)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    metrics: dict[str, Any] = {
        "method": config.method,
        "model": config.model,
        "model_path": model_path,
        "data": str(config.data),
        "examples": len(rows),
        "lora": config.lora,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": round(runtime, 3),
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / runtime, 2) if runtime > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(config.uses_gpu()),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "outputs": saved,
    }
    rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r]
    if rewards:
        metrics.update(first_reward=rewards[0], final_reward=rewards[-1])
    if getattr(trainer, "reference_source", None):
        metrics["reference"] = trainer.reference_source
    last_logs: dict[str, Any] = {}
    for record in trainer.state.log_history:
        last_logs.update({k: v for k, v in record.items() if isinstance(v, (int, float))})
    metrics["last_logged"] = last_logs
    if trainer.is_world_process_zero():
        (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
    return metrics
