"""A self-contained HTML record viewer for a final dataset or stage folder: one file, inline JS/CSS, no network."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from trace_builder.errors import UserError
from trace_builder.evaluate.report import dimension_label
from trace_builder.evaluate.results import plain_rows
from trace_builder.records import FULL_MARKS
from trace_builder.report.inspect import load_frame

# The texts a row may carry, in reading order, with the name the viewer gives them.
TEXT_COLUMNS = (
    ("prompt", "x: the instruction"),
    ("response", "y: the answer"),
    ("chosen", "chosen"),
    ("rejected", "rejected"),
    ("prompt_2", "x2: the perturbed instruction"),
    ("response_2", "y2: the answer to x2"),
)
# Per-constraint score lists (FINAL_SCHEMAS), each with the list of who decided it where there is one.
CONSTRAINT_SETS = (
    ("constraints", "dimensions", (("scores", "decided_by"), ("scores_rejected", None), ("scores_x1_y2", None))),
    ("constraints_2", "dimensions_2", (("scores_x2_y2", "decided_by_2"), ("scores_x2_y1", None))),
)
SET_TITLES = {"constraints": "constraint of x", "constraints_2": "constraint of x2"}
SCORE_LABELS = {
    "scores": "score",
    "scores_rejected": "rejected's score",
    "scores_x1_y2": "y2 on x1",
    "scores_x2_y2": "score",
    "scores_x2_y1": "y1 on x2",
}
# Stage folders carry their own outcome; a final row's status is read from its scores.
STATUS_COLUMNS = ("filter_status", "iopo_status", "status")


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a dataset folder (part-*.parquet) or one .parquet file, as plain Python values."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a dataset folder such as RUN/final/sft or a .parquet file")
    return plain_rows(load_frame(path))


def row_status(row: dict[str, Any]) -> str:
    for column in STATUS_COLUMNS:
        if row.get(column):
            return str(row[column])
    scores = row.get("scores")
    if scores is None:
        return "unjudged"
    return "followed" if all(s is not None and s >= FULL_MARKS for s in scores) else "not followed"


def _at(values: list | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def constraint_views(row: dict[str, Any], texts: str, dims: str, score_sets: tuple) -> list[dict[str, Any]]:
    """Each constraint with its dimension and every score the row has for it (and who decided it)."""
    views = []
    for i, text in enumerate(row.get(texts) or []):
        scores = []
        for score_column, decided_column in score_sets:
            if row.get(score_column) is None:
                continue
            by = _at(row.get(decided_column), i) if decided_column else None
            scores.append({"label": SCORE_LABELS[score_column], "score": _at(row[score_column], i), "by": by})
        dimension = _at(row.get(dims), i)
        views.append(
            {"text": str(text), "dimension": dimension_label(dimension) if dimension else "", "scores": scores}
        )
    return views


def record_view(row: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one row (JSON-ready)."""
    dimensions = sorted({dimension_label(d) for key in ("dimensions", "dimensions_2") for d in row.get(key) or []})
    texts = [{"label": label, "text": str(row[column])} for column, label in TEXT_COLUMNS if row.get(column)]
    sets = [
        {"title": SET_TITLES[texts_column], "constraints": constraint_views(row, texts_column, dims_column, score_sets)}
        for texts_column, dims_column, score_sets in CONSTRAINT_SETS
        if row.get(texts_column)
    ]
    count = row.get("constraint_count")
    return {
        "id": str(row.get("id") or row.get("seed_id") or ""),
        "language": str(row.get("language") or ""),
        "count": int(count) if count is not None else len(row.get("constraints") or []),
        "dimensions": dimensions,
        "status": row_status(row),
        "op": str(row.get("perturb_op") or ""),
        "texts": texts,
        "sets": sets,
    }


