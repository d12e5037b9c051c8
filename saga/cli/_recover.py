"""``saga recover``: resume or compensate the sagas a crash left in flight."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any, Literal

import click
from rich.table import Table

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


@click.command()
@db_option
@chroma_options
@click.option(
    "--older-than",
    type=Duration(),
    default="0s",
    show_default=True,
    help="Only sagas started at least this long ago (45s, 30m, 1h, 2d).",
)
@click.option(
    "--policy",
    type=click.Choice(["resume", "compensate"]),
    default="resume",
    show_default=True,
    help="Before the pivot: roll forward (resume) or undo (compensate).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
@definitions_option
@json_option
def recover(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    older_than: dt.timedelta,
    policy: Literal["resume", "compensate"],  # the only values click.Choice admits
    dry_run: bool,
    definitions: tuple[str, ...],
    as_json: bool,
) -> None:
    """Resume or compensate every saga a crash left in flight. Exit 1 if any remain."""
    with errors_mapped():
        runner = open_runner(db, chroma_path, chroma_host, chroma_port, definitions)
        with runner:
            total = len(runner.in_flight())
            with progress(total, "recovering", not as_json) as tick:
                report = runner.recover(older_than, policy=policy, dry_run=dry_run, progress=tick)
    data = report.to_dict()
    if as_json:
        print_json(data)
    else:
        _print_recovery(data)
    sys.exit(EXIT_OK if report.clean else EXIT_UNRESOLVED)


def _print_recovery(data: dict[str, Any]) -> None:
    console = out()
    table = Table(title="recovery" + (" (dry run: nothing changed)" if data["dry_run"] else ""))
    table.add_column("outcome")
    table.add_column("sagas", justify="right")
    # The report's counts, in the order it declares them (its ids, errors and flags
    # are the other fields), so the table follows the report's own words.
    for name, value in data.items():
        if type(value) is int:
            table.add_row(name, str(value))
    console.print(table)
    for saga_id, error in data["errors"].items():
        console.print(f"  {saga_id}: {error}")
