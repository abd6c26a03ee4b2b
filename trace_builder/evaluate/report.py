"""Render eval metrics as markdown and as one self-contained HTML page (inline SVG plots, no assets)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trace_builder.taxonomy import get_dimension

PALETTE = ("#3b6fb6", "#e07b39", "#4e9a5b", "#b8474b", "#7d5ba6", "#8c6d3f", "#c2549d", "#5f6b73")

HEADLINE = (("if_s", "IF-S"), ("if_m", "IF-M"), ("overall", "IF (all)"), ("csr", "CSR"))


@dataclass(frozen=True)
class Run:
    """One evaluation's metrics, the facts that name it, its settings and its judged items."""

    name: str
    metrics: dict[str, Any]
    model: str = ""
    judge: str = ""
    data: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # run.json's eval config
    items: tuple[dict[str, Any], ...] = ()  # judgement rows (evaluate/stages.JUDGEMENT_SCHEMA)


def pct(rate: dict[str, Any] | None) -> str:
    if not rate or rate.get("value") is None:
        return "–"
    return f"{100 * rate['value']:.1f}"


def ci(rate: dict[str, Any] | None) -> str:
    if not rate or rate.get("value") is None or rate.get("low") is None:
        return "–"
    return f"[{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"


def dimension_label(dimension: str) -> str:
    try:
        found = get_dimension(dimension)
    except KeyError:
        return dimension
    return found.label_en.removesuffix(" Constraint")


# ---------------------------------------------------------------- tables (rows of cells)


def headline_rows(metrics: dict[str, Any]) -> list[list[str]]:
    rows = [
        [label, pct(metrics[key]), ci(metrics[key]), f"{metrics[key]['hits']}/{metrics[key]['n']}"]
        for key, label in HEADLINE
    ]
    mean = metrics["mean_score"]
    if mean.get("value") is None:
        rows.append(["mean score (0-10)", "–", "–", str(mean["n"])])
    else:
        rows.append(
            ["mean score (0-10)", f"{mean['value']:.2f}", f"[{mean['low']:.2f}, {mean['high']:.2f}]", str(mean["n"])]
        )
    return rows


def count_rows(metrics: dict[str, Any]) -> list[list[str]]:
    return [[c, pct(r), ci(r), f"{r['hits']}/{r['n']}"] for c, r in metrics["by_count"].items()]


def type_rows(metrics: dict[str, Any]) -> list[list[str]]:
    return [
        [t, pct(v["csr"]), ci(v["csr"]), str(v["csr"]["n"]), pct(v["if"]), str(v["if"]["n"])]
        for t, v in metrics["by_type"].items()
    ]


def dimension_rows(metrics: dict[str, Any]) -> list[list[str]]:
    return [
        [
            v["type"],
            dimension_label(d),
            pct(v["csr"]),
            ci(v["csr"]),
            str(v["csr"]["n"]),
            pct(v["if"]),
            str(v["if"]["n"]),
        ]
        for d, v in metrics["by_dimension"].items()
    ]


def language_rows(metrics: dict[str, Any]) -> list[list[str]]:
    return [[lang, pct(r), ci(r), f"{r['hits']}/{r['n']}"] for lang, r in metrics.get("by_language", {}).items()]


