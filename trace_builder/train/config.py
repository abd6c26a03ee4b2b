"""The training settings: defaults from configs/train/<method>.yaml, a user YAML on top, flags last."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_builder.config import read_yaml_mapping
from trace_builder.errors import UserError
from trace_builder.records import SYSTEM_PROMPT
from trace_builder.resources import configs_dir

METHODS = ("sft", "dpo", "iopo", "grpo")
REFERENCE_MODES = ("precompute", "adapter")
AUTO = "auto"


@dataclass
class TrainConfig:
    """Everything `trace-build train` needs; field names double as YAML keys."""

    method: str = "sft"
    data: str = ""
    model: str = ""
    output: str = ""
    # optimisation (paper: lr 1e-4 SFT, 5e-6 DPO/IOPO, 3 epochs, beta 0.1, max length 6000)
    learning_rate: float = 1e-4
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    max_length: int = 6000
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    # preference losses
    beta: float = 0.1
    label_smoothing: float = 0.0
    sft_weight: float = 0.0  # IOPO only: weight of the NLL of y1|x1 and y2|x2
    reference: str = "precompute"  # IOPO: precompute | adapter (LoRA only)
    precompute_batch_size: int = 4
    logprob_chunk_tokens: int = 256
    # GRPO (rewards.py): answers sampled per prompt and their length, the reward's mode
    # (fraction of constraints met, or all-or-nothing), and a judge for the constraints without a
    # check: backend settings as eval's judge (kind, model, base_urls, ...); null = checks only
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    reward_mode: str = "fraction"
    judge: dict[str, Any] | None = None
    # LoRA (the released config: LoRA on all linear layers)
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: Any = "all-linear"
    # hardware: "auto" = on when a GPU is used
    device: str = AUTO  # auto | cpu | cuda
    bf16: Any = AUTO
    gradient_checkpointing: Any = AUTO
    attn_implementation: str | None = None
    # data
    system_prompt: str | None = SYSTEM_PROMPT  # null or "" = no system message
    limit: int | None = None  # use only the first N rows (smoke tests)
    # output
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    save_merged: bool = True
    resume: bool = False
    # experiment trackers, as transformers' report_to: none | all | tensorboard | wandb | mlflow | ...
    # (a list, or names joined by commas, for several)
    report_to: Any = "none"
    extra_args: dict[str, Any] = field(default_factory=dict)  # passed to the TRL/transformers args as is

    def uses_gpu(self) -> bool:
        import torch

        if self.device == "cpu":
            return False
        if self.device == "cuda":
            return True
        return torch.cuda.is_available()

    def resolved_bf16(self) -> bool:
        import torch

        if self.bf16 == AUTO:
            return self.uses_gpu() and torch.cuda.is_bf16_supported()
        return bool(self.bf16)

    def resolved_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing == AUTO:
            return self.uses_gpu()
        return bool(self.gradient_checkpointing)

    def report_to_list(self) -> list[str]:
        """The trackers to report to ([] for none)."""
        names = self.report_to.split(",") if isinstance(self.report_to, str) else list(self.report_to or [])
        return [str(n).strip() for n in names if str(n).strip() not in ("", "none")]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _read_yaml(path: Path) -> dict[str, Any]:
    loaded = read_yaml_mapping(path)
    # a config may nest everything under `train:` so one file can hold several sections
    if set(loaded) == {"train"} and isinstance(loaded["train"], dict):
        loaded = loaded["train"]
    return loaded


def default_config_path(method: str) -> Path:
    return configs_dir() / "train" / f"{method}.yaml"


def _check_keys(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise UserError(
            f"unknown training setting(s) {', '.join(unknown)} in {source}: valid keys are {', '.join(sorted(_FIELDS))}"
        )


def load_config(method: str, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults for `method`, then `config_file`, then the non-None `overrides` (CLI flags)."""
    if method not in METHODS:
        raise UserError(f"unknown training method {method!r}: use one of {', '.join(METHODS)}")
    values: dict[str, Any] = {}
    defaults = default_config_path(method)
    if defaults.is_file():
        values.update(_read_yaml(defaults))
        _check_keys(values, str(defaults))
    if config_file is not None:
        user = _read_yaml(Path(config_file))
        _check_keys(user, str(config_file))
        values.update(user)
    set_overrides = {k: v for k, v in overrides.items() if v is not None}
    _check_keys(set_overrides, "the command-line options")
    values.update(set_overrides)
    values["method"] = method
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Reject settings that cannot work, with the fix in the message."""
    if config.method not in METHODS:
        raise UserError(f"unknown training method {config.method!r}: use one of {', '.join(METHODS)}")
    if config.reference not in REFERENCE_MODES:
        raise UserError(f"reference must be one of {', '.join(REFERENCE_MODES)}, not {config.reference!r}")
    if config.method == "iopo" and config.reference == "adapter" and not config.lora:
        raise UserError(
            "reference 'adapter' (base model with the LoRA adapter disabled) needs LoRA: "
            "drop --full-finetune or use --precompute-reference"
        )
    if config.device not in (AUTO, "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, not {config.device!r}")
    for name in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
        if getattr(config, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(config, name)}: fix the config or the flag")
    if config.beta < 0 or (config.beta == 0 and config.method in ("dpo", "iopo")):
        raise UserError(f"beta must be positive (or 0 for grpo: no KL term), got {config.beta}")
    if not 0.0 <= config.label_smoothing < 0.5:
        raise UserError(f"label_smoothing must be in [0, 0.5), got {config.label_smoothing}")
    if config.label_smoothing and config.method not in ("dpo", "iopo"):
        # SFT has no preference pairs to smooth: refuse rather than train as if it were applied.
        raise UserError(f"label_smoothing applies to dpo and iopo only, not {config.method}: set it to 0")
    if config.method == "grpo":
        validate_grpo(config)
    if config.sft_weight < 0:
        raise UserError(f"sft_weight must be >= 0, got {config.sft_weight}")
    check_report_to(config.report_to_list())
    if config.max_steps <= 0 and config.num_train_epochs <= 0:
        raise UserError("set num_train_epochs > 0 or max_steps > 0")


def validate_grpo(config: TrainConfig) -> None:
    from trace_builder.rewards import MODES

    if config.reward_mode not in MODES:
        raise UserError(f"reward_mode must be one of {', '.join(MODES)}, not {config.reward_mode!r}")
    if config.num_generations < 2:
        raise UserError(f"num_generations must be at least 2 (GRPO compares answers), got {config.num_generations}")
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if batch % config.num_generations:
        raise UserError(
            f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) must be a multiple of "
            f"num_generations ({config.num_generations}): every prompt's answers are compared in one batch"
        )
    if config.judge is not None:
        judge_backend(config)


def judge_backend(config: TrainConfig) -> Any:
    """The GRPO judge's backend settings, validated as eval's judge is."""
    from trace_builder.config import BackendConfig, validate_settings

    return validate_settings(BackendConfig, config.judge or {}, "the training config", "judge settings in")


def check_report_to(names: list[str]) -> None:
    """Each tracker must be one transformers knows, and installed (else the Trainer fails after loading the model)."""
    if not names or names == ["all"]:
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise UserError(
            f"unknown report_to {', '.join(unknown)}: use none, all or any of {', '.join(INTEGRATION_TO_CALLBACK)}"
        )
    missing = [n for n in names if n not in get_available_reporting_integrations()]
    if missing:
        raise UserError(
            f"report_to {', '.join(missing)}: not installed here; install its package first "
            f"(e.g. pip install {' '.join(missing)}) or pass --report-to none"
        )
