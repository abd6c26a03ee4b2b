"""The pipeline's stages, in order: the one list that the runner, fingerprints, status and inspect read."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from trace_builder.config import RunConfig
from trace_builder.pipeline import expand, filter, perturb, respond, seeds_stage, taxonomy_stage
from trace_builder.pipeline.engine import extend_schema
from trace_builder.pipeline.stage import Stage

STAGES: tuple[Stage, ...] = (
    seeds_stage.STAGE,
    taxonomy_stage.STAGE,
    expand.STAGE,
    respond.STAGE,
    perturb.STAGE,
    filter.STAGE,
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
_BY_NAME = {stage.name: stage for stage in STAGES}


def _check_order() -> None:
    # A stage reads the one before it: shards map one to one along the chain.
    for previous, stage in zip((None, *STAGES), STAGES):
        if stage.reads != (previous.name if previous else None):
            raise AssertionError(f"stage {stage.name!r} reads {stage.reads!r}, not the stage before it")


_check_order()


def get_stage(name: str) -> Stage:
    return _BY_NAME[name]


def stages_from(name: str) -> tuple[Stage, ...]:
    """`name` and every stage after it (what a rebuild of `name` invalidates)."""
    return STAGES[STAGE_NAMES.index(name) :]


def stage_schema(name: str) -> pa.Schema:
    """The columns of a row-wise stage's shards: the seeds' columns plus every stage's fields up to it."""
    schema = pa.schema([])
    for stage in STAGES[: STAGE_NAMES.index(name) + 1]:
        schema = extend_schema(schema, list(stage.fields))
    return schema


def stage_fingerprints(config: RunConfig, prompt_digest: str, stages: tuple[Stage, ...] = STAGES) -> dict[str, str]:
    """One fingerprint per stage, chained: a change upstream changes every stage after it."""
    fingerprints: dict[str, str] = {}
    previous = ""
    for stage in stages:
        payload = {"previous": previous, "inputs": stage.settings(config), "prompts": prompt_digest}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        previous = hashlib.sha256(blob).hexdigest()[:16]
        fingerprints[stage.name] = previous
    return fingerprints
