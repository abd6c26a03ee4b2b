"""Turn an eval folder's judgements into metrics.json and its reports (markdown + HTML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from trace_builder.errors import UserError
from trace_builder.evaluate.metrics import ItemResult, compute_metrics
from trace_builder.evaluate.report import Run, render_html, render_markdown
from trace_builder.run.store import read_json, read_parquet_dir, write_json_atomic

METRICS = "metrics.json"


def item_result(row: dict[str, Any]) -> ItemResult:
    """What the metrics need from one judgement row."""
    scores = row["scores"]
    return ItemResult(
        id=str(row["id"]),
        dimensions=tuple(str(d) for d in row["dimensions"]),
        scores=None if scores is None else tuple(int(s) for s in scores),
        status=str(row["status"]),
        reason=str(row["reason"] or ""),
        language=str(row["language"] or ""),
    )


def item_results(judgements: pd.DataFrame) -> list[ItemResult]:
    return [item_result(row) for row in plain_rows(judgements)]


def plain_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as plain dicts: lists for array columns, None for nulls."""
    frame = frame.astype(object).where(frame.notna(), None)
    return [
        {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()} for row in frame.to_dict("records")
    ]


def run_from_folder(out_dir: Path, name: str | None = None) -> Run:
    """A finished eval folder as a Run (metrics.json plus the names in run.json)."""
    out_dir = Path(out_dir)
    metrics_path = out_dir / METRICS
    if not metrics_path.is_file():
        raise UserError(f"{out_dir} holds no {METRICS}: pass a folder written by `trace-build eval --out`")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(
            f"{metrics_path} is not valid JSON: rerun `trace-build eval` on that folder to rewrite it"
        ) from None
    # Folders written before eval ran on the stage store keep their names in eval.json.
    manifest = read_json(out_dir / "run.json") or read_json(out_dir / "eval.json") or {}
    model = manifest.get("model", {})
    judge = manifest.get("judge", {})
    return Run(
        name=name or out_dir.resolve().name,
        metrics=metrics,
        model=f"{model.get('kind', '?')}:{model.get('model', '?')}" if model else "",
        judge=f"{judge.get('kind', '?')}:{judge.get('model', '?')}" if judge else "",
        data=str(manifest.get("data", "")),
        settings=manifest.get("config", {}),
        items=tuple(plain_rows(read_parquet_dir(out_dir / "judgements"))),
    )


def finalize(out_dir: Path, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Metrics over every judged item in the folder, written with report.md and report.html."""
    out_dir = Path(out_dir)
    judgements = read_parquet_dir(out_dir / "judgements")
    if judgements.empty:
        raise UserError(f"{out_dir} holds no judgements yet: run `trace-build eval --out {out_dir}` first")
    metrics = compute_metrics(item_results(judgements), resamples=resamples, seed=seed, confidence=confidence)
    write_json_atomic(out_dir / METRICS, metrics)
    run = run_from_folder(out_dir)
    (out_dir / "report.md").write_text(render_markdown(run), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(run), encoding="utf-8")
    return metrics
