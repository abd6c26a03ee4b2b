"""`inspect`: rows of any stage or final dataset (the columns asked for, the first or a seeded sample, as a
table or JSON lines), and their distributions with --stats."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from rich import box
from rich.table import Table

from trace_builder.errors import UserError
from trace_builder.run.store import read_manifest, read_parquet_dir, verify_part
from trace_builder.taxonomy import dimension_for_label


def load_frame(path: Path) -> pd.DataFrame:
    """A Parquet file, a folder of part-*.parquet, or a run folder (its last finished stage)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run folder, a stage folder or a Parquet file")
    if path.is_file():
        verify_part(path)
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise UserError(
                f"{path} is not a readable Parquet file ({type(exc).__name__}): pass a .parquet file"
            ) from None
    if any(path.glob("part-*.parquet")):
        return read_parquet_dir(path)
    from trace_builder.pipeline.registry import STAGE_NAMES

    for stage in reversed(STAGE_NAMES):
        if any((path / stage).glob("part-*.parquet")):
            return read_parquet_dir(path / stage)
    raise UserError(f"{path} holds no Parquet shards: pass a run folder, a stage folder or a Parquet file")


def apply_where(frame: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return frame
    try:
        return frame.query(where, engine="python")
    except Exception as exc:
        raise UserError(
            f"--where {where!r} is not a valid filter ({exc}); use pandas query syntax, e.g. \"status == 'failed'\""
        ) from None


def _counter_of_lists(series: pd.Series) -> Counter:
    counter: Counter = Counter()
    for value in series.dropna():
        counter.update(list(value))
    return counter


def check_share(frame: pd.DataFrame) -> dict[str, str]:
    """Per dimension: how many constraints carry a deterministic check, of how many."""
    carried: Counter = Counter()
    total: Counter = Counter()
    for dims, checks in zip(frame["dimensions"], frame["checks"]):
        if dims is None or checks is None:
            continue
        for dim, check in zip(dims, checks):
            total[dim] += 1
            carried[dim] += check is not None
    rows = {dim: f"{carried[dim]}/{n} ({carried[dim] / n:.0%})" for dim, n in total.most_common()}
    if total:
        all_n = sum(total.values())
        rows["all"] = f"{sum(carried.values())}/{all_n} ({sum(carried.values()) / all_n:.0%})"
    return rows


def stats(frame: pd.DataFrame, manifest_dir: Path | None = None) -> dict[str, dict]:
    """Distributions a user wants first: counts, types, dimensions, statuses, reasons, tokens."""
    out: dict[str, dict] = {"rows": {"total": len(frame)}}
    if "constraint_count" in frame:
        out["constraint_count"] = dict(sorted(Counter(frame["constraint_count"].dropna().astype(int)).items()))
    if "dimensions" in frame:
        dims = _counter_of_lists(frame["dimensions"])
        out["dimensions"] = dict(dims.most_common())
        types: Counter = Counter()
        for dim_id, n in dims.items():
            dim = dimension_for_label(dim_id)
            types[dim.type if dim else "unknown"] += n
        out["types"] = dict(types.most_common())
    if "checks" in frame and "dimensions" in frame:
        out["check_share_by_dimension"] = check_share(frame)
    for column in ("status", "filter_status", "dpo_status", "iopo_status", "perturb_op", "language"):
        if column in frame:
            out[column] = dict(Counter(frame[column].fillna("-")).most_common())
    if "reason" in frame and "status" in frame:
        failed = frame[frame["status"] != "ok"]
        reasons = failed["failed_stage"].fillna("") + ": " + failed["reason"].fillna("")
        out["failure_reasons"] = dict(Counter(reasons).most_common(15))
    for side in ("dpo", "iopo"):
        column = f"{side}_reason"
        if column in frame:
            reasons = frame.loc[frame[f"{side}_status"] == "failed", column]
            if len(reasons):
                out[f"{side}_failure_reasons"] = dict(Counter(reasons).most_common(10))
    if manifest_dir is not None:
        folder = Path(manifest_dir)
        manifest = read_manifest(folder.parent, folder.name) or {}
        if manifest.get("usage"):
            out["tokens"] = manifest["usage"]
    return out


WIDE_MAX_COLUMNS = 6  # up to this many columns: one table, a line per row; more: a table per row
MAX_CELL_CHARS = 600  # a table cell shows this much of a long value; --json shows it whole
MAX_LIST_ITEMS = 20


def parse_columns(spec: str | None, available: list[str]) -> list[str] | None:
    """`--columns a,b` as a list of known column names (None: all)."""
    if not spec:
        return None
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UserError(
            f"--columns: no column {', '.join(map(repr, unknown))} here; the columns are: {', '.join(available)}"
        )
    return names


def pick_rows(frame: pd.DataFrame, *, limit: int, sample: int | None, seed: int) -> pd.DataFrame:
    """The first `limit` rows, or `sample` rows drawn at random (the same ones for the same seed)."""
    if sample is None:
        return frame.head(limit)
    return frame.sample(n=min(sample, len(frame)), random_state=seed)


def plain(value: object) -> object:
    """A cell as plain JSON data: arrays as lists, NaN as null, JSON kept in strings decoded.

    Some columns hold JSON text (a check spec, the quality problems): shown as text they are
    encoded twice over ("{\\"kind\\": ..."); decoded, they read as the data they are.
    """
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def records(frame: pd.DataFrame) -> Iterator[dict]:
    for record in frame.to_dict("records"):
        yield {key: plain(value) for key, value in record.items()}


def json_lines(frame: pd.DataFrame) -> Iterator[str]:
    """One JSON object per row (for jq, or `pd.read_json(lines=True)`)."""
    for record in records(frame):
        yield json.dumps(record, ensure_ascii=False)


def cell_text(value: object, max_chars: int = MAX_CELL_CHARS) -> str:
    """A plain value as readable text: a list item per line, objects as one-line JSON, long text cut."""
    if value is None:
        return ""
    if isinstance(value, list):
        # Numbered: a wrapped item stays readable, and item i of one list lines up with item i
        # of another (constraints, their scores, who decided each).
        lines = [f"{i}. {_one_line(item)}" for i, item in enumerate(value[:MAX_LIST_ITEMS], start=1)]
        if len(value) > MAX_LIST_ITEMS:
            lines.append(f"... {len(value) - MAX_LIST_ITEMS} more")
        text = "\n".join(lines)
    else:
        text = _one_line(value) if isinstance(value, dict) else str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + f"... ({len(text) - max_chars} more characters)"
    return text


def _one_line(item: object) -> str:
    if item is None or isinstance(item, dict | list):  # null inside a list: "no check for this constraint"
        return json.dumps(item, ensure_ascii=False)
    return str(item)


def row_tables(frame: pd.DataFrame) -> list[Table]:
    """A few columns: one table with a line per row; many: a field / value table per row."""
    rows = list(records(frame))
    if len(frame.columns) <= WIDE_MAX_COLUMNS:
        table = Table(box=box.SIMPLE_HEAD, show_lines=True)
        for column in frame.columns:
            table.add_column(str(column), overflow="fold")
        for row in rows:
            table.add_row(*[cell_text(row[column]) for column in frame.columns])
        return [table]
    tables = []
    for position, (index, row) in enumerate(zip(frame.index, rows), start=1):
        table = Table(
            title=f"row {index} ({position} of {len(rows)})",
            title_justify="left",
            box=box.SIMPLE,
            show_header=False,
        )
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for column, value in row.items():
            table.add_row(str(column), cell_text(value))
        tables.append(table)
    return tables
