"""`trace-build train`: the typer command (the lead registers it with app.command("train"))."""

from __future__ import annotations

from pathlib import Path

import typer

from trace_builder.errors import UserError


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def train_command(
    method: str = typer.Option(..., "--method", help="sft | dpo | iopo | grpo"),
    data: Path = typer.Option(
        ..., "--data", help="final dataset dir, e.g. runs/x/final/iopo (grpo: any, e.g. final/sft)"
    ),
    model: str = typer.Option(..., "--model", help="model dir, cached hub id, or gemma3-270m (the embedded model)"),
    output: Path = typer.Option(..., "--output", help="where adapter/, merged/, metrics.json go"),
    config: Path | None = typer.Option(None, "--config", help="YAML on top of configs/train/<method>.yaml"),
    epochs: float | None = typer.Option(None, "--epochs", help="training epochs (default 3)"),
    lr: float | None = typer.Option(None, "--lr", help="learning rate (default 1e-4 SFT, 5e-6 DPO/IOPO)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="stop after N optimizer steps"),
    beta: float | None = typer.Option(None, "--beta", help="DPO/IOPO beta (default 0.1); GRPO's KL weight (default 0)"),
    num_generations: int | None = typer.Option(None, "--num-generations", help="GRPO: answers sampled per prompt"),
    max_completion_length: int | None = typer.Option(
        None, "--max-completion-length", help="GRPO: tokens per sampled answer"
    ),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="train all weights instead of LoRA"),
    max_length: int | None = typer.Option(None, "--max-length", help="max tokens per sequence (default 6000)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="examples per device per step"),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="gradient accumulation steps"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 (default: on for GPU)"),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="default: on for GPU"
    ),
    precompute_reference: bool | None = typer.Option(
        None,
        "--precompute-reference/--adapter-reference",
        help="DPO/IOPO reference: precomputed once (default) or the base model with the LoRA adapter off",
    ),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="system message ('' for none)"),
    limit: int | None = typer.Option(None, "--limit", help="train on the first N rows only"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in OUTPUT"),
    seed: int | None = typer.Option(None, "--seed"),
    report_to: str | None = typer.Option(
        None,
        "--report-to",
        help="experiment trackers, as transformers takes them: none (default), all, tensorboard, wandb, mlflow, ... "
        "(comma-separated for several)",
    ),
) -> None:
    """Train SFT, DPO, IOPO or GRPO on a final dataset; writes adapter/, merged/, train_log.jsonl, metrics.json."""
    from trace_builder.train.config import load_config
    from trace_builder.train.runner import run_training

    if full_finetune and precompute_reference is False:
        raise UserError("--adapter-reference needs LoRA: drop --full-finetune or use --precompute-reference")
    overrides = {
        "data": str(data),
        "model": model,
        "output": str(output),
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "max_steps": max_steps,
        "beta": beta,
        "num_generations": num_generations,
        "max_completion_length": max_completion_length,
        "lora": False if full_finetune else None,
        "max_length": max_length,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "device": device,
        "bf16": bf16,
        "gradient_checkpointing": gradient_checkpointing,
        "reference": None if precompute_reference is None else ("precompute" if precompute_reference else "adapter"),
        "system_prompt": system_prompt,
        "limit": limit,
        "resume": True if resume else None,
        "seed": seed,
        "report_to": report_to,
    }
    settings = load_config(method, config, **overrides)
    metrics = run_training(settings)
    typer.echo(
        f"trained {metrics['method']} for {metrics['steps']} steps in {metrics['train_runtime_s']:.1f}s "
        f"({metrics['tokens_per_s']} tokens/s); loss {_short(metrics['first_loss'])} -> "
        f"{_short(metrics['final_loss'])}; "
        + (
            f"reward {_short(metrics['first_reward'])} -> {_short(metrics['final_reward'])}; "
            if "first_reward" in metrics
            else ""
        )
        + f"outputs in {output}"
    )
