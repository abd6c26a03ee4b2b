"""Run configuration: profiles and YAML -> validated pydantic models.

A run's settings come in three layers: a profile (configs/profiles/<name>.yaml: `trace`, TRACE's
settings, for every backend; `demo`, small and fast, chosen by default only for the embedded
model), then the user's --config file, then command-line flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trace_builder.errors import UserError
from trace_builder.resources import configs_dir
from trace_builder.taxonomy import EVAL_COUNT_HISTOGRAM, EVAL_DIMENSION_COUNTS, TRAIN_COUNT_HISTOGRAM

BACKEND_KINDS = ("local", "openai", "vllm")
BackendKind = Literal["local", "openai", "vllm"]
PROFILES = ("trace", "demo")
MAX_SEED_CHARS = 20_000
# `trace-build plan`'s pilot: its first size, and it grows until one standard deviation of the
# projected requests is within PILOT_PRECISION, up to MAX_PILOT seeds (its rows are the run's own,
# answers cached, so growing it costs the run nothing).
DEFAULT_PILOT = 40
PILOT_PRECISION = 0.05
MAX_PILOT = 1000


class Strict(BaseModel):
    """Settings that refuse unknown keys: a typo in a config is an error, not a silent default."""

    # Defaults are validated too, so that a config built in Python holds the values (floats, not
    # ints) one read from a file does, and a run folder built one way resumes the other.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class BackendConfig(Strict):
    """Which model answers, and how it is reached."""

    kind: BackendKind = "local"
    model: str = "gemma3-270m"
    base_urls: list[str] = Field(default_factory=list)
    api_key: str | None = None  # default: OPENAI_API_KEY
    concurrency: int = Field(64, ge=1, le=4096)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    # Stop the run when (nearly) every recent request failed for the same transient reason
    # (server unreachable, a 5xx storm) for this long: the run ends resumable, not row by row.
    storm_after_s: float = Field(45.0, gt=0)
    # Caps on what is sent (openai backend), lowered for a while by the server's 429 answers.
    # Transport only: in no fingerprint. None: no cap (and 429s are only retried).
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)  # prompt + completion
    # How structured answers are asked for (openai backend; llm/dialects.py): auto probes the server once.
    structured_output: Literal["auto", "json_schema", "json_object", "vllm", "prompt"] = "auto"
    # openai backend: answer through the Batch API in waves (llm/batch.py; the waves: `batch:` below)
    batch: bool = False
    batch_size: int = Field(8, ge=1, le=256)  # local backend
    # local backend: llama.cpp when llama-cpp-python is installed (the `llamacpp` extra), else torch
    engine: Literal["auto", "torch", "llamacpp"] = "auto"
    # torch engine: oneDNN's kernel for float32 linears where it is proven at the model's shapes
    # (llm/local_engine.py; TRACE_BUILD_ONEDNN=0 also turns it off)
    onednn_linears: bool = True
    engine_args: dict[str, Any] = Field(default_factory=dict)  # vllm backend


class BatchConfig(Strict):
    """How batch mode (`backend.batch`, docs/batch.md) gathers requests into waves and waits for them.
    Transport only: in no fingerprint (a run may switch between batch and direct mode and resume)."""

    # Rows kept in flight per batched backend, and the most requests one wave holds (a wave is also
    # split at the Batch API's own limits: 50,000 requests, 200 MB a file).
    wave_size: int = Field(20_000, ge=1, le=1_000_000)
    # A wave of fewer requests goes out as direct requests (at full price, answered in seconds):
    # the last few requests of a run need not wait for a batch.
    min_wave: int = Field(100, ge=1)
    # A wave leaves once no request has joined it for this long (every row in flight is waiting).
    quiet_s: float = Field(2.0, gt=0)
    # A pending batch is polled after poll_start_s, then at intervals doubling up to poll_max_s.
    poll_start_s: float = Field(10.0, gt=0)
    poll_max_s: float = Field(300.0, gt=0)


class GenerationConfig(Strict):
    """Sampling settings per kind of call; judges are greedy by default."""

    temperature: float = Field(0.7, ge=0, le=2)
    judge_temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    judge_tokens_per_constraint: int = Field(96, ge=16)  # the judge's budget grows with the list
    # Answers asked for one question until one validates (not empty; JSON fitting the whole schema sent).
    answer_attempts: int = Field(3, ge=1, le=10)


class SeedsConfig(Strict):
    source: str = "builtin"  # 'builtin' or a path to a JSONL / JSON / CSV / Parquet file
    text_column: str = "text"
    input_column: str | None = None
    limit: int | None = Field(None, ge=1)
    # Seeds in other languages are welcome; their prompts fall back to the English templates.
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"], min_length=1)
    synthesize_to: int = Field(0, ge=0)  # ask the LLM for more seeds until there are this many
    max_chars: int = Field(MAX_SEED_CHARS, ge=1)  # longer seeds are skipped and counted


class TaxonomyConfig(Strict):
    count_histogram: list[float] = Field(default_factory=lambda: list(TRAIN_COUNT_HISTOGRAM))
    # The shape a target-size run gives its eval split (TRACE.md §1).
    eval_count_histogram: list[float] = Field(default_factory=lambda: list(EVAL_COUNT_HISTOGRAM))
    # dimension id -> sampling weight (a dimension left out weighs 1). Default: how often each
    # dimension occurs in TRACE's eval set, which reproduces its type mix.
    weights: dict[str, float] = Field(default_factory=lambda: dict(EVAL_DIMENSION_COUNTS))
    max_per_dimension: int = Field(2, ge=1)

    @field_validator("count_histogram", "eval_count_histogram")
    @classmethod
    def _histogram_is_usable(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value) or sum(value) <= 0:
            raise ValueError("must be a non-empty list of non-negative weights for 1, 2, ... constraints")
        return value


class JudgeConfig(Strict):
    """How the pipeline's hybrid judge spends LLM requests (eval's judge always scores everything)."""

    # The pipeline needs only pass or fail, so the LLM is asked only when its scores could change that:
    # not once a check fails a response (the other constraints stay unjudged), nor when checks and the
    # verdicts an earlier judgement gave the same response on the same constraints pass them all; but
    # for an audit sample that keeps check/judge disputes measured. False: the LLM scores everything.
    skip_after_failed_check: bool = True
    audit_share: float = Field(0.05, ge=0, le=1)


class ExpandConfig(Strict):
    repair: bool = True  # let the quality check repair instead of only rejecting
    emit_checks: bool = True  # ask for deterministic check specs beside each constraint


class RespondConfig(Strict):
    attempts: int = Field(3, ge=1, le=10)  # answers asked until one earns full marks
    make_rejected: bool = True  # the deliberately worse answer for DPO
    rejected_attempts: int = Field(3, ge=1, le=10)  # worse answers asked until the judge fails one


class PerturbConfig(Strict):
    operations: list[Literal["add", "delete", "revise"]] = Field(default_factory=lambda: ["add", "delete", "revise"])
    attempts: int = Field(3, ge=1, le=10)  # perturbations of one (x1, y1), switching operation
    strict: bool = False  # also require y2 to fail x1 (never true after ADD: x2 holds all of x1)


class FilterConfig(Strict):
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)  # Jaccard of word 3-gram shingles
    max_prompt_chars: int = Field(12000, ge=100)
    max_response_chars: int = Field(12000, ge=100)
    eval_size: int = Field(1000, ge=0)
    # A plain run gives eval at most this share of its kept rows (TRACE: 1K of 121K), so a small
    # run still has training data; a target-size run's eval_rows are exact instead.
    eval_max_share: float = Field(0.1, ge=0, le=1)
    train_size: int | None = Field(120000, ge=0)  # None: all that remains


class TargetConfig(Strict):
    """A run asked for a size: seeds are admitted until the count quotas are met or the budget is spent."""

    train_rows: int | None = Field(None, ge=1)
    eval_rows: int = Field(0, ge=0)
    max_seeds: int | None = Field(None, ge=1)  # budget; default 4 x (train_rows + eval_rows)
    when_seeds_run_out: Literal["reuse", "synthesize", "stop"] = "reuse"
    margin: float = Field(0.03, ge=0, le=1)  # admitted above the quota, for what the filter drops
    # When quotas are not all met: keep TRACE's shape (each split trimmed to the largest size its rows can
    # fill in TRACE's proportions; the rest set aside, named in the filter's output) or keep every row.
    on_shortfall: Literal["keep_shape", "keep_rows"] = "keep_shape"
    # keep_shape: the total-variation distance to the histogram a short split may keep (0: exactly
    # TRACE's proportions, which a count with no row at all would empty the split for).
    shape_tolerance: float = Field(0.02, ge=0, le=1)

    @property
    def enabled(self) -> bool:
        return self.train_rows is not None

    @property
    def seed_budget(self) -> int:
        return self.max_seeds or 4 * ((self.train_rows or 0) + self.eval_rows)

    @property
    def shortfall_tolerance(self) -> float | None:
        """How close a short split keeps to TRACE's shape (total variation); None keeps every row."""
        return self.shape_tolerance if self.on_shortfall == "keep_shape" else None


