"""``saga adopt``: take over a table whose vectors are stored under the application's ids."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from saga.cli._common import (
    EXIT_OK,
    EXIT_UNRESOLVED,
    chroma_options,
    db_option,
    definitions_option,
    errors_mapped,
    json_option,
    open_runner,
    out,
    print_json,
    progress,
)


@click.command()
@db_option
@chroma_options
@click.option("--table", "table", required=True, help="The tracked table to adopt.")
@click.option(
    "--delete-orphans",
    is_flag=True,
    help="Delete the vectors of the collection that no row names.",
)
@definitions_option
@json_option
def adopt(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    table: str,
    delete_orphans: bool,
    definitions: tuple[str, ...],
    as_json: bool,
) -> None:
    """Re-key a tracked table's vectors from the ids the application gave them (each
    row's vector-id column) to the library's, without re-embedding, through sagas; then
    `saga reconcile` is clean. Safe to run again after a crash, and a no-op once done.
    Exit 1 if rows without a vector, vectors without a row, or rows it could not adopt
    are left."""
    with errors_mapped():
        runner = open_runner(db, chroma_path, chroma_host, chroma_port, definitions)
        with runner:
            total = runner.count(table).rows
            with progress(total, "adopting", not as_json) as tick:
                report = runner.adopt(table, delete_orphans=delete_orphans, progress=tick)
    data = report.to_dict()
    if as_json:
        print_json(data)
    else:
        _show(out(), data, delete_orphans)
    sys.exit(EXIT_OK if report.complete else EXIT_UNRESOLVED)


def _show(console: Console, data: dict[str, Any], deleting: bool) -> None:
    shown = Table(title=f"adopt {data['table']}")
    for name in ("adopted", "already", "without vector", "vectors without row", "invalid"):
        shown.add_column(name, justify="right")
    shown.add_row(
        str(data["adopted"]),
        str(data["already"]),
        str(len(data["rows_without_vector"])),
        str(len(data["vectors_without_row"])),
        str(len(data["invalid"])),
    )
    console.print(shown)
    _listed(console, "rows without a vector (keys)", data["rows_without_vector"])
    if data["rows_without_vector"]:
        console.print(
            "(their embeddings must be made again: runner.reconcile(fix=True, "
            "rebuild=your_embedder) once they are adopted, or runner.update each)"
        )
    orphans = data["vectors_without_row"]
    _listed(console, "vectors no row names", orphans)
    if deleting:
        console.print(f"deleted {len(data['deleted_orphans'])} of them")
    elif orphans:
        console.print("(run again with --delete-orphans to delete them)")
    _listed(console, "not adopted", [f"{i['key']}: {i['error']}" for i in data["invalid"]])
    _listed(console, "held by sagas in flight (keys)", data["skipped"])


def _listed(console: Console, label: str, values: Sequence[Any]) -> None:
    if values:
        shown = ", ".join(str(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
        console.print(f"{label}: {shown}")
