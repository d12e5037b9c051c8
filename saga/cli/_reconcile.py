"""``saga reconcile``: compare SQLite and Chroma, and with ``--fix`` repair through sagas."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from saga import SagaRunner
from saga.cli._common import (
    EXIT_OK,
    EXIT_UNRESOLVED,
    Duration,
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

_FINDINGS = ("orphan_vectors", "missing_vectors", "drift", "stuck_sagas", "fixed", "unfixable")


@click.command()
@db_option
@chroma_options
@click.option("--fix", is_flag=True, help="Repair what can be repaired, through sagas.")
@click.option(
    "--stuck-after",
    type=Duration(),
    default="5m",
    show_default=True,
    help="A saga in flight longer than this counts as stuck.",
)
@definitions_option
@json_option
def reconcile(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    fix: bool,
    stuck_after: dt.timedelta,
    definitions: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare SQLite and Chroma: orphans, missing vectors, drift, stuck sagas.

    Exit 0 when the stores agree (after fixing, with --fix), 1 otherwise.
    """
    with errors_mapped():
        runner = open_runner(db, chroma_path, chroma_host, chroma_port, definitions)
        with runner, progress(_work_size(runner), "reconciling", not as_json) as tick:
            report = runner.reconcile(fix=fix, stuck_after=stuck_after, progress=tick)
    data = report.to_dict()
    if as_json:
        print_json(data)
    else:
        _print_reconcile(data)
    sys.exit(EXIT_OK if report.clean else EXIT_UNRESOLVED)


def _work_size(runner: SagaRunner) -> int:
    """Rows plus vectors to compare, for the progress bar."""
    counts = [runner.count(spec.table) for spec in runner.tracked()]
    return sum(c.rows + c.vectors for c in counts)


def _print_reconcile(data: dict[str, Any]) -> None:
    console = out()
    table = Table(
        title=f"reconcile: {data['rows_checked']} rows, {data['vectors_checked']} vectors"
    )
    table.add_column("finding")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for name in _FINDINGS:
        ids = data[name]
        table.add_row(name, str(len(ids)), ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else ""))
    console.print(table)
    console.print("stores agree" if data["clean"] else "stores DISAGREE (see above)")