def flatten_settings(settings: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as (dotted key, value) pairs, in their order."""
    pairs: list[tuple[str, str]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += flatten_settings(value, name + ".")
        elif isinstance(value, list):
            pairs.append((name, ", ".join(str(v) for v in value)))
        else:
            pairs.append((name, "–" if value is None or value == {} else str(value)))
    return pairs


def settings_rows(run: Run) -> list[list[str]]:
    return [[key, value] for key, value in flatten_settings(run.settings)]


def verdict(item: dict[str, Any]) -> str:
    if item.get("status") != "ok":
        return f"{item.get('status')}: {item.get('reason') or 'unknown'}"
    return "followed" if item.get("followed") else "not followed"


def _texts(value: Any) -> list:
    return [] if value is None else list(value)


def item_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per item: id, language, constraint count, verdict, the scores in constraint order."""
    return [
        [
            str(item["id"]),
            str(item.get("language") or ""),
            str(len(_texts(item.get("constraints")))),
            verdict(item),
            " ".join(str(s) for s in _texts(item.get("scores"))) or "–",
        ]
        for item in items
    ]


def constraint_rows(item: dict[str, Any]) -> list[list[str]]:
    """Each constraint of one item: its text, dimension, score, who decided it and the judge's note."""
    constraints = _texts(item.get("constraints"))
    dimensions = _texts(item.get("dimensions"))
    scores = _texts(item.get("scores"))
    decided = _texts(item.get("decided_by"))
    details = _texts(item.get("details"))

    def at(values: list, i: int) -> str:
        return "–" if i >= len(values) or values[i] is None else str(values[i])

    return [
        [str(i + 1), text, dimension_label(at(dimensions, i)), at(scores, i), at(decided, i), at(details, i)]
        for i, text in enumerate(constraints)
    ]


def failure_rows(metrics: dict[str, Any]) -> list[list[str]]:
    return [[reason, str(count)] for reason, count in metrics["items"]["failure_reasons"].items()]


def coverage_line(metrics: dict[str, Any]) -> str:
    items = metrics["items"]
    return (
        f"{items['judged']} of {items['total']} items judged; every rate counts all {items['total']} items "
        f"({items['constraints']} constraints): {items['generation_failed']} items whose answer failed and "
        f"{items['judge_failed']} whose judgement failed count as not followed, each constraint at 0 "
        "(reasons below; a plain rerun re-asks what failed for a transient reason)."
    )


# ---------------------------------------------------------------- markdown


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def interval_note(metrics: dict[str, Any]) -> str:
    boot = metrics["bootstrap"]
    level = int(round(boot["confidence"] * 100))
    if "intervals" not in metrics:  # metrics.json written before Wilson intervals
        return f"rates in %, with {level}% bootstrap intervals ({boot['resamples']} resamples of the items, seed {boot['seed']})."
    return (
        f"rates in %, with {level}% intervals: Wilson score for instruction rates; for CSR a bootstrap over the items "
        f"({boot['resamples']} resamples, seed {boot['seed']}) widened to the Wilson interval."
    )


def render_markdown(run: Run) -> str:
    m = run.metrics
    parts = [
        f"# TRACE evaluation: {run.name}",
        "",
        f"- data: `{run.data}`" if run.data else "",
        f"- model under test: `{run.model}`" if run.model else "",
        f"- judge: `{run.judge}`" if run.judge else "",
        f"- {coverage_line(m)}",
        f"- {interval_note(m)}",
        "- followed = every constraint scored 10; IF-S on single-constraint items, IF-M on multi-constraint items; CSR = share of constraints scored 10.",
        "",
        "## Headline",
        markdown_table(["metric", "%", "95% CI", "hits/n"], headline_rows(m)),
        "",
        "## Followed rate by constraint count",
        markdown_table(["constraints", "IF %", "95% CI", "hits/n"], count_rows(m)),
        "",
        "## Followed rate by language",
        markdown_table(["language", "IF %", "95% CI", "hits/n"], language_rows(m)),
        "",
        "## By constraint type",
        markdown_table(["type", "CSR %", "95% CI", "constraints", "IF % (items with the type)", "items"], type_rows(m)),
        "",
        "## By dimension",
        markdown_table(
            ["type", "dimension", "CSR %", "95% CI", "constraints", "IF % (items with it)", "items"], dimension_rows(m)
        ),
    ]
    if m["items"]["failure_reasons"]:
        parts += [
            "",
            "## Failures (excluded from the rates)",
            markdown_table(["status:reason", "items"], failure_rows(m)),
        ]
    if run.settings:
        parts += ["", "## Settings", markdown_table(["setting", "value"], settings_rows(run))]
    if run.items:
        parts += [
            "",
            "## Items (scores in constraint order; report.html lists each constraint's verdict)",
            markdown_table(["id", "language", "constraints", "verdict", "scores"], item_rows(run.items)),
        ]
    return "\n".join(p for p in parts if p is not None).replace("\n\n\n", "\n\n") + "\n"


# ---------------------------------------------------------------- SVG


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def bar_chart_svg(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[dict[str, Any] | None]]],
    *,
    horizontal: bool,
    axis_label: str = "%",
) -> str:
    """Grouped bars of rates in [0, 1] with their confidence intervals as whiskers.

    `series` is [(run name, [rate per category])]; a rate is a metrics dict with value,
    low and high (or None where undefined, drawn as no bar).
    """
    groups, per_group = len(categories), max(1, len(series))
    bar = 12 if horizontal else 14
    gap = 10
    band = per_group * bar + gap
    legend_h = 22 if len(series) > 1 else 0
    longest = max((len(c) for c in categories), default=4)
    if horizontal:
        # ~6.5 px per character of an 11 px sans-serif label.
        left, right, top, bottom = 16 + int(6.5 * longest), 44, 34 + legend_h, 34
        plot_w, plot_h = 460, max(band * groups, 40)
    else:
        left, right, top, bottom = 46, 20, 34 + legend_h, 40
        plot_w, plot_h = max(band * groups, 420), 240
        band = plot_w / max(1, groups)
    width, height = left + plot_w + right, top + plot_h + bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_esc(title)}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>',
    ]
    for s, (name, _) in enumerate(series if len(series) > 1 else []):
        x = left + s * 150
        out.append(f'<rect x="{x}" y="{24}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{x + 14}" y="{33}">{_esc(name)}</text>')

    def scale(value: float) -> float:
        return value * (plot_w if horizontal else plot_h)

    def at(value: float, across: float) -> tuple[float, float]:
        """Where `value` on the value axis meets `across` along the category axis."""
        return (left + scale(value), top + across) if horizontal else (left + across, top + plot_h - scale(value))

    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        if horizontal:
            x = left + scale(tick)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
            out.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{int(tick * 100)}</text>')
        else:
            y = top + plot_h - scale(tick)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{int(tick * 100)}</text>')
    if horizontal:
        out.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">{_esc(axis_label)}</text>')
    else:
        out.append(
            f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2})">{_esc(axis_label)}</text>'
        )

    for g, category in enumerate(categories):
        start = g * band + (band - per_group * bar) / 2
        if horizontal:
            out.append(
                f'<text x="{left - 6}" y="{top + start + per_group * bar / 2 + 4:.1f}" text-anchor="end">{_esc(category)}</text>'
            )
        else:
            out.append(
                f'<text x="{left + start + per_group * bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_esc(category)}</text>'
            )
        for s, (name, rates) in enumerate(series):
            rate = rates[g] if g < len(rates) else None
            if not rate or rate.get("value") is None:
                continue
            color = PALETTE[s % len(PALETTE)]
            value, low, high = rate["value"], rate.get("low"), rate.get("high")
            tip = (
                f"{name}: {category} {100 * value:.1f}%"
                + (f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")
                + f" (n={rate.get('n')})"
            )
            across, mid = start + s * bar, start + s * bar + (bar - 2) / 2
            (x0, y0), (x1, y1) = at(0, across), at(value, across + bar - 2)
            out.append(
                f'<rect x="{min(x0, x1):.1f}" y="{min(y0, y1):.1f}" width="{abs(x1 - x0):.1f}" '
                f'height="{abs(y1 - y0):.1f}" fill="{color}"><title>{_esc(tip)}</title></rect>'
            )
            if low is not None:
                (x0, y0), (x1, y1) = at(low, mid), at(high, mid)
                out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#222"/>')
            if len(series) == 1:  # the value at the end of its bar (past the whisker)
                x, y = at(max(value, high if high is not None else value), mid)
                placed = (
                    f'x="{x + 4:.1f}" y="{y + bar / 2 - 2:.1f}"'
                    if horizontal
                    else f'x="{x:.1f}" y="{y - 3:.1f}" text-anchor="middle"'
                )
                out.append(f'<text {placed} font-size="10">{100 * value:.0f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def dimension_chart(runs: Sequence[Run]) -> str:
    dimensions: list[str] = []
    for run in runs:
        dimensions += [d for d in run.metrics["by_dimension"] if d not in dimensions]
    series = [(run.name, [run.metrics["by_dimension"].get(d, {}).get("csr") for d in dimensions]) for run in runs]
    return bar_chart_svg(
        "Constraint satisfaction by dimension (CSR %, 95% CI)",
        [dimension_label(d) for d in dimensions],
        series,
        horizontal=True,
        axis_label="constraints scored 10 (%)",
    )


def count_chart(runs: Sequence[Run]) -> str:
    counts: list[str] = []
    for run in runs:
        counts += [c for c in run.metrics["by_count"] if c not in counts]
    counts.sort(key=int)
    series = [(run.name, [run.metrics["by_count"].get(c) for c in counts]) for run in runs]
    return bar_chart_svg(
        "Instructions followed by constraint count (IF %, 95% CI)",
        counts,
        series,
        horizontal=False,
        axis_label="followed (%)",
    )


def headline_chart(runs: Sequence[Run]) -> str:
    series = [(run.name, [run.metrics[key] for key, _ in HEADLINE]) for run in runs]
    return bar_chart_svg("Headline rates (%, 95% CI)", [label for _, label in HEADLINE], series, horizontal=False)


# ---------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 13px; } svg { display: block; margin: 1em 0; }
details.item { margin: 2px 0; font-size: 13px; } details.item table { margin-left: 1.5em; }
details.item td:nth-child(2), details.item td:last-child { text-align: left; max-width: 32em; }
.ok { color: #2e7d32; } .miss { color: #b8474b; font-weight: bold; }
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def item_details_html(item: dict[str, Any]) -> str:
    """One item as a collapsed block: its verdict in the summary, each constraint's score inside."""
    mark = "ok" if item.get("followed") else "miss"
    summary = (
        f'<summary><span class="{mark}">{_esc(verdict(item))}</span> <code>{_esc(item["id"])}</code> '
        f"{_esc(item.get('language') or '')}, {len(_texts(item.get('constraints')))} constraints, scores "
        f"{_esc(' '.join(str(s) for s in _texts(item.get('scores'))) or '–')}</summary>"
    )
    table = html_table(["#", "constraint", "dimension", "score", "decided by", "judge's note"], constraint_rows(item))
    return f'<details class="item">{summary}{table}</details>'


def items_html(items: Sequence[dict[str, Any]]) -> str:
    missed = sum(1 for item in items if not item.get("followed"))
    return (
        f'<h2>Items</h2><p class="note">{len(items)} items, {missed} not followed or failed; open one for each '
        "constraint's score and whether a deterministic check (code) or the judge (llm) decided it.</p>"
        + "\n".join(item_details_html(item) for item in items)
    )


def render_html(run: Run) -> str:
    m = run.metrics
    facts = "".join(
        f"<li>{label}: <code>{_esc(value)}</code></li>"
        for label, value in (("data", run.data), ("model under test", run.model), ("judge", run.judge))
        if value
    )
    body = [
        f"<h1>TRACE evaluation: {_esc(run.name)}</h1>",
        f"<ul>{facts}<li>{_esc(coverage_line(m))}</li></ul>",
        f'<p class="note">{_esc(interval_note(m).capitalize())} Followed = every constraint scored 10; IF-S on '
        "single-constraint items, IF-M on multi-constraint items; CSR = share of constraints scored 10.</p>",
        "<h2>Headline</h2>",
        html_table(["metric", "%", "95% CI", "hits/n"], headline_rows(m)),
        count_chart([run]),
        html_table(["constraints", "IF %", "95% CI", "hits/n"], count_rows(m)),
        "<h2>By language</h2>",
        html_table(["language", "IF %", "95% CI", "hits/n"], language_rows(m)),
        "<h2>By constraint type</h2>",
        html_table(["type", "CSR %", "95% CI", "constraints", "IF % (items with the type)", "items"], type_rows(m)),
        "<h2>By dimension</h2>",
        dimension_chart([run]),
        html_table(
            ["type", "dimension", "CSR %", "95% CI", "constraints", "IF % (items with it)", "items"], dimension_rows(m)
        ),
    ]
    if m["items"]["failure_reasons"]:
        body += ["<h2>Failures (excluded from the rates)</h2>", html_table(["status:reason", "items"], failure_rows(m))]
    if run.settings:
        body += ["<h2>Settings</h2>", html_table(["setting", "value"], settings_rows(run))]
    if run.items:
        body.append(items_html(run.items))
    return html_page(f"TRACE evaluation: {run.name}", "\n".join(body))
