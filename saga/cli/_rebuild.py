"""``saga rebuild``: re-create the tracked collections in Chroma from the saga log."""

from __future__ import annotations

import sys
from pathlib import Path

import click
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
@click.option("--table", "table", default=None, help="Only this tracked table's collection.")
@definitions_option
@json_option
def rebuild(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    table: str | None,
    definitions: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write every vector the log keeps back into Chroma (a new or emptied folder, a
    fresh server, or a folder Chroma can no longer read, moved aside). Safe to run
    again after a crash. Exit 1 if some row's vector is not kept in the log."""
    with errors_mapped():
        runner = open_runner(db, chroma_path, chroma_host, chroma_port, definitions)
        with runner:
            tables = [table] if table is not None else [s.table for s in runner.tracked()]
            total = sum(runner.count(name).rows for name in tables)
            with progress(total, "rebuilding", not as_json) as tick:
                report = runner.rebuild(table, progress=tick)
    data = report.to_dict()
    if as_json:
        print_json(data)
    else:
        console = out()
        shown = Table(title="rebuild from the saga log")
        shown.add_column("tables")
        shown.add_column("vectors written", justify="right")
        shown.add_column("not rebuildable", justify="right")
        shown.add_row(
            ", ".join(data["tables"]), str(data["rebuilt"]), str(len(data["not_rebuildable"]))
        )
        console.print(shown)
        missing = data["not_rebuildable"]
        if missing:
            console.print(
                f"not kept in the log: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
            console.print(
                "(synced before schema 5: `saga reconcile --fix` copies them into the log "
                "while Chroma still holds them; a table tracked with keep_vectors=False "
                "keeps none)"
            )
    sys.exit(EXIT_OK if report.complete else EXIT_UNRESOLVED)