def _script_json(data: Any) -> str:
    # '<' escaped so no text in the data can close the script element or open a comment.
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
.bar { display: flex; gap: .6em; flex-wrap: wrap; align-items: center; margin: .8em 0; }
.bar input[type=search] { flex: 1; min-width: 16em; padding: .3em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
tr.row { cursor: pointer; } tr.row:hover { background: #f5f8ff; }
td.preview { max-width: 40em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.detail td { background: #fafafa; } pre { white-space: pre-wrap; margin: .2em 0 .8em; font-size: 12px; }
.ok { color: #2e7d32; } .miss { color: #b8474b; font-weight: bold; } .muted { color: #777; }
.tag { display: inline-block; background: #eef; border-radius: 3px; padding: 0 4px; margin: 1px; font-size: 11px; }
"""

# Pure functions first (tested under node), then the page; data is only ever set as textContent.
_SCRIPT = r"""
function recordText(r) {
  var parts = [r.id, r.language, r.status, r.op].concat(r.dimensions);
  r.texts.forEach(function (t) { parts.push(t.text); });
  r.sets.forEach(function (s) { s.constraints.forEach(function (c) { parts.push(c.text); }); });
  return parts.join("\n").toLowerCase();
}
function matches(r, q) {
  if (q.count !== "" && String(r.count) !== q.count) return false;
  if (q.dimension !== "" && r.dimensions.indexOf(q.dimension) < 0) return false;
  if (q.status !== "" && r.status !== q.status) return false;
  if (q.text !== "") {
    if (r._text === undefined) r._text = recordText(r);
    var words = q.text.toLowerCase().split(/\s+/).filter(Boolean);
    for (var i = 0; i < words.length; i++) if (r._text.indexOf(words[i]) < 0) return false;
  }
  return true;
}
function filterRecords(records, q) { return records.filter(function (r) { return matches(r, q); }); }
function distinct(records, key) {
  var seen = {};
  records.forEach(function (r) { [].concat(r[key]).forEach(function (v) { seen[v] = true; }); });
  return Object.keys(seen).sort(function (a, b) { return (+a - +b) || (a < b ? -1 : a > b ? 1 : 0); });
}

var PAGE = 100;
function el(tag, text, cls) {
  var node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function scoreCell(s) {
  var td = el("td");
  if (s.score === null || s.score === undefined) { td.appendChild(el("span", "–", "muted")); return td; }
  td.appendChild(el("span", s.score, s.score >= FULL_MARKS ? "ok" : "miss"));
  if (s.by) td.appendChild(el("span", " " + (s.by === "code" ? "check" : s.by === "llm" ? "judge" : s.by), "muted"));
  return td;
}
function detail(r, columns) {
  var tr = el("tr", null, "detail"), td = el("td");
  td.colSpan = columns;
  r.texts.forEach(function (t) { td.appendChild(el("b", t.label)); td.appendChild(el("pre", t.text)); });
  r.sets.forEach(function (s) {
    var table = el("table"), head = el("tr");
    ["#", s.title, "dimension"].concat(s.constraints.length ? s.constraints[0].scores.map(function (x) {
      return x.label + " (decided by)"; }) : []).forEach(function (h) { head.appendChild(el("th", h)); });
    table.appendChild(head);
    s.constraints.forEach(function (c, i) {
      var row = el("tr");
      row.appendChild(el("td", i + 1)); row.appendChild(el("td", c.text)); row.appendChild(el("td", c.dimension));
      c.scores.forEach(function (x) { row.appendChild(scoreCell(x)); });
      table.appendChild(row);
    });
    td.appendChild(table);
  });
  tr.appendChild(td);
  return tr;
}
function init() {
  var records = JSON.parse(document.getElementById("records").textContent);
  var controls = { text: "search", count: "count", dimension: "dimension", status: "status" };
  [["count", "count"], ["dimension", "dimensions"], ["status", "status"]].forEach(function (pair) {
    var select = document.getElementById(pair[0]);
    distinct(records, pair[1]).forEach(function (v) { var o = el("option", v); o.value = v; select.appendChild(o); });
  });
  var body = document.getElementById("rows"), shown = 0, current = records;
  function query() {
    var q = {};
    Object.keys(controls).forEach(function (k) { q[k] = document.getElementById(controls[k]).value.trim(); });
    return q;
  }
  function more() {
    current.slice(shown, shown + PAGE).forEach(function (r) {
      var tr = el("tr", null, "row"), open = null;
      [r.id, r.language, r.count, r.status].forEach(function (v) { tr.appendChild(el("td", v)); });
      var dims = el("td");
      r.dimensions.forEach(function (d) { dims.appendChild(el("span", d, "tag")); });
      tr.appendChild(dims);
      tr.appendChild(el("td", r.texts.length ? r.texts[0].text : "", "preview"));
      tr.onclick = function () {
        if (open) { open.remove(); open = null; } else { open = detail(r, 6); tr.after(open); }
      };
      body.appendChild(tr);
    });
    shown = Math.min(shown + PAGE, current.length);
    document.getElementById("more").style.display = shown < current.length ? "" : "none";
    document.getElementById("summary").textContent =
      current.length + " of " + records.length + " rows match; showing " + shown + ".";
  }
  function apply() { current = filterRecords(records, query()); shown = 0; body.textContent = ""; more(); }
  Object.keys(controls).forEach(function (k) { document.getElementById(controls[k]).oninput = apply; });
  document.getElementById("more").onclick = more;
  apply();
}
if (typeof document !== "undefined") document.addEventListener("DOMContentLoaded", init);
"""


def render_viewer(rows: list[dict[str, Any]], title: str) -> str:
    records = [record_view(r) for r in rows]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="bar">
<input type="search" id="search" placeholder="search ids, instructions, answers, constraints (all words)">
<label>constraints <select id="count"><option value="">any</option></select></label>
<label>dimension <select id="dimension"><option value="">any</option></select></label>
<label>status <select id="status"><option value="">any</option></select></label>
</div>
<p class="muted" id="summary"></p>
<p class="muted">Click a row for its texts and each constraint's score, and whether a deterministic check or the
judge decided it. Scores are 0..10; {FULL_MARKS} counts as followed.</p>
<table><thead><tr><th>id</th><th>lang</th><th>constraints</th><th>status</th><th>dimensions</th><th>instruction</th></tr>
</thead><tbody id="rows"></tbody></table>
<p><button id="more">show more</button></p>
<script type="application/json" id="records">{_script_json(records)}</script>
<script>var FULL_MARKS = {FULL_MARKS};{_SCRIPT}</script>
</body></html>
"""


def write_viewer(source: Path, dest: Path) -> int:
    """Write the viewer page for `source` to `dest`; returns the number of rows."""
    rows = load_rows(source)
    title = f"trace-build records: {Path(source).resolve().parent.name}/{Path(source).name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(render_viewer(rows, title), encoding="utf-8")
    return len(rows)
