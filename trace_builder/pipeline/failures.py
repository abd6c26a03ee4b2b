"""What counts as a row's failure at a stage: one definition for `status`, the progress bar and the run summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

# The columns `row_failure` reads: a stage's finish reads only these (and its summary's) back.
FAILURE_COLUMNS = ("status", "reason", "failed_stage", "dpo_status", "dpo_reason", "iopo_status", "iopo_reason")

# A side dataset fails without failing its row (the SFT row stays ok): it counts at the stage
# that builds it, so perturb's failures are the IOPO groups it could not make.
SIDES = {"respond": "dpo", "perturb": "iopo"}


def row_failure(row: Mapping, stage: str) -> str | None:
    """Why `row` failed at `stage` ("expand: quality_rejected", "iopo: y2_fails_x2"), or None.

    A row fails at most once at a stage: a row that failed stays failed and is not tried again
    downstream, and a stage's side (DPO, IOPO) is tried only on rows that passed it.
    """
    if row.get("status") != "ok" and row.get("failed_stage") == stage:
        return f"{stage}: {row.get('reason')}"
    side = SIDES.get(stage)
    if side is not None and row.get(f"{side}_status") == "failed":
        return f"{side}: {row.get(f'{side}_reason')}"
    return None


def failure_counts(rows: Iterable[Mapping], stage: str) -> dict[str, int]:
    """How many of `rows` failed at `stage`, by reason."""
    return dict(Counter(reason for reason in (row_failure(row, stage) for row in rows) if reason is not None))
