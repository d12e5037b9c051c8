"""What every ``saga`` command shares: exit codes, options, output, errors, progress.

The command modules import from here and never from ``saga.cli`` itself: the group
module imports them, so a name flowing back would be an import cycle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import Progress

from saga import (
    ConcurrentClientError,
    ConfigurationError,
    SagaError,
    SagaRunner,
    StoreError,
    VectorStoreUnreadable,
)
from saga.extend import SagaDefinition

EXIT_OK, EXIT_UNRESOLVED, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Duration(click.ParamType[dt.timedelta]):
    """``45s``, ``30m``, ``1h``, ``2d``, ``0s``."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        match = _DURATION.match(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration like 45s, 30m, 1h, 2d", param, ctx)
        amount, unit = match.groups()
        return dt.timedelta(**{_UNITS[unit]: int(amount)})


def out() -> Console:
    """The console tables are printed on."""
    # No markup (saga data may hold brackets); wide when piped so ids are not cut.
    return Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int) -> NoReturn:
    """Print ``saga: message`` on stderr and exit with ``code``."""
    click.echo(f"saga: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def errors_mapped() -> Iterator[None]:
    """A missing or non-saga database is a usage error (2); a store that is unavailable
    or held by another process is 3, with what to do; other saga errors are 1."""
    try:
        yield
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    except ConcurrentClientError as exc:
        fail(
            f"{exc}. From the command line: run recovery inside the application that holds "
            "the folder (runner.recover()), or serve the folder with `chroma run --path DIR` "
            "and pass --chroma-host/--chroma-port to both.",
            EXIT_STORE,
        )
    except VectorStoreUnreadable as exc:
        fail(str(exc), EXIT_STORE)
    except StoreError as exc:
        if not exc.transient:
            fail(str(exc), EXIT_UNRESOLVED)
        fail(f"{exc}. The store is unavailable: try again once it is back.", EXIT_STORE)
    except SagaError as exc:
        fail(str(exc), EXIT_UNRESOLVED)


def print_json(data: Any) -> None:
    """Print ``data`` as one JSON object (what ``--json`` promises)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


db_option = click.option(
    "--db",
    "db",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The application's SQLite database holding the saga log.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def chroma_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--chroma-path`` or ``--chroma-host`` with ``--chroma-port``: where Chroma is."""
    func = click.option(
        "--chroma-port", type=int, envvar="SAGA_CHROMA_PORT", help="Chroma server port."
    )(func)
    func = click.option(
        "--chroma-host", envvar="SAGA_CHROMA_HOST", help="Chroma server host (server mode)."
    )(func)
    return click.option(
        "--chroma-path",
        type=click.Path(file_okay=False, path_type=Path),
        help="Embedded Chroma folder (the application's PersistentClient path).",
    )(func)


definitions_option = click.option(
    "--definitions",
    "definitions",
    multiple=True,
    metavar="MODULE[:NAME]",
    help="Your own saga definitions, so their sagas can be settled: a module importable "
    "from here with definitions(db_path) or DEFINITIONS (repeatable).",
)


def open_runner(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    definitions: Sequence[str] = (),
) -> SagaRunner:
    """A runner on an existing saga database and the Chroma the flags name, with the
    custom definitions ``--definitions`` names registered."""
    custom = [d for spec in definitions for d in load_definitions(spec, db)]
    if (chroma_path is None) == (chroma_host is None):
        raise click.UsageError("give exactly one of --chroma-path or --chroma-host/--chroma-port")
    if chroma_path is not None and not chroma_path.is_dir():
        raise click.UsageError(f"no Chroma folder at {chroma_path}")
    if chroma_host is not None and chroma_port is None:
        raise click.UsageError("--chroma-host needs --chroma-port")
    runner = SagaRunner.open(
        db,
        chroma_path=chroma_path,
        chroma_host=chroma_host,
        chroma_port=chroma_port,
        create=False,
    )
    for definition in custom:
        runner.register(definition)
    return runner


def load_definitions(spec: str, db: Path) -> list[SagaDefinition]:
    """The definitions ``MODULE[:NAME]`` holds: ``NAME`` (default ``definitions``, then
    ``DEFINITIONS``) is a mapping or list of ``SagaDefinition``, or a function of the
    database path returning one. The current folder is searched first, as ``python -m``
    would."""
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error or an error in the module itself
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="--definitions"
        ) from exc
    found = next(
        (
            getattr(module, n)
            for n in ([name] if name else ["definitions", "DEFINITIONS"])
            if hasattr(module, n)
        ),
        None,
    )
    value = found(str(db)) if callable(found) else found
    items = list(value.values()) if isinstance(value, Mapping) else list(value or ())
    if not items or not all(isinstance(d, SagaDefinition) for d in items):
        raise click.BadParameter(
            f"{spec!r} names no SagaDefinition (give definitions(db_path) or DEFINITIONS)",
            param_hint="--definitions",
        )
    return items


@contextlib.contextmanager
def progress(total: int, label: str, enabled: bool) -> Iterator[Callable[..., None]]:
    """A progress bar on a terminal; a no-op in JSON mode or when piped."""
    if not enabled or not sys.stdout.isatty() or total == 0:
        yield lambda *_args: None
        return
    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda step=1, *_args: bar.advance(task, step)
