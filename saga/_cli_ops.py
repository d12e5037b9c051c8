"""``saga status | show | recover | reconcile``: the operator's commands.

Each parses its flags, calls one public function, and prints a table (or, with
``--json``, exactly one JSON object and nothing else).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from saga import inspect as _inspect
from saga._errors import ConfigurationError, SagaError
from saga._runner import SagaRunner
from saga._validation import identifier, quote
from saga.cli import EXIT_OK, EXIT_UNRESOLVED, EXIT_USAGE, cli

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


def _out() -> Console:
    # No markup (saga data may hold brackets); wide when piped so ids are not cut.
    return Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"saga: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _errors_mapped() -> Iterator[None]:
    """A missing or non-saga database is a usage error (2); other saga errors are 1."""
    try:
        yield
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    except SagaError as exc:
        _fail(str(exc), EXIT_UNRESOLVED)


def _print_json(data: Any) -> None:
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


def _open_runner(
    db: Path, chroma_path: Path | None, chroma_host: str | None, chroma_port: int | None
) -> SagaRunner:
    if (chroma_path is None) == (chroma_host is None):
        raise click.UsageError("give exactly one of --chroma-path or --chroma-host/--chroma-port")
    if chroma_path is not None and not chroma_path.is_dir():
        raise click.UsageError(f"no Chroma folder at {chroma_path}")
    if chroma_host is not None and chroma_port is None:
        raise click.UsageError("--chroma-host needs --chroma-port")
    return SagaRunner.open(
        db,
        chroma_path=chroma_path,
        chroma_host=chroma_host,
        chroma_port=chroma_port,
        create=False,
    )


@contextlib.contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[..., None]]:
    """A progress bar on a terminal; a no-op in JSON mode or when piped."""
    if not enabled or not sys.stdout.isatty() or total == 0:
        yield lambda *_args: None
        return
    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda step=1, *_args: bar.advance(task, step)


# -- status -------------------------------------------------------------------------


@cli.command()
@db_option
@json_option
def status(db: Path, as_json: bool) -> None:
    """Counts of sagas per state and per table, and the oldest one in flight.

    Exits 1 when any saga is in flight (a crash may have left it: see `saga recover`).
    """
    with _errors_mapped():
        data = _inspect.status(db)
    if as_json:
        _print_json(data)
    else:
        _print_status(data)
    sys.exit(EXIT_UNRESOLVED if data["in_flight"] else EXIT_OK)


def _print_status(data: dict[str, Any]) -> None:
    out = _out()
    table = Table(title=f"sagas in {data['db']}")
    table.add_column("table")
    states = sorted({s for counts in data["by_table"].values() for s in counts})
    for state in states:
        table.add_column(state, justify="right")
    for name, counts in data["by_table"].items():
        table.add_row(name, *(str(counts.get(s, 0)) for s in states))
    out.print(table)
    oldest = data["oldest_in_flight"]
    if oldest is None:
        out.print("no saga in flight")
    else:
        out.print(
            f"{data['in_flight']} in flight; oldest {oldest['saga_id']} ({oldest['table']}, "
            f"{oldest['state']}, {oldest['age_seconds']:.0f}s old)"
        )


# -- show ---------------------------------------------------------------------------


@cli.command()
@click.argument("saga_id")
@db_option
@json_option
@click.option(
    "--diagram",
    "diagram_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write this saga's state diagram, its path marked (.mmd Mermaid, .svg Graphviz).",
)
def show(saga_id: str, db: Path, as_json: bool, diagram_file: Path | None) -> None:
    """One saga: state, lease, attempts, payload summary and history."""
    with _errors_mapped():
        try:
            data = _inspect.show(db, saga_id)
        except ConfigurationError:
            raise
        except SagaError as exc:
            _fail(str(exc), EXIT_USAGE)
        if diagram_file is not None:
            _write_saga_diagram(data, diagram_file)
            data["diagram"] = str(diagram_file)
    if as_json:
        _print_json(data)
    else:
        _print_show(data)


def _write_saga_diagram(data: dict[str, Any], target: Path) -> None:
    from saga._compose import builtin_definitions  # noqa: PLC0415
    from saga.diagram import render_saga  # noqa: PLC0415

    definition = builtin_definitions().get(data["definition"])
    if definition is None:
        raise SagaError(f"no built-in definition {data['definition']!r} to draw")
    path = [(h["from_state"], h["event"], h["to_state"]) for h in data["history"]]
    fmt = "svg" if target.suffix == ".svg" else "mermaid"
    drawing = render_saga(definition, data["state"], path, fmt)
    if isinstance(drawing, bytes):
        target.write_bytes(drawing)
    else:
        target.write_text(drawing)


def _print_show(data: dict[str, Any]) -> None:
    out = _out()
    out.print(f"saga {data['saga_id']}  [{data['definition']} on {data['table']}]")
    out.print(f"state: {data['state']}   attempts: {data['attempts']}")
    out.print(f"lease: {data['lease_owner'] or '-'} until {data['lease_expires_at'] or '-'}")
    if data["last_error"]:
        out.print(f"last error: {data['last_error']}")
    payload = data["payload"]
    if payload:
        out.print(f"payload: {payload}")
    table = Table(title="history")
    for column in ("at", "from", "event", "to", "error"):
        table.add_column(column)
    for h in data["history"]:
        table.add_row(h["at"], h["from_state"] or "", h["event"], h["to_state"], h["error"] or "")
    out.print(table)
    if "diagram" in data:
        out.print(f"diagram written to {data['diagram']}")


# -- recover ------------------------------------------------------------------------


@cli.command()
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
@json_option
def recover(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    older_than: dt.timedelta,
    policy: str,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Resume or compensate every saga a crash left in flight. Exit 1 if any remain."""
    with _errors_mapped():
        runner = _open_runner(db, chroma_path, chroma_host, chroma_port)
        with runner:
            total = len(runner.log.in_flight())
            with _progress(total, "recovering", not as_json) as tick:
                report = runner.recover(older_than, policy=policy, dry_run=dry_run, progress=tick)
    data = report.to_dict()
    if as_json:
        _print_json(data)
    else:
        _print_recovery(data)
    sys.exit(EXIT_OK if report.failed == 0 else EXIT_UNRESOLVED)