class DecontaminationConfig(Strict):
    """Known evaluation sets kept out of a run (pipeline/decontaminate.py): seeds first, final rows after."""

    official: bool = True  # the official TRACE eval file, shipped with the package
    files: list[str] = Field(default_factory=list)  # more sets: JSONL or Parquet with text columns
    word_ngram: int = Field(8, ge=2)  # n for texts mostly of words
    char_ngram: int = Field(8, ge=2)  # n for Chinese and Japanese, counted in characters
    threshold: float = Field(0.5, gt=0, le=1)  # share of an eval text's n-grams found: contaminated


class CardConfig(Strict):
    """The dataset card (final/README.md). Not in any fingerprint: it changes no row."""

    # A Hub licence id (apache-2.0, cc-by-4.0, mit, other...). Default 'unknown': the right
    # licence depends on the seeds' and the generating model's terms, which only the user knows.
    license: str = "unknown"
    pretty_name: str | None = None  # default: 'TRACE-style complex instructions (<model>)'


class PricesConfig(Strict):
    """Dollars per million tokens, for the cost `plan`, the progress bars, `status` and the card show
    (none when unset)."""

    input_per_million: float | None = Field(None, ge=0)
    output_per_million: float | None = Field(None, ge=0)
    # The share of these prices paid for answers through the Batch API (OpenAI's: half).
    batch_discount: float = Field(0.5, gt=0, le=1)

    def cost(
        self,
        prompt_tokens: float,
        completion_tokens: float,
        batched_prompt_tokens: float = 0.0,
        batched_completion_tokens: float = 0.0,
    ) -> float | None:
        """Dollars for these tokens, of which the batched ones (part of the totals) cost `batch_discount`
        of the price; None when no price is set."""
        if self.input_per_million is None and self.output_per_million is None:
            return None
        rate_in, rate_out = self.input_per_million or 0.0, self.output_per_million or 0.0
        direct = rate_in * (prompt_tokens - batched_prompt_tokens) + rate_out * (
            completion_tokens - batched_completion_tokens
        )
        batched = self.batch_discount * (rate_in * batched_prompt_tokens + rate_out * batched_completion_tokens)
        return round((direct + batched) / 1e6, 4)


