"""Run configuration: YAML -> validated pydantic models, and the per-stage fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trace_builder.errors import UserError
from trace_builder.resources import configs_dir

STAGES = ("seeds", "taxonomy", "expand", "respond", "perturb", "filter")

# TRACE's training histogram of constraints per instruction, C = 1..15 (TRACE.md §1).
TRACE_TRAIN_HISTOGRAM = [991, 8003, 26421, 34155, 26327, 13858, 5882, 2185, 999, 464, 8, 20, 20, 8, 4]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """Which model answers, and how it is reached."""

    kind: Literal["local", "openai", "vllm"] = "local"
    model: str = "gemma3-270m"
    base_urls: list[str] = Field(default_factory=list)
    api_key: str | None = None  # default: OPENAI_API_KEY
    concurrency: int = Field(64, ge=1, le=4096)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    batch_size: int = Field(8, ge=1, le=256)  # local backend
    engine_args: dict[str, Any] = Field(default_factory=dict)  # vllm backend


class GenerationConfig(_Strict):
    """Sampling settings per kind of call; judges are greedy by default."""

    temperature: float = Field(0.7, ge=0, le=2)
    judge_temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    judge_tokens_per_constraint: int = Field(96, ge=16)  # the judge's budget grows with the list


class SeedsConfig(_Strict):
    source: str = "builtin"  # 'builtin' or a path to a JSONL / JSON / CSV / Parquet file
    text_column: str = "text"
    input_column: str | None = None
    limit: int | None = Field(None, ge=1)
    # Seeds in other languages are welcome; their prompts fall back to the English templates.
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"], min_length=1)
    synthesize_to: int = Field(0, ge=0)  # ask the LLM for more seeds until there are this many


class TaxonomyConfig(_Strict):
    count_histogram: list[float] = Field(default_factory=lambda: list(TRACE_TRAIN_HISTOGRAM))
    weights: dict[str, float] = Field(default_factory=dict)  # dimension id -> weight (default 1)
    max_per_dimension: int = Field(2, ge=1)

    @field_validator("count_histogram")
    @classmethod
    def _histogram_is_usable(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value) or sum(value) <= 0:
            raise ValueError("must be a non-empty list of non-negative weights for 1, 2, ... constraints")
        return value


class ExpandConfig(_Strict):
    repair: bool = True  # let the quality check repair instead of only rejecting
    emit_checks: bool = True  # ask for deterministic check specs beside each constraint


class RespondConfig(_Strict):
    make_rejected: bool = True  # the deliberately worse answer for DPO


class PerturbConfig(_Strict):
    operations: list[Literal["add", "delete", "revise"]] = Field(default_factory=lambda: ["add", "delete", "revise"])


class FilterConfig(_Strict):
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)  # Jaccard of word 3-gram shingles
    max_prompt_chars: int = Field(12000, ge=100)
    max_response_chars: int = Field(12000, ge=100)
    eval_size: int = Field(1000, ge=0)
    train_size: int | None = Field(120000, ge=0)  # None: all that remains


class RunConfig(_Strict):
    seed: int = 0
    shard_size: int = Field(256, ge=1)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)
    respond: RespondConfig = Field(default_factory=RespondConfig)
    perturb: PerturbConfig = Field(default_factory=PerturbConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)


def default_config_path() -> Path:
    return configs_dir() / "default.yaml"


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping; a missing file or bad syntax is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist: pass --config with an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{what} {path} is not valid YAML{where}: fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


M = TypeVar("M", bound=BaseModel)


def validate_settings(model: type[M], data: dict[str, Any], path: Path, what: str = "config file") -> M:
    """`data` as `model`; the first invalid setting becomes a one-line UserError naming it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{what} {path}: setting '{where}' is invalid ({first['msg']}): fix or remove it") from None


def load_config(path: Path | None = None) -> RunConfig:
    """Read and validate a run config (default: configs/default.yaml)."""
    path = Path(path) if path is not None else default_config_path()
    return validate_settings(RunConfig, read_yaml_mapping(path), path)


# What each stage's output depends on, beyond its input stage. Transport settings
# (base URLs, concurrency, timeouts) are absent on purpose: they never change an answer.
def _stage_inputs(config: RunConfig, stage: str) -> dict[str, Any]:
    model = {"backend": config.backend.kind, "model": config.backend.model}
    if stage == "seeds":
        return {"seeds": config.seeds.model_dump(), "seed": config.seed, **(model if config.seeds.synthesize_to else {})}
    if stage == "taxonomy":
        return {"taxonomy": config.taxonomy.model_dump(), "seed": config.seed}
    if stage == "expand":
        return {"expand": config.expand.model_dump(), "generation": config.generation.model_dump(), **model}
    if stage == "respond":
        return {"respond": config.respond.model_dump(), "generation": config.generation.model_dump(), **model}
    if stage == "perturb":
        return {"perturb": config.perturb.model_dump(), "generation": config.generation.model_dump(), "seed": config.seed, **model}
    if stage == "filter":
        return {"filter": config.filter.model_dump(), "seed": config.seed}
    raise KeyError(stage)


def stage_fingerprints(config: RunConfig, prompt_digest: str) -> dict[str, str]:
    """One fingerprint per stage, chained: a change upstream changes every stage after it."""
    fingerprints: dict[str, str] = {}
    previous = ""
    for stage in STAGES:
        payload = {"previous": previous, "inputs": _stage_inputs(config, stage), "prompts": prompt_digest}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        previous = hashlib.sha256(blob).hexdigest()[:16]
        fingerprints[stage] = previous
    return fingerprints
