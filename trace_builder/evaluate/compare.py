"""Put several eval runs side by side (e.g. SFT vs DPO vs IOPO): a terminal table and an HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from trace_builder.errors import UserError
from trace_builder.evaluate.metrics import PAIRED_METRICS, paired_bootstrap
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
from trace_builder.evaluate.results import item_result, run_from_folder

PAIRED_RESAMPLES = 10_000


def load_runs(folders: Sequence[Path]) -> list[Run]:
    if len(folders) < 1:
        raise UserError("eval compare needs at least one eval folder: trace-build eval compare DIR DIR ...")
    runs = [run_from_folder(Path(f)) for f in folders]
    # Folders named alike (runs/sft/eval, runs/dpo/eval) are told apart by their parent.
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        runs = [
            Run(f"{Path(f).resolve().parent.name}/{r.name}", r.metrics, r.model, r.judge, r.data, r.settings, r.items)
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


def paired_tests(runs: Sequence[Run], resamples: int = PAIRED_RESAMPLES) -> list[tuple[str, dict]]:
    """Each later run against the first, per headline metric, on the items both judged."""
    if len(runs) < 2:
        return []
    base = [item_result(item) for item in runs[0].items]
    tests = []
    for run in runs[1:]:
        other = [item_result(item) for item in run.items]
        tests += [(run.name, paired_bootstrap(base, other, metric, resamples=resamples)) for metric in PAIRED_METRICS]
    return tests


def paired_rows(runs: Sequence[Run], resamples: int = PAIRED_RESAMPLES) -> list[list[str]]:
    """Each later run minus the first: metric, difference in points with its 95% CI, p-value, items paired."""
    labels = dict(HEADLINE)
    rows = []
    for name, test in paired_tests(runs, resamples):
        if test["difference"] is None:
            rows.append([name, labels[test["metric"]], "–", "–", "–", str(test["paired_items"])])
            continue
        rows.append(
            [
                name,
                labels[test["metric"]],
                f"{100 * test['difference']:+.1f}",
                f"[{100 * test['low']:+.1f}, {100 * test['high']:+.1f}]",
                f"{test['p_value']:.3g}",
                str(test["paired_items"]),
            ]
        )
    return rows


PAIRED_HEADER = ["run", "metric", "Δ points", "95% CI", "p", "paired items"]


def paired_table(runs: Sequence[Run]) -> Table:
    table = Table(title=f"Each run minus {runs[0].name}: paired bootstrap on shared items, two-sided p")
    for column in PAIRED_HEADER:
        table.add_column(column, justify="left" if column in ("run", "metric") else "right", no_wrap=True)
    for row in paired_rows(runs):
        table.add_row(*row)
    return table


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
    if len(runs) > 1:
        body += [
            f"<h2>Paired bootstrap against {runs[0].name}</h2>",
            '<p class="note">On the items both runs judged, resampled together '
            f"({PAIRED_RESAMPLES} resamples); two-sided p-value of no difference.</p>",
            html_table(PAIRED_HEADER, paired_rows(runs)),
        ]
    judges = {r.judge for r in runs}
    if len(judges) > 1:
        body.insert(
            1,
            '<p class="note"><b>Note:</b> these runs were scored by different judges; their rates are not directly comparable.</p>',
        )
    return html_page("TRACE evaluation: comparison", "\n".join(body))
