"""The dataset card: final/README.md with the Hub's YAML front matter, provenance, statistics and SVG figures.

`datasets.load_dataset(RUN/final, "iopo")` reads the folder as it is: the front matter names
one config per final dataset, each with a `<split>/*.parquet` glob (anything else in the
folders, such as stage metadata, is not matched). The statistics come from the functions
that already compute them (fidelity.py, inspect_data.stats, the stages' manifests); this
module only lays them out.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from trace_builder.config import RunConfig
from trace_builder.errors import UserError
from trace_builder.llm.roles import ROLES, cost_of, role_of, usage_by_role
from trace_builder.pipeline.registry import STAGE_NAMES, stage_fingerprints
from trace_builder.prompts import prompts_digest
from trace_builder.report.fidelity import fidelity_report
from trace_builder.report.inspect import stats
from trace_builder.report.status import per_train_row, run_usage_by_task
from trace_builder.run.store import StageStore, read_json, read_parquet_dir
from trace_builder.taxonomy import DIMENSION_IDS, EVAL_COUNT_HISTOGRAM, TRAIN_COUNT_HISTOGRAM, TYPES

# Final dataset -> the split it is published as (eval is the held-out test set).
SPLITS = {"sft": "train", "dpo": "train", "iopo": "train", "eval": "test"}
FIGURES = "figures"
IOPO_CITATION = """@article{zhang2024iopo,
  title   = {IOPO: Empowering LLMs with Complex Instruction Following via Input-Output Preference Optimization},
  author  = {Zhang, Xinghua and Yu, Haiyang and Fu, Cheng and Huang, Fei and Li, Yongbin},
  journal = {arXiv preprint arXiv:2411.06208},
  year    = {2024}
}"""


# -- front matter ---------------------------------------------------------------------------


def size_category(rows: int) -> str:
    """The Hub's size bucket for `rows` examples."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def front_matter(config: RunConfig, rows: dict[str, int], languages: list[str]) -> dict[str, Any]:
    """The Hub's metadata block; a config per non-empty final dataset, sft the default."""
    configs = []
    for name, split in SPLITS.items():
        if rows.get(name):  # a 0-row Parquet file is unreadable for `datasets`: listed in the body instead
            entry = {"config_name": name, "data_files": [{"split": split, "path": f"{name}/*.parquet"}]}
            if name == "sft":
                entry["default"] = True
            configs.append(entry)
    return {
        "license": config.card.license,
        "language": languages,
        "task_categories": ["text-generation"],
        "tags": ["instruction-following", "complex-instructions", "synthetic", "dpo", "iopo", "trace"],
        # sft and eval hold every distinct instruction (dpo and iopo are subsets of sft).
        "size_categories": [size_category(rows.get("sft", 0) + rows.get("eval", 0))],
        "pretty_name": config.card.pretty_name or f"TRACE-style complex instructions ({config.backend.model})",
        "configs": configs,
    }


# -- figures --------------------------------------------------------------------------------


