"""`trace-build eval`: evaluate a model on TRACE (official file or our eval split), and compare runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from trace_builder.config import BACKEND_KINDS
from trace_builder.errors import UserError

eval_app = typer.Typer(
    add_completion=False,
    help="Evaluate a model with TRACE's protocol (IF-S / IF-M, per-constraint judging); `compare` puts runs side by side.",
)
console = Console(stderr=True)


def _backend_kind(value: str | None, flag: str) -> str | None:
    if value is not None and value not in BACKEND_KINDS:
        raise UserError(f"unknown {flag} {value!r}: use {', '.join(BACKEND_KINDS)}")
    return value


def apply_overrides(
    config,
    *,
    model: str | None = None,
    backend: str | None = None,
    base_url: list[str] | None = None,
    judge_model: str | None = None,
    judge_backend: str | None = None,
    judge_base_url: list[str] | None = None,
    concurrency: int | None = None,
    limit: int | None = None,
    sample: int | None = None,
    max_tokens: int | None = None,
):
    """Flags over the YAML config. A base URL without a backend flag means an OpenAI-compatible server."""
    for target, kind, url, name in (
        (config.model, backend, base_url, model),
        (config.judge, judge_backend, judge_base_url, judge_model),
    ):
        if kind is not None:
            target.kind = kind
        if url:
            target.base_urls = list(url)
            if kind is None:
                target.kind = "openai"
        if name is not None:
            target.model = name
        if concurrency is not None:
            target.concurrency = concurrency
    if limit is not None:
        config.limit = limit
    if sample is not None:
        config.sample = sample
    if max_tokens is not None:
        config.generation.max_tokens = max_tokens
    return config


@eval_app.callback(invoke_without_command=True)
def eval_command(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None,
        "--data",
        help="official TRACE JSONL, or our final/eval Parquet (file or folder); default: the official TRACE "
        "eval set shipped with trace-build",
    ),
    out: Path | None = typer.Option(None, "--out", help="folder for predictions, judgements, metrics.json and reports"),
    model: str | None = typer.Option(
        None, "--model", help="model under test: served name (openai/vllm) or local path / gemma3-270m"
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="backend of the model under test: local | openai | vllm"
    ),
    base_url: list[str] | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server of the model (repeat for replicas)"
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="judge model name or path"),
    judge_backend: str | None = typer.Option(None, "--judge-backend", help="judge backend: local | openai | vllm"),
    judge_base_url: list[str] | None = typer.Option(
        None, "--judge-base-url", help="OpenAI-compatible server of the judge (repeatable)"
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="requests in flight per backend (default 64)"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="evaluate only the first N items"),
    sample: int | None = typer.Option(None, "--sample", min=1, help="evaluate N items stratified by constraint count"),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=1, help="answer length limit of the model under test"
    ),
    config_path: Path | None = typer.Option(None, "--config", help="eval YAML (default: configs/eval/default.yaml)"),
    fresh: bool = typer.Option(False, "--fresh", help="discard this folder's earlier results (keeps the LLM cache)"),
) -> None:
    """Generate with the model under test, judge every constraint 0..10, report IF-S / IF-M with 95% CIs."""
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise UserError(
            "trace-build eval needs --out DIR (and --data PATH for another set than the official TRACE eval set; "
            "or the subcommand: trace-build eval compare DIR DIR ...)"
        )
    if data is None:
        from trace_builder.resources import official_eval_path

        data = official_eval_path()
    from trace_builder.evaluate.runner import evaluate_path
    from trace_builder.evaluate.settings import load_eval_config

    config = apply_overrides(
        load_eval_config(config_path),
        model=model,
        backend=_backend_kind(backend, "--backend"),
        base_url=base_url,
        judge_model=judge_model,
        judge_backend=_backend_kind(judge_backend, "--judge-backend"),
        judge_base_url=judge_base_url,
        concurrency=concurrency,
        limit=limit,
        sample=sample,
        max_tokens=max_tokens,
    )
    outcome = asyncio.run(evaluate_path(data, out, config, fresh=fresh, console=console))
    _print_summary(outcome, out)


def _print_summary(outcome, out: Path) -> None:
    from trace_builder.evaluate.report import ci, pct

    m, stats = outcome.metrics, outcome.stats
    console.print(
        f"IF-S {pct(m['if_s'])} {ci(m['if_s'])}   IF-M {pct(m['if_m'])} {ci(m['if_m'])}   "
        f"IF {pct(m['overall'])}   CSR {pct(m['csr'])}   ({m['items']['judged']}/{m['items']['total']} judged)"
    )
    if len(m.get("by_language", {})) > 1:
        console.print(
            "   ".join(f"{lang} {pct(r)} {ci(r)}" for lang, r in m["by_language"].items()) + "   (IF by language)"
        )
    if m["items"]["failure_reasons"]:
        reasons = ", ".join(f"{k} x{v}" for k, v in m["items"]["failure_reasons"].items())
        console.print(f"[yellow]left out of the rates:[/yellow] {reasons}")
    console.print(
        f"[dim]{stats.items} items this run ({stats.skipped_items} already done) in {stats.wall_s:.1f} s, "
        f"{stats.requests} requests ({stats.requests_per_s:.3g}/s); reports: {out / 'report.md'}, {out / 'report.html'}[/dim]"
    )


@eval_app.command("compare")
def compare_command(
    folders: list[Path] = typer.Argument(..., help="eval folders written by `trace-build eval --out`"),
    html: Path | None = typer.Option(None, "--html", help="also write the comparison as a self-contained HTML page"),
) -> None:
    """Put several eval runs side by side (e.g. SFT vs DPO vs IOPO)."""
    from trace_builder.evaluate.compare import comparison_table, load_runs, paired_table, render_comparison_html

    runs = load_runs(folders)
    Console().print(comparison_table(runs))
    if len(runs) > 1:
        Console().print(paired_table(runs))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_comparison_html(runs), encoding="utf-8")
        console.print(f"[dim]wrote {html}[/dim]")
