"""The `trace-build` command line: run, status, inspect, export, train, eval."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable
from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trace_builder.config import (
    BACKEND_KINDS,
    DEFAULT_PILOT,
    MAX_PILOT,
    PILOT_PRECISION,
    PROFILES,
    load_config,
    validate_settings,
)
from trace_builder.errors import ModelLoadError, ServerRefused, UserError, missing_package_fix

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build TRACE-style data, train on it, evaluate.")
console = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from trace_builder import __version__

        print(f"trace-build {__version__}")
        raise typer.Exit()


@app.callback()
def _top_level(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Build TRACE-style data, train on it, evaluate."""


def _stage_names() -> tuple[str, ...]:
    from trace_builder.pipeline.registry import STAGE_NAMES

    return STAGE_NAMES


# The options of a run's settings, declared once: `run` and `plan` take exactly these (a plan
# projects the run those options describe), through `with_run_settings`.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "config_path": (Path | None, typer.Option(None, "--config", help="YAML run config, laid over the profile")),
    "profile": (
        str | None,
        typer.Option(
            None,
            "--profile",
            help="trace (TRACE's settings) | demo (small, fast); default: demo for the embedded model, else trace",
        ),
    ),
    "limit": (int | None, typer.Option(None, "--limit", min=1, help="use at most N seeds")),
    "seeds": (Path | None, typer.Option(None, "--seeds", help="seed file: JSONL, JSON, CSV or Parquet")),
    "seed_column": (
        str | None,
        typer.Option(None, "--seed-column", help="column of the seed file holding the instruction"),
    ),
    "backend": (str | None, typer.Option(None, "--backend", help="local | openai | vllm")),
    "base_url": (
        list[str] | None,
        typer.Option(None, "--base-url", help="OpenAI-compatible server URL (repeat for replicas)"),
    ),
    "model": (str | None, typer.Option(None, "--model", help="model name (openai/vllm) or path (local)")),
    "concurrency": (int | None, typer.Option(None, "--concurrency", min=1, help="requests in flight (default 64)")),
    "train_rows": (
        int | None,
        typer.Option(None, "--train-rows", min=1, help="build exactly N train instructions (TRACE's histogram)"),
    ),
    "eval_rows": (
        int | None,
        typer.Option(None, "--eval-rows", min=0, help="and M eval instructions (TRACE's eval histogram)"),
    ),
    "max_seeds": (
        int | None,
        typer.Option(
            None,
            "--max-seeds",
            min=1,
            help="a target run's budget of admitted seeds (default 4 x rows); raise it to top a run up",
        ),
    ),
    "decontaminate": (
        list[Path] | None,
        typer.Option(
            None,
            "--decontaminate",
            help="an eval set (JSONL or Parquet, text columns) to keep out of the data, besides the official TRACE "
            "eval set; repeat for more",
        ),
    ),
    "structured_output": (
        str | None,
        typer.Option(
            None,
            "--structured-output",
            help="how structured answers are asked for (openai backend): auto (probe the server), json_schema, "
            "json_object (llama.cpp), vllm, prompt",
        ),
    ),
    "judge_model": (str | None, typer.Option(None, "--judge-model", help="the judge's own model (roles.judge.model)")),
    "judge_base_url": (
        list[str] | None,
        typer.Option(
            None,
            "--judge-base-url",
            help="the judge's own OpenAI-compatible server (roles.judge.base_urls; repeatable)",
        ),
    ),
    "price_in": (
        float | None,
        typer.Option(None, "--price-in", min=0, help="USD per million prompt tokens (cost shown)"),
    ),
    "price_out": (float | None, typer.Option(None, "--price-out", min=0, help="USD per million completion tokens")),
    "batch": (
        bool | None,
        typer.Option(
            None,
            "--batch/--no-batch",
            help="answer through the OpenAI Batch API in waves, at its discount (openai backend; docs/batch.md)",
        ),
    ),
    "rpm": (
        float | None,
        typer.Option(None, "--rpm", min=0.001, help="at most N requests a minute (openai backend; lowered on 429s)"),
    ),
    "tpm": (
        float | None,
        typer.Option(
            None,
            "--tpm",
            min=1,
            help="at most N tokens a minute, prompt + completion (openai backend; lowered on 429s)",
        ),
    ),
}


