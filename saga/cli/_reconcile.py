"""``saga reconcile``: compare SQLite and Chroma, and with ``--fix`` repair through sagas."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
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

_FINDINGS = (
    "orphan_vectors",
    "missing_vectors",
    "drift",
    "stuck_sagas",
    "fixed",
    "unfixable",
    "backfilled",
)


@click.command()
@db_option
@chroma_options
@click.option("--fix", is_flag=True, help="Repair what can be repaired, through sagas.")
@click.option(
    "--stuck-after",
    type=Duration(),
    default="5m",
    show_default=True,
    help="A saga in flight longer than this counts as stuck (one whose owner is gone "
    "is stuck at once).",
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
    """Compare SQLite and Chroma: orphans, missing vectors, drift, sagas in flight.

    A saga whose owner is gone is stuck at once; --fix settles those first. Exit 0 when
    the stores agree and no saga is in flight (after fixing, with --fix), 1 otherwise.
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
        table.add_row(name, str(len(ids)), _examples(ids))
    console.print(table)
    console.print(_in_flight_line(data["in_flight"]))
    console.print(_verdict(data))


def _examples(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else "")


def _in_flight_line(ids: Sequence[str]) -> str:
    """How many sagas reconcile left alone, and which: their vectors were not checked."""
    if not ids:
        return "no saga in flight"
    if len(ids) == 1:
        return f"1 saga in flight, its vectors not checked: {ids[0]}"
    return f"{len(ids)} sagas in flight, their vectors not checked: {_examples(ids)}"


def _verdict(data: dict[str, Any]) -> str:
    if data["clean"]:
        return "stores agree"
    found = {*data["orphan_vectors"], *data["missing_vectors"], *data["drift"]}
    if not (found - set(data["fixed"]) or data["stuck_sagas"]):
        return "stores not known to agree while sagas are in flight (see above)"
    return "stores DISAGREE (see above)"
