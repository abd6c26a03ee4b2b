"""Put several eval runs side by side (e.g. SFT vs DPO vs IOPO): a terminal table and an HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from trace_builder.errors import UserError
from trace_builder.evaluate.report import (
    HEADLINE,
    Run,
    count_chart,
    dimension_chart,
    dimension_label,
    headline_chart,
    html_page,
    html_table,
    pct,
)
from trace_builder.evaluate.results import run_from_folder


def load_runs(folders: Sequence[Path]) -> list[Run]:
    if len(folders) < 1:
        raise UserError("eval compare needs at least one eval folder: trace-build eval compare DIR DIR ...")
    runs = [run_from_folder(Path(f)) for f in folders]
    # Folders named alike (runs/sft/eval, runs/dpo/eval) are told apart by their parent.
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        runs = [
            Run(f"{Path(f).resolve().parent.name}/{r.name}", r.metrics, r.model, r.judge, r.data)
            for f, r in zip(folders, runs)
        ]
    return runs


def _cell(rate) -> str:
    value = pct(rate)
    if value == "–" or rate.get("low") is None:
        return value
    return f"{value} ({100 * rate['low']:.1f}-{100 * rate['high']:.1f})"


def comparison_rows(runs: Sequence[Run]) -> list[list[str]]:
    """Metric per row, run per column: headline, mean score, per type CSR, per count IF, per dimension CSR."""
    rows = [[label] + [_cell(r.metrics[key]) for r in runs] for key, label in HEADLINE]
    rows.append(
        ["mean score"]
        + [
            f"{r.metrics['mean_score']['value']:.2f}" if r.metrics["mean_score"]["value"] is not None else "–"
            for r in runs
        ]
    )
    rows.append(["judged / total"] + [f"{r.metrics['items']['judged']}/{r.metrics['items']['total']}" for r in runs])

    def keys(section: str) -> list[str]:
        seen: list[str] = []
        for run in runs:
            seen += [k for k in run.metrics[section] if k not in seen]
        return seen

    for t in keys("by_type"):
        rows.append([f"CSR {t}"] + [_cell(r.metrics["by_type"].get(t, {}).get("csr")) for r in runs])
    for c in sorted(keys("by_count"), key=int):
        rows.append([f"IF C={c}"] + [_cell(r.metrics["by_count"].get(c)) for r in runs])
    for d in keys("by_dimension"):
        rows.append(
            [f"CSR {dimension_label(d)}"] + [_cell(r.metrics["by_dimension"].get(d, {}).get("csr")) for r in runs]
        )
    return rows


def comparison_table(runs: Sequence[Run]) -> Table:
    table = Table(title="TRACE eval comparison (%, 95% CI)", show_lines=False)
    table.add_column("metric")
    for run in runs:
        table.add_column(run.name, justify="right")
    for row in comparison_rows(runs):
        table.add_row(*row)
    return table


def render_comparison_html(runs: Sequence[Run]) -> str:
    facts = html_table(
        ["run", "model under test", "judge", "data", "judged / total"],
        [
            [r.name, r.model, r.judge, r.data, f"{r.metrics['items']['judged']}/{r.metrics['items']['total']}"]
            for r in runs
        ],
    )
    body = [
        "<h1>TRACE evaluation: comparison</h1>",
        facts,
        headline_chart(runs),
        count_chart(runs),
        dimension_chart(runs),
        "<h2>All metrics</h2>",
        html_table(["metric"] + [r.name for r in runs], comparison_rows(runs)),
    ]
    judges = {r.judge for r in runs}
    if len(judges) > 1:
        body.insert(
            1,
            '<p class="note"><b>Note:</b> these runs were scored by different judges; their rates are not directly comparable.</p>',
        )
    return html_page("TRACE evaluation: comparison", "\n".join(body))