def with_run_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` given RUN_OPTIONS on the command line and the RunConfig they make as `config`."""
    own = [p for name, p in signature(command).parameters.items() if name != "config"]
    shared = [
        Parameter(name, Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in RUN_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        settings = {name: kwargs.pop(name) for name in RUN_OPTIONS}
        return command(config=run_config(**settings), **kwargs)

    wrapper.__signature__ = Signature([*own, *shared])  # what typer reads
    return wrapper


def run_config(config_path, profile, backend, base_url, **flags) -> Any:
    """The run's settings: profile, then --config, then flags; bad names and values are one-line errors."""
    from trace_builder.llm.dialects import AUTO, DIALECTS

    if backend is not None and backend not in BACKEND_KINDS:
        raise UserError(f"unknown backend {backend!r}: use {', '.join(BACKEND_KINDS)}")
    if profile is not None and profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}: use {', '.join(PROFILES)}")
    dialect = flags["structured_output"]
    if dialect is not None and dialect not in (AUTO, *DIALECTS):
        raise UserError(f"unknown --structured-output {dialect!r}: use {AUTO} or one of {', '.join(DIALECTS)}")
    config = load_config(config_path, profile=profile, backend_kind=backend or ("openai" if base_url else None))
    if backend is not None:
        config.backend.kind = backend
    if base_url:
        config.backend.base_urls = list(base_url)
        if backend is None:
            config.backend.kind = "openai"
    for flag, (section, setting) in _FLAG_SETTINGS.items():
        if flags[flag] is not None:
            value = str(flags[flag]) if isinstance(flags[flag], Path) else flags[flag]
            setattr(getattr(config, section), setting, value)
    if flags["decontaminate"]:
        config.decontamination.files += [str(path) for path in flags["decontaminate"]]
    judge = dict(config.roles.get("judge", {}))
    if flags["judge_model"] is not None:
        judge["model"] = flags["judge_model"]
    if flags["judge_base_url"]:
        judge.update(kind="openai", base_urls=list(flags["judge_base_url"]))
    if judge:
        config.roles = {**config.roles, "judge": judge}
    # Flags are checked as a file's settings are: the first invalid one is one line naming it.
    return validate_settings(type(config), config.model_dump(), "the command line's", "flags of")


# flag -> (config section, setting): a flag given sets it over the profile and the config file.
_FLAG_SETTINGS = {
    "limit": ("seeds", "limit"),
    "seeds": ("seeds", "source"),
    "seed_column": ("seeds", "text_column"),
    "model": ("backend", "model"),
    "concurrency": ("backend", "concurrency"),
    "batch": ("backend", "batch"),
    "structured_output": ("backend", "structured_output"),
    "rpm": ("backend", "requests_per_minute"),
    "tpm": ("backend", "tokens_per_minute"),
    "train_rows": ("target", "train_rows"),
    "eval_rows": ("target", "eval_rows"),
    "max_seeds": ("target", "max_seeds"),
    "price_in": ("prices", "input_per_million"),
    "price_out": ("prices", "output_per_million"),
}


@app.command()
@with_run_settings
def run(
    config: Any,
    stage: str = typer.Option(
        "all", "--stage", help="all, or one stage: seeds, taxonomy, expand, respond, perturb, filter"
    ),
    out: Path = typer.Option(Path("runs/default"), "--out", help="run directory"),
    fresh: bool = typer.Option(False, "--fresh", help="rebuild the chosen stages from scratch (keeps the LLM cache)"),
    cancel_batches: bool = typer.Option(
        False, "--cancel-batches", help="cancel the run's pending batches at the provider (batch mode), then stop"
    ),
) -> None:
    """Run the data pipeline (or one stage), resuming where a previous run stopped."""
    from trace_builder.pipeline.runner import describe_summary, failed_on_requests, run_pipeline

    if cancel_batches:
        from trace_builder.pipeline.runner import cancel_batches as cancel_pending

        for line in asyncio.run(cancel_pending(config, out)):
            console.print(line, highlight=False, soft_wrap=True)
        return

    names = _stage_names()
    if stage != "all" and stage not in names:
        raise UserError(f"unknown stage {stage!r}: use all or one of {', '.join(names)}")
    stages = list(names) if stage == "all" else [stage]
    summary = asyncio.run(run_pipeline(config, out, stages, fresh=fresh, console=console))
    describe_summary(summary, console)
    if failed_on_requests(summary):
        top = ", ".join(f"{reason} ({n})" for reason, n in summary.failure_reasons.most_common(3))
        console.print(
            f"[red]error:[/red] no final rows: every row failed on a request to the server ({top}); "
            f"the server's messages: `trace-build inspect {failures_view(out, summary)}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def failures_view(out: Path, summary) -> str:
    """The `inspect` arguments that show the server's messages for the run's most common failure."""
    from trace_builder.pipeline.failures import PIPELINE_SIDES

    label = summary.failure_reasons.most_common(1)[0][0].split(": ", 1)[0]
    side = next((s for s in PIPELINE_SIDES if s.name == label), None)
    if side is not None:  # a side dataset's failure is recorded in its stage's rows, without the detail
        return f"{out / side.stage} --columns {side.reason}"
    return f"{out / label} --columns reason,failure_detail"