def bar_chart_svg(title: str, categories: list[str], series: dict[str, list[float]], percent: bool = True) -> str:
    """Grouped vertical bars as a standalone SVG (no plotting library needed)."""
    width, height, left, bottom, top = 640, 320, 48, 40, 36
    colors = ("#3b6fb6", "#e08a2c", "#5aa469", "#b64a3b")
    peak = max((v for values in series.values() for v in values), default=0) or 1.0
    plot_w, plot_h = width - left - 12, height - top - bottom
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_escape(title)}</text>',
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        label = f"{value:.0%}" if percent else f"{value:.3g}"
        parts.append(f'<line x1="{left}" x2="{width - 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for i, category in enumerate(categories):
        x0 = left + i * group_w + group_w * 0.1
        for j, values in enumerate(series.values()):
            h = plot_h * (values[i] if i < len(values) else 0) / peak
            x, y = x0 + j * bar_w, top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colors[j % len(colors)]}"/>'
            )
        label_x = left + (i + 0.5) * group_w
        parts.append(
            f'<text x="{label_x:.1f}" y="{height - bottom + 14}" text-anchor="middle">{_escape(category)}</text>'
        )
    for j, name in enumerate(series):
        x = left + 8 + j * 150
        parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{colors[j % len(colors)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{height - 7}">{_escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shares(histogram: dict[int, int], length: int) -> list[float]:
    """Counts 1..length as shares of their total."""
    total = sum(histogram.values()) or 1
    return [histogram.get(c, 0) / total for c in range(1, length + 1)]


def figures(report: dict[str, Any]) -> dict[str, str]:
    """File name -> SVG: the count histograms and the type mix, each against TRACE's."""
    out = {}
    for split, reference, name in (("sft", TRAIN_COUNT_HISTOGRAM, "train"), ("eval", EVAL_COUNT_HISTOGRAM, "eval")):
        hist = {int(c): n for c, n in report[split]["constraint_histogram"].items()}
        length = max([len(reference), *hist])
        trace = {c: w for c, w in enumerate(reference, start=1)}
        out[f"constraint_counts_{name}.svg"] = bar_chart_svg(
            f"Constraints per instruction ({split}) against TRACE's {name} set",
            [str(c) for c in range(1, length + 1)],
            {f"this data ({split})": shares(hist, length), f"TRACE {name}": shares(trace, length)},
        )
    mix, trace_mix = report["sft"]["type_mix"], report["trace_type_mix"]
    out["type_mix.svg"] = bar_chart_svg(
        "Constraint types (sft) against TRACE's",
        list(TYPES),
        {"this data (sft)": [mix.get(t, 0.0) for t in TYPES], "TRACE": [trace_mix.get(t, 0.0) for t in TYPES]},
    )
    return out


# -- the body ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _date(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "-"


def body(facts: dict[str, Any]) -> str:
    """The card's Markdown below the front matter, from `collect`'s facts."""
    meta, report, rows = facts["meta"], facts["fidelity"], facts["rows"]
    lines = [
        f"# {meta['pretty_name']}",
        "",
        "Complex instruction-following data in the style of TRACE (IOPO, arXiv 2411.06208): each instruction is a task "
        "description with 1 to 15 constraints from TRACE's taxonomy (5 types, 26 dimensions) and an optional input, "
        "answered by a response that the judge gave full marks on every constraint.",
        "",
        "- `sft`: instruction and response (train).",
        "- `dpo`: instruction, a chosen response (full marks) and a rejected one that fails a constraint (train).",
        "- `iopo`: IOPO groups: x1 with y1, and a perturbed x2 (a constraint added, deleted or revised) with y2, "
        "plus all four pairings' scores (train).",
        "- `eval`: held-out instructions with a reference response, shaped like TRACE's evaluation set (test).",
        "",
        "```python",
        "from datasets import load_dataset",
        'iopo = load_dataset("path/to/final", "iopo")  # or "sft", "dpo", "eval"',
        "```",
        "",
        "## How it was built",
        "",
        *_table(
            ["", ""],
            [
                ["built by", f"trace-build {meta['trace_build']}"],
                ["backend and model", f"{meta['backend']} / `{meta['model']}`"],
                ["settings", meta["settings"]],
                ["config digest", f"`{meta['config_digest']}`"],
                ["prompts digest", f"`{meta['prompts_digest']}`"],
                ["seeds", meta["seed_source"]],
                ["licence", meta["license"]],
                ["started / finished", f"{_date(meta['started'])} / {_date(meta['finished'])}"],
            ],
        ),
        "",
        "Pipeline: seeds, then a constraint plan per seed (count and dimensions), expansion into a numbered "
        "instruction with a quality check, answers with rejection sampling under a hybrid judge (deterministic "
        "checks where a constraint has one, an LLM judge for every constraint), a rejected answer for DPO, an IOPO "
        "perturbation with its answer and four judgements, then deduplication and the train/eval split.",
        "",
        facts["per_train_row"] or "",
        "",
        "Models by role (one model does everything unless `roles:` gives a role its own):",
        "",
        *_table(
            ["role", "model", "requests", "tokens", "cost (USD)"],
            [
                [r["role"], f"`{r['model']}`", f"{r['requests']:,}", f"{r['tokens']:,}", r["cost"]]
                for r in facts["roles"]
            ],
        ),
        "",
        "## Statistics",
        "",
        *_table(["dataset", "split", "rows"], [[name, SPLITS[name], rows.get(name, 0)] for name in SPLITS]),
    ]
    empty = [name for name in SPLITS if not rows.get(name)]
    if empty:
        lines += ["", f"Empty, so not listed as configs: {', '.join(empty)}."]
    lines += ["", "### Constraints per instruction", ""]
    for split, reference in (("sft", TRAIN_COUNT_HISTOGRAM), ("eval", EVAL_COUNT_HISTOGRAM)):
        part = report[split]
        hist = {int(c): n for c, n in part["constraint_histogram"].items()}
        mine, theirs = shares(hist, len(reference)), shares(dict(enumerate(reference, start=1)), len(reference))
        lines += [
            f"{split}: mean {part['mean_constraints']}, total-variation distance to TRACE's histogram "
            f"{part['tv_to_trace']}.",
            "",
            *_table(
                ["constraints", *[str(c) for c in range(1, len(reference) + 1)]],
                [
                    ["rows", *[hist.get(c, 0) for c in range(1, len(reference) + 1)]],
                    ["share", *[f"{s:.1%}" for s in mine]],
                    ["TRACE", *[f"{s:.1%}" for s in theirs]],
                ],
            ),
            "",
        ]
    missing = sorted(DIMENSION_IDS - set(facts["dimensions"]))
    lines += [
        f"![constraints per instruction, sft]({FIGURES}/constraint_counts_train.svg)",
        f"![constraints per instruction, eval]({FIGURES}/constraint_counts_eval.svg)",
        "",
        "### Constraint types and dimensions",
        "",
        *_table(
            ["type", "sft", "TRACE"],
            [
                [t, f"{report['sft']['type_mix'].get(t, 0):.1%}", f"{report['trace_type_mix'].get(t, 0):.1%}"]
                for t in TYPES
            ],
        ),
        "",
        f"![constraint types]({FIGURES}/type_mix.svg)",
        "",
        f"Dimensions covered in sft: {len(facts['dimensions'])} of {len(DIMENSION_IDS)}"
        + (f" (none of: {', '.join(missing)})." if missing else "."),
        "",
        *_table(["dimension", "constraints"], [[d, n] for d, n in facts["dimensions"].items()]),
        "",
        "### IOPO",
        "",
        *_table(
            ["operation", "attempts", "groups kept", "yield", "rows in iopo"],
            [
                [op, y["attempts"], y["kept"], f"{y['yield']:.0%}", facts["iopo_ops"].get(op, 0)]
                for op, y in report["iopo_yield_by_operation"].items()
            ],
        ),
        "",
        "### Judging",
        "",
        f"- Share of final scores decided by a deterministic check: sft {_pct(report['sft']['decided_by_check'])}, "
        f"eval {_pct(report['eval']['decided_by_check'])} (the rest by the LLM judge).",
        f"- Check/judge disagreements while answering (the check wins): {facts['disagreements']}.",
        "",
        "### Split and decontamination",
        "",
        _sides_line(facts["seeds_by_side"]),
        "",
        _decontamination_line(facts["decontaminated"], facts["config"]),
        "",
        "### What was dropped",
        "",
    ]
    if facts["filter_status"]:
        lines += [*_table(["filter", "rows"], [[k, v] for k, v in facts["filter_status"].items()]), ""]
    failures = facts["failures"]
    lines += (
        _table(["failure reason", "rows"], [[reason, n] for reason, n in failures.most_common()])
        if failures
        else ["No row failed."]
    )
    lines += ["", "## Known limitations", ""]
    lines += [f"- {item}" for item in facts["limitations"]]
    lines += [
        "",
        "## Citation",
        "",
        "The construction follows TRACE, from the IOPO paper:",
        "",
        "```bibtex",
        IOPO_CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def _sides_line(sides: dict[str, int]) -> str:
    if not sides:
        return "Every seed's rows lie on one side of the split."
    return (
        f"Every seed's rows lie on one side of the split: {sides['train']} seeds behind the train datasets, "
        f"{sides['eval']} behind eval, {sides['both']} behind both."
    )


def _decontamination_line(dropped: dict[str, dict[str, int]], config: RunConfig) -> str:
    cfg = config.decontamination
    sets = (["the official TRACE eval set"] if cfg.official else []) + [f"`{Path(f).name}`" for f in cfg.files]
    if not sets:
        return "No evaluation set was checked for overlap (decontamination off)."
    counts = {
        where: ", ".join(f"{n} ({name})" for name, n in found.items()) or "none" for where, found in dropped.items()
    }
    return (
        f"Checked for overlap with {', '.join(sets)} ({cfg.word_ngram}-word / {cfg.char_ngram}-character n-grams, "
        f"threshold {cfg.threshold}): seeds dropped before any request: {counts['seeds']}; final rows dropped: "
        f"{counts['final rows']}."
    )


def seed_source_name(source: str) -> str:
    """How the card names the seeds: `builtin`, or the file's name (never a local path: cards are published)."""
    return source if source == "builtin" else Path(source).name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def limitations(config: RunConfig, notes: list[str]) -> list[str]:
    """What a user of the data should know: it is synthetic, judged by a model, and may fall short of its quotas."""
    items = [
        f"Synthetic: every instruction and response was written by `{config.backend.model}`; its errors, biases "
        "and licence terms carry over.",
        "Scores are a judge's: deterministic checks decide only the constraints they can verify; the others rest on "
        "an LLM judge, which can be wrong in both directions.",
        "Seeds decide the domains: the instructions cover what the seed set covers "
        f"(`{seed_source_name(config.seeds.source)}`, languages {', '.join(config.seeds.languages)}), "
        "not TRACE's own seed pool.",
        "Near-duplicates were removed by word-shingle similarity "
        f"(threshold {config.filter.near_duplicate_threshold}); paraphrases below it remain.",
    ]
    return items + [f"From the run: {note}" for note in notes]


# -- the I/O shell ----------------------------------------------------------------------------


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything the card states, read from the run folder."""
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json") or {}
    config = RunConfig.model_validate(run.get("config") or {})
    # Only the columns the card counts: the texts of a full-size run would fill memory for nothing.
    wanted = {name: ["language", "dimensions", "constraint_count"] for name in SPLITS}
    wanted["iopo"].append("perturb_op")
    frames = {name: read_parquet_dir(run_dir / "final" / name, wanted[name]) for name in SPLITS}
    rows = {name: len(frame) for name, frame in frames.items()}
    languages = sorted({lang for f in frames.values() if "language" in f for lang in f["language"].dropna()})
    manifests = {name: StageStore(run_dir, name).manifest for name in STAGE_NAMES}
    failures: Counter = Counter()
    notes: list[str] = []
    for manifest in manifests.values():
        failures.update(manifest.get("failures") or {})
        notes += manifest.get("notes") or []
    started = [m["started"] for m in manifests.values() if m.get("started")]
    finished = [m["finished"] for m in manifests.values() if m.get("finished")]
    sft_stats = stats(frames["sft"]) if rows["sft"] else {}
    iopo_stats = stats(frames["iopo"]) if rows["iopo"] else {}
    meta = {
        "pretty_name": config.card.pretty_name or f"TRACE-style complex instructions ({config.backend.model})",
        "trace_build": run.get("trace_build", "?"),
        "backend": config.backend.kind,
        "model": config.backend.model,
        "settings": run.get("settings") or config.describe(),
        "config_digest": hashlib.sha256(json.dumps(run.get("config") or {}, sort_keys=True).encode()).hexdigest()[:16],
        "prompts_digest": run.get("prompts_digest") or _prompts_digest_then(run, config),
        "seed_source": seed_source_name(config.seeds.source),
        "license": config.card.license,
        "started": min(started, default=None),
        "finished": max(finished, default=None),
    }
    return {
        "config": config,
        "meta": meta,
        "rows": rows,
        "languages": languages or list(config.seeds.languages),
        "fidelity": fidelity_report(run_dir),
        "dimensions": sft_stats.get("dimensions", {}),
        "iopo_ops": iopo_stats.get("perturb_op", {}),
        "disagreements": (manifests["respond"].get("summary") or {}).get("check/judge disagreements", 0),
        "roles": _roles(run_dir, config),
        "per_train_row": _per_train_row(run_dir),
        "filter_status": manifests["filter"].get("filter_status") or {},
        "seeds_by_side": manifests["filter"].get("seeds_by_side") or {},
        "decontaminated": {
            "seeds": manifests["seeds"].get("decontaminated") or {},
            "final rows": manifests["filter"].get("decontaminated") or {},
        },
        "failures": failures,
        "limitations": limitations(config, list(dict.fromkeys(notes))),
    }


def _per_train_row(run_dir: Path) -> str | None:
    line = per_train_row(run_dir)
    return None if line is None else f"Spent {line.removeprefix('per kept train row: ')} per kept train row."


def _roles(run_dir: Path, config: RunConfig) -> list[dict[str, Any]]:
    """Each role's model and what it asked (requests, tokens, cost at its prices)."""
    by_task = run_usage_by_task(run_dir)
    used = usage_by_role(by_task)
    out = []
    for role in ROLES:
        usage = used.get(role, {})
        cost = cost_of({t: u for t, u in by_task.items() if role_of(t) == role}, config)
        out.append(
            {
                "role": role,
                "model": config.backend_for(role).model,
                "requests": usage.get("requests", 0),
                "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                "cost": "-" if cost is None else f"{cost:,.2f}",
            }
        )
    return out


def _prompts_digest_then(run: dict[str, Any], config: RunConfig) -> str:
    """A run from before run.json kept the digest: today's templates are the run's if the seeds
    stage's fingerprint (its settings and the prompts digest, nothing else) still agrees."""
    recorded = (run.get("fingerprints") or {}).get("seeds")
    if recorded and stage_fingerprints(config, prompts_digest())["seeds"] == recorded:
        return prompts_digest()
    return "unknown (prompts changed since the run)"


def render(facts: dict[str, Any]) -> str:
    """The whole README.md: front matter, then the body."""
    matter = front_matter(facts["config"], facts["rows"], facts["languages"])
    head = yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body(facts)}"


def write_card(run_dir: Path) -> Path:
    """Write (or rewrite) <run>/final/README.md and its figures; returns the README's path."""
    final = Path(run_dir) / "final"
    if not final.is_dir():
        raise UserError(f"{final} does not exist: finish the run (`trace-build run --out {run_dir}`) first")
    facts = collect(run_dir)
    (final / FIGURES).mkdir(exist_ok=True)
    for name, svg in figures(facts["fidelity"]).items():
        (final / FIGURES / name).write_text(svg, encoding="utf-8")
    readme = final / "README.md"
    readme.write_text(render(facts), encoding="utf-8")
    return readme
