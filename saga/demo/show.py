"""How the demo prints: headings, and rich tables whose cells are plain text.

Docstrings and error messages may hold ``[brackets]``, which rich would read as markup,
so everything printed here is a ``Text``, never a markup string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from saga import ReconcileReport, RecoveryReport


def heading(console: Console, number: int, title: str) -> None:
    console.print()
    console.print(Text(f"{number}. {title}", style="bold"))


def note(console: Console, text: str, *, good: bool | None = None) -> None:
    """An indented line of plain text, with a ✓ or ✗ in front when ``good`` is given."""
    line = Text("   ")
    if good is not None:
        line.append("✓ " if good else "✗ ", style="green" if good else "bold red")
    line.append(text)
    console.print(line)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A table of plain-text cells; columns whose name starts with ``#`` are numbers."""
    caption = None if title is None else Text(title, style="italic")
    shown = Table(title=caption, title_justify="left")
    for column in columns:
        number = column.startswith("#")
        shown.add_column(column.lstrip("#"), justify="right" if number else "left")
    for row in rows:
        shown.add_row(*(Text(str(cell)) for cell in row))
    return shown


def status_table(data: dict[str, Any]) -> Table:
    """``saga status``'s table: sagas per table and state."""
    states = sorted({s for counts in data["by_table"].values() for s in counts})
    rows = [
        [name, *(counts.get(state, 0) for state in states)]
        for name, counts in data["by_table"].items()
    ]
    return table(f"sagas in {data['db']}", ["table", *(f"#{s}" for s in states)], rows)


def recovery_table(report: RecoveryReport) -> Table:
    rows = [
        ["resumed (rolled forward to synced)", report.resumed],
        ["compensated (undone to failed)", report.compensated],
        ["unsettled (left for the next run)", report.unsettled],
        ["skipped (owner alive)", report.skipped],
    ]
    return table(None, ["outcome", "#sagas"], rows)


def reconcile_table(report: ReconcileReport) -> Table:
    findings = (
        ("orphan vectors (vector, no row)", report.orphan_vectors),
        ("missing vectors (row, no vector)", report.missing_vectors),
        ("drift (vector differs from its row)", report.drift),
        ("stuck sagas", report.stuck_sagas),
    )
    rows = [[name, len(ids), ", ".join(ids[:3]) or "-"] for name, ids in findings]
    title = f"{report.rows_checked} rows and {report.vectors_checked} vectors compared"
    return table(title, ["finding", "#count", "examples"], rows)


def snippet(text: object, limit: int = 70) -> str:
    """One line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
