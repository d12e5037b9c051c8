"""``saga status`` and ``saga show``: read the saga log, change nothing.

Each parses its flags, calls one function of ``saga.inspect``, and prints a table (or,
with ``--json``, exactly one JSON object and nothing else).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from saga import ConfigurationError, SagaError
from saga import inspect as saga_inspect
from saga._compose import builtin_definitions
from saga.cli._common import (
    EXIT_OK,
    EXIT_UNRESOLVED,
    EXIT_USAGE,
    db_option,
    errors_mapped,
    fail,
    json_option,
    out,
    print_json,
)
from saga.diagram import EXTENSIONS, render_saga

_FORMAT_OF_SUFFIX = {f".{suffix}": fmt for fmt, suffix in EXTENSIONS.items()}
"""``.mmd`` -> mermaid, ``.dot`` -> dot, ``.svg`` -> svg: the file says what it holds."""


@click.command()
@db_option
@json_option
def status(db: Path, as_json: bool) -> None:
    """Counts of sagas per state and per table, and the oldest one in flight.

    Exits 1 when any saga is in flight (a crash may have left it: see `saga recover`).
    """
    with errors_mapped():
        data = saga_inspect.status(db)
    if as_json:
        print_json(data)
    else:
        _print_status(data)
    sys.exit(EXIT_UNRESOLVED if data["in_flight"] else EXIT_OK)


def _print_status(data: dict[str, Any]) -> None:
    console = out()
    table = Table(title=f"sagas in {data['db']}")
    table.add_column("table")
    states = sorted({s for counts in data["by_table"].values() for s in counts})
    for state in states:
        table.add_column(state, justify="right")
    for name, counts in data["by_table"].items():
        table.add_row(name, *(str(counts.get(s, 0)) for s in states))
    console.print(table)
    oldest = data["oldest_in_flight"]
    if oldest is None:
        console.print("no saga in flight")
    else:
        console.print(
            f"{data['in_flight']} in flight; oldest {oldest['saga_id']} ({oldest['table']}, "
            f"{oldest['state']}, {oldest['age_seconds']:.0f}s old)"
        )


def _diagram_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Refuse a suffix that names no format before anything is read or written."""
    if value is not None and value.suffix.lower() not in _FORMAT_OF_SUFFIX:
        *others, last = (f"{s} ({fmt})" for s, fmt in _FORMAT_OF_SUFFIX.items())
        raise click.BadParameter(
            f"{str(value)!r}: the suffix says the format: {', '.join(others)} or {last}",
            ctx,
            param,
        )
    return value


@click.command()
@click.argument("saga_id")
@db_option
@json_option
@click.option(
    "--diagram",
    "diagram_file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_diagram_file,
    help="Write this saga's state diagram, its path marked "
    "(.mmd Mermaid, .dot Graphviz DOT, .svg needs Graphviz).",
)
def show(saga_id: str, db: Path, as_json: bool, diagram_file: Path | None) -> None:
    """One saga: state, lease, attempts, payload summary and history."""
    with errors_mapped():
        try:
            data = saga_inspect.show(db, saga_id)
        except ConfigurationError:
            raise
        except SagaError as exc:
            fail(str(exc), EXIT_USAGE)
        if diagram_file is not None:
            _write_saga_diagram(data, diagram_file)
            data["diagram"] = str(diagram_file)
    if as_json:
        print_json(data)
    else:
        _print_show(data)


def _write_saga_diagram(data: dict[str, Any], target: Path) -> None:
    definition = builtin_definitions().get(data["definition"])
    if definition is None:
        raise SagaError(f"no built-in definition {data['definition']!r} to draw")
    path = [(h["from_state"], h["event"], h["to_state"]) for h in data["history"]]
    fmt = _FORMAT_OF_SUFFIX[target.suffix.lower()]
    drawing = render_saga(definition, data["state"], path, fmt)
    if isinstance(drawing, bytes):
        target.write_bytes(drawing)
    else:
        target.write_text(drawing)


def _print_show(data: dict[str, Any]) -> None:
    console = out()
    console.print(f"saga {data['saga_id']}  [{data['definition']} on {data['table']}]")
    console.print(f"state: {data['state']}   attempts: {data['attempts']}")
    console.print(f"lease: {data['lease_owner'] or '-'} until {data['lease_expires_at'] or '-'}")
    if data["last_error"]:
        console.print(f"last error: {data['last_error']}")
    payload = data["payload"]
    if payload:
        console.print(f"payload: {payload}")
    table = Table(title="history")
    for column in ("at", "from", "event", "to", "error"):
        table.add_column(column)
    for h in data["history"]:
        table.add_row(h["at"], h["from_state"] or "", h["event"], h["to_state"], h["error"] or "")
    console.print(table)
    if "diagram" in data:
        console.print(f"diagram written to {data['diagram']}")
