"""The `trace-build` command line: run, status, inspect, export, train, eval."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trace_builder.config import BACKEND_KINDS, PROFILES, load_config
from trace_builder.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build TRACE-style data, train on it, evaluate.")
console = Console(stderr=True)


def _apply_overrides(
    config, *, limit, seeds, seed_column, backend, base_url, model, concurrency, train_rows, eval_rows
):
    if limit is not None:
        config.seeds.limit = limit
    if seeds is not None:
        config.seeds.source = str(seeds)
    if seed_column is not None:
        config.seeds.text_column = seed_column
    if backend is not None:
        config.backend.kind = backend
    if base_url:
        config.backend.base_urls = list(base_url)
        if backend is None:
            config.backend.kind = "openai"
    if model is not None:
        config.backend.model = model
    if concurrency is not None:
        config.backend.concurrency = concurrency
    if train_rows is not None:
        config.target.train_rows = train_rows
    if eval_rows is not None:
        config.target.eval_rows = eval_rows
    return config


def _stage_names() -> tuple[str, ...]:
    from trace_builder.pipeline.registry import STAGE_NAMES

    return STAGE_NAMES


@app.command()
def run(
    stage: str = typer.Option(
        "all", "--stage", help="all, or one stage: seeds, taxonomy, expand, respond, perturb, filter"
    ),
    config_path: Path | None = typer.Option(None, "--config", help="YAML run config, laid over the profile"),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="trace (TRACE's settings) | demo (small, fast); default: demo for the embedded model, else trace",
    ),
    out: Path = typer.Option(Path("runs/default"), "--out", help="run directory"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="use at most N seeds"),
    seeds: Path | None = typer.Option(None, "--seeds", help="seed file: JSONL, JSON, CSV or Parquet"),
    seed_column: str | None = typer.Option(
        None, "--seed-column", help="column of the seed file holding the instruction"
    ),
    backend: str | None = typer.Option(None, "--backend", help="local | openai | vllm"),
    base_url: list[str] | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL (repeat for replicas)"
    ),
    model: str | None = typer.Option(None, "--model", help="model name (openai/vllm) or path (local)"),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="requests in flight (default 64)"),
    train_rows: int | None = typer.Option(
        None, "--train-rows", min=1, help="build exactly N train instructions (TRACE's histogram)"
    ),
    eval_rows: int | None = typer.Option(
        None, "--eval-rows", min=0, help="and M eval instructions (TRACE's eval histogram)"
    ),
    fresh: bool = typer.Option(False, "--fresh", help="rebuild the chosen stages from scratch (keeps the LLM cache)"),
) -> None:
    """Run the data pipeline (or one stage), resuming where a previous run stopped."""
    from trace_builder.pipeline.runner import describe_summary, run_pipeline

    names = _stage_names()
    if stage != "all" and stage not in names:
        raise UserError(f"unknown stage {stage!r}: use all or one of {', '.join(names)}")
    if backend is not None and backend not in BACKEND_KINDS:
        raise UserError(f"unknown backend {backend!r}: use {', '.join(BACKEND_KINDS)}")
    if profile is not None and profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}: use {', '.join(PROFILES)}")
    config = load_config(config_path, profile=profile, backend_kind=backend or ("openai" if base_url else None))
    config = _apply_overrides(
        config,
        limit=limit,
        seeds=seeds,
        seed_column=seed_column,
        backend=backend,
        base_url=base_url,
        model=model,
        concurrency=concurrency,
        train_rows=train_rows,
        eval_rows=eval_rows,
    )
    stages = list(names) if stage == "all" else [stage]
    summary = asyncio.run(run_pipeline(config, out, stages, fresh=fresh, console=console))
    describe_summary(summary, console)


@app.command()
def status(out: Path = typer.Option(Path("runs/default"), "--out", help="run directory")) -> None:
    """Show each stage of a run: done / partial / pending, shards, rows, failures, tokens."""
    from trace_builder.pipeline.runner import run_details, stage_rows

    if not out.is_dir():
        raise UserError(f"run directory {out} does not exist: pass --out with a run folder made by `trace-build run`")
    table = Table(title=f"run {out}")
    rows = stage_rows(out)
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("stage", "status") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    screen = Console()
    screen.print(table)
    for line in run_details(out):
        screen.print(line, highlight=False)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="run folder, stage folder (e.g. runs/x/respond), final dataset or .parquet"),
    limit: int = typer.Option(5, "--limit", min=0, help="rows to print"),
    show_stats: bool = typer.Option(False, "--stats", help="distributions instead of rows"),
    where: str | None = typer.Option(None, "--where", help="pandas query, e.g. \"status == 'failed'\""),
) -> None:
    """Print rows of a stage or dataset, or their distributions with --stats."""
    from trace_builder.inspect_data import apply_where, load_frame, stats

    frame = apply_where(load_frame(path), where)
    if show_stats:
        manifest_dir = path if path.is_dir() else path.parent
        report = stats(frame, manifest_dir)
        if (path / "final").is_dir():
            from trace_builder.fidelity import fidelity_report

            report["fidelity"] = fidelity_report(path)
        print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    head = frame.head(limit)
    for record in head.astype(object).where(head.notna(), None).to_dict("records"):
        print(
            json.dumps(
                record, ensure_ascii=False, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)
            )
        )


@app.command()
def export(
    out: Path = typer.Option(Path("runs/default"), "--out", help="run directory"),
    fmt: str = typer.Option(..., "--format", help="trace-jsonl | llamafactory | trl"),
    dest: Path = typer.Option(..., "--dest", help="output file (trace-jsonl) or folder"),
) -> None:
    """Export final datasets for other tools."""
    from trace_builder.export import export as do_export

    for name, count in do_export(out, fmt, dest).items():
        console.print(f"{name}: {count} rows")


def _register_optional_commands() -> None:
    # Training and evaluation pull in heavy libraries; they register only their typer shells here.
    try:
        from trace_builder.train.cli import train_command
    except ImportError as exc:  # a missing optional extra must not break the data pipeline
        _missing = str(exc)

        @app.command("train")
        def train_unavailable() -> None:
            """Train SFT / DPO / IOPO (needs the [train] extra)."""
            raise UserError(f"training is unavailable ({_missing}): pip install 'trace-build[train]'")
    else:
        app.command("train", help="Train SFT, DPO or IOPO on the final datasets.")(train_command)
    try:
        from trace_builder.evaluate.cli import eval_app
    except ImportError:
        pass
    else:
        app.add_typer(eval_app, name="eval")


_register_optional_commands()


def main() -> None:
    try:
        app(standalone_mode=False)
    except UserError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]: finished shards are kept; rerun the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (bad flag values, unknown options) come as the CLI library's own
        # exception types, which know how to print themselves in one short block.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)
        raise