def _print_recovery(data: dict[str, Any]) -> None:
    out = _out()
    table = Table(title="recovery" + (" (dry run: nothing changed)" if data["dry_run"] else ""))
    table.add_column("outcome")
    table.add_column("sagas", justify="right")
    for name in ("resumed", "compensated", "failed", "skipped"):
        table.add_row(name, str(data[name]))
    out.print(table)
    for saga_id, error in data["errors"].items():
        out.print(f"  {saga_id}: {error}")


# -- reconcile ----------------------------------------------------------------------


@cli.command()
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
@json_option
def reconcile(
    db: Path,
    chroma_path: Path | None,
    chroma_host: str | None,
    chroma_port: int | None,
    fix: bool,
    stuck_after: dt.timedelta,
    as_json: bool,
) -> None:
    """Compare SQLite and Chroma: orphans, missing vectors, drift, stuck sagas.

    Exit 0 when the stores agree (after fixing, with --fix), 1 otherwise.
    """
    with _errors_mapped():
        runner = _open_runner(db, chroma_path, chroma_host, chroma_port)
        with runner, _progress(_work_size(runner), "reconciling", not as_json) as tick:
            report = runner.reconcile(fix=fix, stuck_after=stuck_after, progress=tick)
    data = report.to_dict()
    if as_json:
        _print_json(data)
    else:
        _print_reconcile(data)
    sys.exit(EXIT_OK if report.clean else EXIT_UNRESOLVED)


def _work_size(runner: SagaRunner) -> int:
    """Rows plus vectors to compare, for the progress bar."""
    total = 0
    with runner.database.read() as conn:
        for spec in runner.log.all_tracked():
            table = quote(identifier(spec.table, "table"))
            total += conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    counter = getattr(runner.vectors, "count", None)
    if counter is not None:
        total += sum(int(counter(spec.collection)) for spec in runner.log.all_tracked())
    return int(total)


def _print_reconcile(data: dict[str, Any]) -> None:
    out = _out()
    table = Table(
        title=f"reconcile: {data['rows_checked']} rows, {data['vectors_checked']} vectors"
    )
    table.add_column("finding")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for name in ("orphan_vectors", "missing_vectors", "drift", "stuck_sagas", "fixed", "unfixable"):
        ids = data[name]
        table.add_row(name, str(len(ids)), ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else ""))
    out.print(table)
    out.print("stores agree" if data["clean"] else "stores DISAGREE (see above)")
