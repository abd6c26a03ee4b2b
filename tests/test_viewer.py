"""The HTML record viewer: one self-contained file; its search and filters work (run under node with a stub DOM)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from trace_builder.report.viewer import load_rows, record_view, render_viewer, write_viewer
from trace_builder.testing.tiny import synthetic_rows, write_dataset


def final_rows(split: str, n: int = 6) -> list[dict]:
    """Synthetic final rows with per-constraint scores and who decided them."""
    rows = synthetic_rows(split, n, seed=2)
    for i, row in enumerate(rows):
        count = 1 + i % 3
        row["constraints"] = [f"rule {i}.{k}" for k in range(count)]
        row["dimensions"] = ["theme", "numerical", "tone_style"][:count]
        row["constraint_count"] = count
        row["scores"] = [10] * count if i % 2 == 0 else [10] * (count - 1) + [6]
        row["decided_by"] = (["code", "llm", "llm"])[:count]
        if split == "dpo":
            row["scores_rejected"] = [0] * count
    rows[0]["response" if split == "sft" else "chosen"] = "a needle </script><b>not markup</b>"
    return rows


def test_record_view_carries_each_constraints_score_and_decider():
    row = final_rows("dpo")[1]
    view = record_view(row)
    assert view["count"] == 2 and view["status"] == "not followed"
    assert view["dimensions"] == ["Numerical", "Theme"]
    first, second = view["sets"][0]["constraints"]
    assert first["scores"] == [
        {"label": "score", "score": 10, "by": "code"},
        {"label": "rejected's score", "score": 0, "by": None},
    ]
    assert second["scores"][0] == {"label": "score", "score": 6, "by": "llm"}
    assert [t["label"] for t in view["texts"]] == ["x: the instruction", "chosen", "rejected"]


def test_iopo_rows_show_both_instructions():
    row = synthetic_rows("iopo", 1)[0]
    row.update(scores_x2_y2=[10, 10, 10], decided_by_2=["code", "llm", "llm"], scores=[10, 10])
    view = record_view(row)
    assert [s["title"] for s in view["sets"]] == ["constraint of x", "constraint of x2"]
    assert view["sets"][1]["constraints"][0]["scores"][0] == {"label": "score", "score": 10, "by": "code"}
    assert view["op"] == "add"


def test_page_is_one_file_without_network_and_data_cannot_break_out(tmp_path):
    write_dataset(tmp_path / "final" / "sft", "sft", final_rows("sft"))
    assert write_viewer(tmp_path / "final" / "sft", tmp_path / "view.html") == 6
    page = (tmp_path / "view.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|@import|url\(|https?://""", page)  # nothing fetched
    assert page.count("</script>") == 2  # the planted '</script>' stays inside the JSON
    data = re.search(r'<script type="application/json" id="records">(.*?)</script>', page, re.S).group(1)
    records = json.loads(data)
    assert records[0]["texts"][1]["text"] == "a needle </script><b>not markup</b>"
    assert load_rows(tmp_path / "final" / "sft" / "part-00000.parquet")[0]["id"] == records[0]["id"]


# A stub of the few DOM calls the page makes: enough to run init(), filter and expand a row.
STUB_DOM = r"""
function Node(tag) { this.tag = tag; this.children = []; this.style = {}; this.value = ""; this.textContent = ""; }
Node.prototype.appendChild = function (c) { this.children.push(c); c.parent = this; return c; };
Node.prototype.after = function (c) { var s = this.parent.children; s.splice(s.indexOf(this) + 1, 0, c); c.parent = this.parent; };
Node.prototype.remove = function () { var s = this.parent.children; s.splice(s.indexOf(this), 1); };
Object.defineProperty(Node.prototype, "textContent", {
  get: function () { return this._text !== undefined ? this._text : this.children.map(function (c) { return c.textContent; }).join(""); },
  set: function (v) { this._text = v === "" ? undefined : v; this.children = []; },
});
var byId = {};
["search", "count", "dimension", "status", "rows", "more", "summary"].forEach(function (id) { byId[id] = new Node("x"); });
byId.records = new Node("script"); byId.records.textContent = RECORDS;
var document = {
  getElementById: function (id) { return byId[id]; },
  createElement: function (tag) { return new Node(tag); },
  addEventListener: function (name, f) { f(); },
};
"""

CHECKS = r"""
function summary() { return byId.summary.textContent; }
var out = {all: summary()};
byId.status.value = "not followed"; byId.status.oninput(); out.status = summary();
byId.status.value = ""; byId.count.value = "2"; byId.count.oninput(); out.count = summary();
byId.count.value = ""; byId.dimension.value = "Tone and Style"; byId.dimension.oninput(); out.dimension = summary();
byId.dimension.value = ""; byId.search.value = "NEEDLE"; byId.search.oninput(); out.search = summary();
var row = byId.rows.children[0]; row.onclick();
out.expanded = byId.rows.children.length;
out.detail = byId.rows.children[1].textContent;
out.options = byId.count.children.map(function (o) { return o.value; });
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_search_and_filters_run_in_a_javascript_engine(tmp_path):
    page = render_viewer(final_rows("sft"), "t")
    data = re.search(r'<script type="application/json" id="records">(.*?)</script>', page, re.S).group(1)
    code = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    script = tmp_path / "page.js"
    script.write_text(f"var RECORDS = {json.dumps(data)};\n{STUB_DOM}\n{code}\n{CHECKS}", encoding="utf-8")
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["all"].startswith("6 of 6 rows match")
    assert out["status"].startswith("3 of 6")  # rows 1, 3, 5 have a 6
    assert out["count"].startswith("2 of 6")  # rows 1 and 4
    assert out["dimension"].startswith("2 of 6")  # rows with three constraints: 2 and 5
    assert out["search"].startswith("1 of 6")  # case-insensitive, in the answer
    assert out["expanded"] == 2 and "rule 0.0" in out["detail"] and "check" in out["detail"]
    assert out["options"] == ["1", "2", "3"]  # after the page's own "any"
