"""``saga diagram``: draw every dual-write saga's state machine into a folder."""

from __future__ import annotations

from pathlib import Path

import click

from saga._compose import builtin_definitions
from saga.cli._common import EXIT_USAGE
from saga.diagram import FORMATS, GraphvizMissingError, write_all


@click.command("diagram")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("diagrams"),
    show_default=True,
    help="Folder to write the diagrams into (created if missing).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="mermaid",
    show_default=True,
    help="mermaid and dot are text and need nothing; svg needs Graphviz's `dot`.",
)
def diagram(out: Path, fmt: str) -> None:
    """Write one diagram per saga definition (plus a README.md for mermaid); print paths."""
    try:
        paths = write_all(out, fmt, definitions=builtin_definitions())
    except GraphvizMissingError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from exc
    for path in paths:
        click.echo(str(path))
