"""What counts as a row's failure at a stage: one definition for `status`, the progress bar, the run summary
and the re-asking of rows that failed for a transient reason (pipeline/retry.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureSide:
    """Where a stage records a row's failure: `status` holds `failed` and `reason` says why. The failing
    stage is `stage`, or (None) the one the row's `failed_stage` names. `name` labels a side dataset
    (DPO, IOPO) that fails without failing its row: the SFT row stays ok."""

    status: str
    failed: str
    reason: str
    stage: str | None = None
    name: str | None = None


# The pipeline's rows: the row itself, then its IOPO and DPO sides (perturb builds both). A row whose
# two sides failed counts once at the stage, under its IOPO reason.
PIPELINE_SIDES = (
    FailureSide("status", "failed", "reason"),
    FailureSide("iopo_status", "failed", "iopo_reason", "perturb", "iopo"),
    FailureSide("dpo_status", "failed", "dpo_reason", "perturb", "dpo"),
)
# The columns `row_failure` reads: a stage's finish reads only these (and its summary's) back.
FAILURE_COLUMNS = ("failed_stage", *(c for side in PIPELINE_SIDES for c in (side.status, side.reason)))


def row_failure(row: Mapping, stage: str) -> str | None:
    """Why `row` failed at `stage` ("expand: quality_rejected", "iopo: y2_fails_x2"), or None.

    A row fails at most once at a stage: a row that failed stays failed and is not tried again
    downstream, and a stage's side (DPO, IOPO) is tried only on rows that passed it.
    """
    own = PIPELINE_SIDES[0]
    if row.get(own.status) != "ok" and row.get("failed_stage") == stage:
        return f"{stage}: {row.get(own.reason)}"
    for side in PIPELINE_SIDES[1:]:
        if side.stage == stage and row.get(side.status) == side.failed:
            return f"{side.name}: {row.get(side.reason)}"
    return None


def failure_counts(rows: Iterable[Mapping], stage: str) -> dict[str, int]:
    """How many of `rows` failed at `stage`, by reason."""
    return dict(Counter(reason for reason in (row_failure(row, stage) for row in rows) if reason is not None))
