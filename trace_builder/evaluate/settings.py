"""Eval settings: YAML (configs/eval/*.yaml) -> validated pydantic models."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from trace_builder.config import BackendConfig, Strict, read_yaml_mapping, validate_settings
from trace_builder.resources import configs_dir


class GenerationSettings(Strict):
    """How the model under test answers: greedy by default, as benchmarks are run."""

    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = None


class JudgingSettings(Strict):
    temperature: float = Field(0.0, ge=0, le=2)
    # The judge's budget grows with the constraints it scores (a reason and a score each),
    # so a 15-constraint item is not cut off mid-JSON.
    tokens_per_constraint: int = Field(192, ge=16)
    mode: str = Field("strict", pattern="^(strict|loose)$")


class BootstrapSettings(Strict):
    resamples: int = Field(1000, ge=10, le=100_000)
    seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1)


class EvalConfig(Strict):
    model: BackendConfig = Field(default_factory=BackendConfig)
    judge: BackendConfig = Field(default_factory=BackendConfig)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    judging: JudgingSettings = Field(default_factory=JudgingSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    chunk_size: int = Field(256, ge=1)
    # A plain rerun of a finished eval re-asks items that failed for a transient reason, this many times per chunk at most.
    transient_retries: int = Field(2, ge=0, le=10)
    limit: int | None = Field(None, ge=1)
    sample: int | None = Field(None, ge=1)  # a subset stratified by constraint count


def default_eval_config_path() -> Path:
    return configs_dir() / "eval" / "default.yaml"


def load_eval_config(path: Path | None = None) -> EvalConfig:
    """Read and validate an eval YAML; every mistake becomes a one-line UserError."""
    path = Path(path) if path is not None else default_eval_config_path()
    return validate_settings(EvalConfig, read_yaml_mapping(path, "eval config file"), path, "eval config file")