class RunConfig(Strict):
    profile: str = "trace"
    seed: int = 0
    shard_size: int = Field(256, ge=1)
    # A plain rerun re-asks rows that failed for a transient reason (pipeline/retry.py), this
    # many times per shard at most.
    transient_retries: int = Field(2, ge=0, le=10)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    respond: RespondConfig = Field(default_factory=RespondConfig)
    perturb: PerturbConfig = Field(default_factory=PerturbConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    prices: PricesConfig = Field(default_factory=PricesConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    # A role's own server and model (llm/roles.py): any `backend` setting, plus `prices`; what a role
    # leaves out is the generator's (`backend`, `prices`). No role: one model does everything.
    roles: dict[Literal["judge", "rewriter", "worse"], dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _roles_are_valid(self) -> RunConfig:
        for role in self.roles:
            self.backend_for(role)
            self.prices_for(role)
        for role in ("generator", *self.roles):
            settings = self.backend_for(role)
            if settings.batch and settings.kind != "openai":
                where = "backend.batch" if role == "generator" else f"roles.{role}.batch"
                raise ValueError(
                    f"{where} asks the OpenAI Batch API, which only the openai backend speaks "
                    f"(this one is {settings.kind}; --backend openai with its --base-url, or no --batch)"
                )
        if self.batch.poll_max_s < self.batch.poll_start_s:
            raise ValueError("batch.poll_max_s is below batch.poll_start_s")
        return self

    def backend_for(self, role: str) -> BackendConfig:
        """The backend settings of `role`: the generator's, with what `roles.<role>` sets laid over."""
        spec = {k: v for k, v in self.roles.get(role, {}).items() if k != "prices"}
        if not spec:
            return self.backend
        try:
            return BackendConfig.model_validate({**self.backend.model_dump(), **spec})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"roles.{role}.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    def prices_for(self, role: str) -> PricesConfig:
        spec = self.roles.get(role, {}).get("prices")
        if spec is None:
            return self.prices
        try:
            return PricesConfig.model_validate({**self.prices.model_dump(), **spec})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"roles.{role}.prices.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    def describe(self) -> str:
        """The key settings in one line, for the first line of a run."""
        hist = self.taxonomy.count_histogram
        counts = [c for c, w in enumerate(hist, start=1) if w > 0]
        mean = sum(c * w for c, w in enumerate(hist, start=1)) / sum(hist)
        size = (
            f"target {self.target.train_rows} train / {self.target.eval_rows} eval"
            if self.target.enabled
            else f"seeds {self.seeds.limit or 'all'}"
        )
        return (
            f"profile {self.profile}: {size}, {counts[0]}..{counts[-1]} constraints (mean {mean:.2f}), "
            f"checks {'on' if self.expand.emit_checks else 'off'}, answers up to {self.generation.max_tokens} tokens, "
            f"{self.respond.attempts} answer attempts, backend {self.backend.kind} ({self.backend.model}"
            + (", batch" if self.backend.batch else "")
            + ")"
            + "".join(f", {role} {self.backend_for(role).model}" for role in self.roles)
        )


def profile_path(name: str) -> Path:
    return configs_dir() / "profiles" / f"{name}.yaml"


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


def validate_settings(model: type[M], data: dict[str, Any], path: Path | str, what: str = "config file") -> M:
    """`data` as `model`; the first invalid setting becomes a one-line UserError naming it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where:  # a check across settings (roles) names the setting in its message
            raise UserError(f"{what} {path}: {first['msg'].removeprefix('Value error, ')}: fix or remove it") from None
        raise UserError(f"{what} {path}: setting '{where}' is invalid ({first['msg']}): fix or remove it") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def choose_profile(explicit: str | None, file_profile: str | None, backend_kind: str) -> str:
    """The profile a run uses: as asked, else the file's, else `demo` for the embedded model only."""
    name = explicit or file_profile or ("demo" if backend_kind == "local" else "trace")
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
    return name


def load_config(path: Path | None = None, *, profile: str | None = None, backend_kind: str | None = None) -> RunConfig:
    """Profile settings, overlaid by the config file at `path`.

    `backend_kind` is the backend the command line asks for, if any: it decides the default
    profile, so a server is never given the demo settings unless they are asked for.
    """
    user = read_yaml_mapping(Path(path)) if path is not None else {}
    kind = backend_kind or (user.get("backend") or {}).get("kind") or "local"
    name = choose_profile(profile, user.get("profile"), kind)
    data = _merge(read_yaml_mapping(profile_path(name), "profile"), user)
    data["profile"] = name
    return validate_settings(RunConfig, data, path or profile_path(name))