@app.command()
def status(out: Path = typer.Option(Path("runs/default"), "--out", help="run directory")) -> None:
    """Show each stage of a run: done / partial / pending, shards, rows, failures, tokens."""
    from trace_builder.report.status import run_details, stage_rows, status_table
    from trace_builder.run.folder import check_run_dir

    check_run_dir(out)  # a file, a stage folder, some other folder: says which
    screen = Console()
    table, hidden = status_table(stage_rows(out), f"stages of {out}", screen.width)
    screen.print(table)
    if hidden:
        screen.print(f"[dim]hidden to fit {screen.width} columns: {', '.join(hidden)}[/dim]", highlight=False)
    for line in run_details(out):
        screen.print(line, highlight=False)
    from trace_builder.run.progress import run_status_lines

    for line in run_status_lines(out):  # tokens and cost so far; ETAs while a run is live
        screen.print(line, highlight=False)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="run folder, stage folder (e.g. runs/x/respond), final dataset or .parquet"),
    limit: int = typer.Option(5, "--limit", min=0, help="rows to print"),
    show_stats: bool = typer.Option(False, "--stats", help="distributions instead of rows"),
    where: str | None = typer.Option(None, "--where", help="pandas query, e.g. \"status == 'failed'\""),
    columns: str | None = typer.Option(None, "--columns", help="only these columns, e.g. id,constraint_count,prompt"),
    sample: int | None = typer.Option(None, "--sample", min=1, help="N rows drawn at random instead of the first"),
    seed: int = typer.Option(0, "--seed", help="the random draw of --sample (same seed, same rows)"),
    as_json: bool = typer.Option(False, "--json", help="rows as JSON lines instead of a table"),
) -> None:
    """Print rows of a stage or dataset as a table (or JSON lines), or their distributions with --stats."""
    from trace_builder.report.inspect import apply_where, load_frame, stats

    frame = apply_where(load_frame(path), where)
    if show_stats:
        manifest_dir = path if path.is_dir() else path.parent
        report = stats(frame, manifest_dir)
        if (path / "final").is_dir():
            from trace_builder.report.fidelity import fidelity_report

            report["fidelity"] = fidelity_report(path)
        print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    from trace_builder.report.inspect import json_lines, parse_columns, pick_rows, row_tables

    chosen = parse_columns(columns, [str(c) for c in frame.columns])
    rows = pick_rows(frame, limit=limit, sample=sample, seed=seed)
    rows = rows if chosen is None else rows[chosen]
    if as_json:
        for line in json_lines(rows):
            print(line)
        return
    screen = Console()
    for table in row_tables(rows):
        screen.print(table)
    screen.print(f"[dim]{len(rows)} of {len(frame)} rows[/dim]", highlight=False)


