"""The `status` table, laid out for the terminal: compact numbers, and columns hidden by name rather than cut."""

from __future__ import annotations

from collections.abc import Callable

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

TEXT_COLUMNS = ("stage", "status")  # left-aligned; every other column is a figure
# Hidden in this order, only when the table would not fit the terminal otherwise: a header
# cut to "cach…" or "se…" says nothing, a named hidden column says where the figure went.
HIDE_FIRST = ("cached", "secs", "requests", "shards")
_EXACT_BELOW = 100_000  # figures below this are printed whole, with separators


def compact(value: object) -> str:
    """A figure in at most 6 characters: 99,999 whole, then 412k, 1.24M, 312M."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < _EXACT_BELOW else compact(round(value))
    if abs(value) < _EXACT_BELOW:
        return f"{value:,}"
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(value) >= size:
            scaled = value / size
            return f"{scaled:.3g}{unit}" if scaled < 1000 else f"{scaled:,.0f}{unit}"
    return str(value)


def exact(value: object) -> str:
    """A figure as it is, with thousands separators."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _table(rows: list[dict], columns: list[str], title: str, figure: Callable[[object], str]) -> Table:
    # No vertical rules and no outer padding: two spaces between columns is what lets nine
    # figures fit 80 columns; the rule under the header keeps it readable.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.padding = (0, 1, 0, 0)
    for column in columns:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[figure(row.get(column, "")) for column in columns])
    return table


def _natural_width(table: Table) -> int:
    wide = Console(width=10_000)  # measured unconstrained: a console's own width caps the measure
    return Measurement.get(wide, wide.options, table).maximum


def status_table(rows: list[dict], title: str, width: int) -> tuple[Table, list[str]]:
    """The table of `rows` (one dict per stage) within `width` columns, and the columns hidden to fit.

    Figures are exact where they fit, else compact (412k); columns are hidden, named, only
    when compact figures do not fit either.
    """
    columns = list(rows[0]) if rows else []
    table = _table(rows, columns, title, exact)
    if _natural_width(table) <= width:
        return table, []
    hidden: list[str] = []
    table = _table(rows, columns, title, compact)
    for name in HIDE_FIRST:
        if _natural_width(table) <= width:
            break
        if name in columns:
            columns.remove(name)
            hidden.append(name)
            table = _table(rows, columns, title, compact)
    return table, hidden
