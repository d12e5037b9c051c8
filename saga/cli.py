"""The ``saga`` command: thin wrappers that parse, call one public function, and print.

Exit codes: 0 consistent / done; 1 something is left unresolved or inconsistent (the
report says what); 2 bad usage (unknown flag, bad duration, missing or non-saga db).
"""

from __future__ import annotations

import logging
import sys

import click
from loguru import logger

EXIT_OK, EXIT_UNRESOLVED, EXIT_USAGE = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log each saga step to stderr.")
def cli(verbose: bool) -> None:
    """Crash-safe dual writes to SQLite and ChromaDB: inspect, recover, reconcile."""
    logger.remove()
    # stamina reports each scheduled retry through stdlib logging, which prints to
    # stderr when nothing is configured: the reports below already say what failed.
    logging.getLogger("stamina").setLevel(logging.DEBUG if verbose else logging.ERROR)
    if verbose:
        logger.add(sys.stderr, level="DEBUG")
        logger.enable("saga")


def main() -> None:
    """Console-script entry point."""
    cli(standalone_mode=True)


# Each command family lives in its own module and registers itself on `cli` when
# imported; they import `cli` from here, hence the import at the bottom.
from saga import _cli_demo, _cli_diagram, _cli_ops  # noqa: E402, F401

if __name__ == "__main__":
    main()
