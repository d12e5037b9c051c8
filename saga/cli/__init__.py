"""The ``saga`` command: thin wrappers that parse, call one public function, and print.

Exit codes: 0 consistent / done; 1 something is left unresolved or inconsistent (the
report says what); 2 bad usage (unknown flag, bad duration, missing or non-saga db);
3 a store is unavailable or held by another process (the message says what to do).

Each command family lives in its own module (``_inspect``, ``_recover``, ``_reconcile``,
``_diagram``, ``_demo``) and is added to the group here, by name; those modules import
only ``saga.cli._common``, never this module, so there is no cycle and no command
depends on import order. ``python -m saga`` and ``python -m saga.cli`` run ``main``.
"""

from __future__ import annotations

import sys

import click
from loguru import logger

from saga.cli._adopt import adopt
from saga.cli._common import EXIT_OK, EXIT_STORE, EXIT_UNRESOLVED, EXIT_USAGE
from saga.cli._demo import demo
from saga.cli._diagram import diagram
from saga.cli._inspect import show, status
from saga.cli._rebuild import rebuild
from saga.cli._reconcile import reconcile
from saga.cli._recover import recover

__all__ = ["EXIT_OK", "EXIT_STORE", "EXIT_UNRESOLVED", "EXIT_USAGE", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log each saga step to stderr.")
def cli(verbose: bool) -> None:
    """Crash-safe dual writes to SQLite and ChromaDB: inspect, recover, reconcile."""
    logger.remove()
    if verbose:
        logger.add(sys.stderr, level="DEBUG")
        logger.enable("saga")


cli.add_command(status)
cli.add_command(show)
cli.add_command(recover)
cli.add_command(reconcile)
cli.add_command(rebuild)
cli.add_command(adopt)
cli.add_command(diagram)
cli.add_command(demo)


def main() -> None:
    """Console-script entry point."""
    cli(standalone_mode=True)