@app.command()
def export(
    out: Path = typer.Option(Path("runs/default"), "--out", help="run directory"),
    fmt: str = typer.Option(..., "--format", help="trace-jsonl | llamafactory | trl | grpo"),
    dest: Path = typer.Option(..., "--dest", help="output file (trace-jsonl, grpo) or folder"),
    split: str = typer.Option("eval", "--split", help="trace-jsonl, grpo: the split to export (sft, dpo, iopo, eval)"),
    iopo_layout: str = typer.Option(
        "pairs",
        "--iopo-layout",
        help="pairs: each IOPO group as (x1: y1 > y2) and (x2: y2 > y1), for stock DPO; "
        "fork: x1, x2 as two human turns (the IOPO LLaMA-Factory fork)",
    ),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="write empty files for 0-row splits"),
) -> None:
    """Export final datasets for other tools (docs/exports.md)."""
    from trace_builder.report.export import export as do_export

    written = do_export(out, fmt, dest, split=split, iopo_layout=iopo_layout, allow_empty=allow_empty)
    for name, count in written.items():
        console.print(f"{name}: {count} rows" + ("  [yellow]warning: empty[/yellow]" if count == 0 else ""))


@app.command()
def view(
    path: Path = typer.Argument(..., help="a final dataset (e.g. runs/x/final/sft), stage folder or .parquet file"),
    dest: Path = typer.Option(Path("view.html"), "-o", "--output", help="the HTML file to write"),
) -> None:
    """Write a self-contained HTML record viewer (search, filters, each constraint's score); no network needed."""
    from trace_builder.report.viewer import write_viewer

    console.print(f"wrote {dest} ({write_viewer(path, dest)} rows)", highlight=False)


@app.command()
@with_run_settings
def plan(
    config: Any,
    out: Path = typer.Option(
        Path("runs/default"), "--out", help="the run directory (the pilot's answers go to its cache)"
    ),
    pilot: int = typer.Option(
        DEFAULT_PILOT, "--pilot", min=1, help="seeds run through every stage to measure, at first"
    ),
    precision: float = typer.Option(
        PILOT_PRECISION,
        "--precision",
        min=0.0,
        help=f"grow the pilot (up to {MAX_PILOT:,} seeds) until one sd of the projected requests is within this share; 1 keeps it at --pilot",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the plan as one JSON object"),
) -> None:
    """Run a pilot of the run's first seeds and project the whole run: seeds, requests, tokens, time, cost."""
    from rich.table import Table

    from trace_builder.pipeline.plan import make_plan, plan_summary_lines, plan_table_rows

    result = asyncio.run(make_plan(config, out, pilot=pilot, precision=precision, console=console))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"plan for {out} (the whole run, pilot included)")
    for column in ("stage", "requests", "prompt tokens", "completion tokens"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in plan_table_rows(result):
        table.add_row(*row)
    screen = Console()
    screen.print(table)
    for line in plan_summary_lines(result):
        screen.print(line, highlight=False)


@app.command()
def card(out: Path = typer.Option(Path("runs/default"), "--out", help="run directory")) -> None:
    """(Re)write the dataset card: <run>/final/README.md with the Hub's metadata, statistics and figures."""
    from trace_builder.report.card import write_card

    console.print(f"wrote {write_card(out)}", highlight=False)


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
    except ImportError as exc:  # shown when `eval` is asked for, never hidden
        _eval_missing = f"{exc} ({missing_package_fix(exc) or 'reinstall trace-build'})"

        @app.command("eval")
        def eval_unavailable() -> None:
            """Evaluate a model with TRACE's protocol (unavailable: see the error)."""
            raise UserError(f"evaluation is unavailable: {_eval_missing}")
    else:
        app.add_typer(eval_app, name="eval")


_register_optional_commands()


def main() -> None:
    import sqlite3

    from trace_builder.run import exits
    from trace_builder.run.redact import redact_text

    exits.watch_signals()
    exits.show_warnings(console)
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into a returned 130
    except UserError as exc:
        console.print(f"[red]error:[/red] {redact_text(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ServerRefused as exc:
        console.print(f"[red]error:[/red] {redact_text(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except ModelLoadError as exc:
        console.print(f"[red]error:[/red] {exits.model_load_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(exits.EXIT_MODEL)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except (OSError, sqlite3.Error) as exc:  # a full disk, a read-only --out: what was written stays valid
        console.print(f"[red]error:[/red] {exits.os_error_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(exits.EXIT_IO)
    except Exception as exc:
        # Usage errors (bad flag values, unknown options) come as the CLI library's own
        # exception types, which know how to print themselves in one short block.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)
        raise
    if code == 130:
        console.print(f"[red]{exits.INTERRUPTED}[/red]", highlight=False)
        sys.exit(exits.interrupted_status())
    if isinstance(code, int) and code:
        sys.exit(code)
