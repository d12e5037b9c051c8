"""``saga demo``: run the library's story in a fresh work folder and print it.

``saga.demo`` is imported when the command runs, not when the CLI is: the other
commands (and ``import saga.cli``) should not pay for the corpus, the story and the
workers. Its two numbers below are therefore repeated from ``saga.demo``;
``tests/test_cli_package.py`` checks that they agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from saga import SagaError
from saga.cli._common import EXIT_OK, EXIT_UNRESOLVED, EXIT_USAGE

MIN_RECORDS = 30
"""``saga.demo.MIN_RECORDS``: fewer leave too few to inject every fault into."""
DEFAULT_RECORDS = 300
"""``saga.demo.DEFAULT_RECORDS``."""


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-work"),
    show_default=True,
    help="Work folder, wiped and recreated (only if a previous demo made it).",
)
@click.option(
    "--records",
    type=click.IntRange(min=MIN_RECORDS),
    default=DEFAULT_RECORDS,
    show_default=True,
    help="How many records (standard library docstrings) to write.",
)
def demo(workdir: Path, records: int) -> None:
    """Write records through sagas, inject faults, kill workers, recover, reconcile.

    Runs on the embedded default (SQLite file + embedded Chroma in the work folder; no
    server, no network). Exit 0 only if the final reconcile is clean, recovery left
    nothing in flight and the summary's counts add up; 1 otherwise.
    """
    # Here, not at the top: see the module docstring.
    from saga.demo import DemoUsageError, run_demo  # noqa: PLC0415

    # Wide when piped, so table rows stay on one line in logs.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
    try:
        summary = run_demo(workdir, records, console)
    except DemoUsageError as exc:
        click.echo(f"saga demo: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except SagaError as exc:
        click.echo(f"saga demo: a write failed unexpectedly: {exc}", err=True)
        sys.exit(EXIT_UNRESOLVED)
    sys.exit(EXIT_OK if summary.ok else EXIT_UNRESOLVED)
