"""A run folder: what a path given as one is (a run, a file, a stage folder, some other folder), and where
things beside the stages live in it (the plan)."""

from __future__ import annotations

from pathlib import Path

from trace_builder.errors import UserError
from trace_builder.run.store import LEGACY_MANIFEST, MANIFESTS


def is_run_dir(path: Path) -> bool:
    """A folder `trace-build run` made (run.json, or stage manifests of any age)."""
    path = Path(path)
    return (path / "run.json").is_file() or (path / MANIFESTS).is_dir() or any(path.glob(f"*/{LEGACY_MANIFEST}"))


def what_it_is(path: Path) -> str:
    """A few words on what `path` is, for messages."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if path.is_file():
        kind = "a Parquet file" if path.suffix == ".parquet" else "a file"
        return f"is {kind}, not a run folder"
    if any(path.glob("part-*.parquet")):
        return "is a folder of Parquet shards (a stage or a final dataset), not a run folder"
    return "is a folder but not a run (no run.json, no manifests)"


def open_run_dir(run_dir: Path) -> None:
    """Make the run folder `trace-build run` writes to, or say in one line why it cannot be one."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} {what_it_is(run_dir)}: choose a folder for --out")
    run_dir.mkdir(parents=True, exist_ok=True)


def check_run_dir(run_dir: Path) -> None:
    """For commands that read a run (status): a one-line UserError unless `run_dir` is one."""
    run_dir = Path(run_dir)
    if is_run_dir(run_dir):
        return
    hint = (
        f"read it with `trace-build inspect {run_dir}`"
        if run_dir.is_file() or any(run_dir.glob("part-*.parquet"))
        else "pass --out with a run folder made by `trace-build run`"
    )
    raise UserError(f"{run_dir} {what_it_is(run_dir)}: {hint}")


def plan_dir(run_dir: Path) -> Path:
    """Where `plan` keeps its pilot and its result, inside the run folder."""
    return Path(run_dir) / "plan"


def plan_path(run_dir: Path) -> Path:
    return plan_dir(run_dir) / "plan.json"
