"""``run_demo``: the story of the library, end to end, on the embedded default.

An application (a code knowledge base) writes records through sagas; faults are
injected; workers are SIGKILLed mid-saga; ``saga status`` shows what is stuck; recovery
settles it; reconcile shows the stores agree; a semantic query returns only committed
rows; the state diagrams are drawn. Each phase is a short function that prints its part.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.progress import Progress

from saga import ReconcileReport, RecoveryReport, RetryPolicy, SagaRunner
from saga import inspect as _inspect
from saga.demo import show
from saga.demo.app import TABLES, Paths, create_tables, open_runner
from saga.demo.corpus import MODULES, Record, load
from saga.demo.embedder import DIMENSION, embed
from saga.demo.faults import inject_faults, kill_workers
from saga.demo.plan import BATCH_SIZES, Plan, make_plan
from saga.demo.summary import Bucket, DemoSummary, Tally
from saga.demo.workdir import prepare
from saga.demo.writes import WRITES, vector_text
from saga.diagram import render_saga, write_all

DEFAULT_RECORDS = 300
SUMMARY_FILE = "summary.json"
QUERY = "serialize a Python object to a JSON formatted string"
RETRY = RetryPolicy(attempts=3, wait_initial=0.02, wait_max=0.1)
"""Retries still show (a failing Chroma is tried 3 times), without the default's
second-long waits: the demo's Chroma faults are permanent, waiting would only slow it."""


@attrs.frozen
class _Stuck:
    """A saga found in flight before recovery, with the record writes it carries."""

    saga_id: str
    definition: str
    table: str
    state: str
    keys: tuple[Any, ...]
    """The first keys (``saga show`` lists up to 10)."""
    items: int
    """Record writes in the saga."""


def run_demo(workdir: Path, records: int, console: Console) -> DemoSummary:
    """Run the whole story in ``workdir`` (wiped first) with ``records`` corpus records."""
    started = time.monotonic()
    plan = make_plan(load(records))  # a bad count is refused before anything is wiped
    paths = Paths(prepare(workdir))
    tally = Tally()
    _intro(console, paths, records)
    show.heading(console, 1, "The application")
    create_tables(paths.db)
    with open_runner(paths, RETRY) as runner:
        _set_up(console, runner)
        _write_plainly(console, runner, plan, tally)
        show.heading(console, 3, "Faults, each reported with what it left behind")
        inject_faults(runner, plan, tally, console)
    # An embedded Chroma folder admits one process (an flock refuses a second one), so
    # the main runner is closed before the workers open the stores, and reopened after.
    show.note(console, "main runner closed: the embedded Chroma folder admits one process")
    in_flight_writes = kill_workers(paths, plan, tally, console)
    _status(console, paths)
    with open_runner(paths, RETRY) as runner:
        stuck = _stuck(console, runner, paths)
        _counts(console, runner, "before recovery")
        recovery = _recover(console, runner, stuck, tally)
        reconcile = _reconcile(console, runner)
        totals = _counts(console, runner, "after recovery")
        _query(console, runner, plan)
        drawings = _diagrams(console, runner, paths, tally)
    summary = attrs.evolve(
        _summarise(paths, plan, tally, recovery, reconcile),
        in_flight_before_recovery=len(stuck),
        rows=totals[0],
        vectors=totals[1],
        diagrams=tuple(drawings[0]),
        saga_pictures=tuple(drawings[1]),
        seconds=round(time.monotonic() - started, 1),
    )
    _summary(console, summary, plan, in_flight_writes)
    # For scripts and the test suite: the same counts, without parsing the text above.
    summary_file = paths.workdir / SUMMARY_FILE
    summary_file.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    show.note(console, f"summary written to {summary_file}")
    console.print(f"   done in {summary.seconds:.1f} s: {'exit 0' if summary.ok else 'exit 1'}")
    return summary


# -- 1. the application ----------------------------------------------------------------


def _intro(console: Console, paths: Paths, records: int) -> None:
    console.print(
        "[bold]saga demo[/bold]: rows in SQLite, their embeddings in Chroma, "
        "every dual write a persisted saga"
    )
    show.note(console, f"work folder {paths.workdir}: {paths.db.name}, {paths.chroma.name}/")
    show.note(console, f"embedded Chroma, no server, no network; {records} records")


def _set_up(console: Console, runner: SagaRunner) -> None:
    specs = [runner.spec(table.name) for table in TABLES]
    rows = [[s.table, s.key, s.collection, s.dimension] for s in specs]
    console.print(
        show.table(
            "tables created with plain SQL, then tracked",
            ["table", "key", "Chroma collection", "#dimension"],
            rows,
        )
    )
    show.note(
        console,
        f"text: docstrings of {', '.join(MODULES[:5])}, ... (inspect.getdoc)",
    )
    show.note(
        console, f"vectors: {DIMENSION}-dim hashed bag of words and trigrams, no model download"
    )


# -- 2. plain writes -------------------------------------------------------------------


def _write_plainly(console: Console, runner: SagaRunner, plan: Plan, tally: Tally) -> None:
    show.heading(console, 2, f"Writing {plan.plain_writes} records through sagas")
    sagas = 0
    with _progress(console, plan.plain_writes) as advance:
        for op, batch in _plain_writes(plan):
            result = WRITES[op](runner, batch)
            tally.settle("written", op, len(batch), result.saga_id)
            sagas += 1
            advance(len(batch))
    batches = ", ".join(f"{table} {_batching(size)}" for table, size in BATCH_SIZES.items())
    show.note(
        console,
        f"{_many(len(plan.creates), 'create')} ({batches}), "
        f"{_many(len(plan.updates), 'update')}, {_many(len(plan.deletes), 'delete')}: "
        f"{sagas} sagas, every one synced",
        good=True,
    )


def _plain_writes(plan: Plan) -> Iterator[tuple[str, list[Record]]]:
    """Creates per table in batches of ``BATCH_SIZES``, then the updates and deletes."""
    for table, size in BATCH_SIZES.items():
        mine = [r for r in plan.creates if r.table == table]
        for start in range(0, len(mine), size):
            batch = mine[start : start + size]
            yield ("create" if len(batch) == 1 else "create_many"), batch
    for record in plan.updates:
        yield "update", [record]
    for record in plan.deletes:
        yield "delete", [record]


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _batching(size: int) -> str:
    return "one by one" if size == 1 else f"in batches of {size}"


@contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent when the output is piped."""
    if not console.is_terminal:
        yield lambda _step: None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing", total=total)
        yield lambda step: bar.advance(task, step)


# -- 4. status -------------------------------------------------------------------------


def _status(console: Console, paths: Paths) -> None:
    show.heading(console, 4, "saga status: what the crashes left in flight")
    data = _inspect.status(paths.db)
    console.print(show.status_table(data))
    oldest = data["oldest_in_flight"]
    if oldest is None:
        show.note(console, "no saga in flight")
        return
    show.note(
        console,
        f"{data['in_flight']} in flight; oldest {oldest['saga_id']} "
        f"({oldest['table']}, {oldest['state']})",
    )


def _stuck(console: Console, runner: SagaRunner, paths: Paths) -> list[_Stuck]:
    stuck = []
    for saga in runner.in_flight():
        data = _inspect.show(paths.db, saga.saga_id)
        payload = data["payload"] or {"keys": [], "items": 0}
        stuck.append(
            _Stuck(
                saga.saga_id,
                data["definition"],
                saga.table,
                saga.state,
                tuple(payload["keys"]),
                payload["items"],
            )
        )
    rows = [[s.saga_id, s.definition, s.table, s.state, ", ".join(map(str, s.keys))] for s in stuck]
    console.print(
        show.table("sagas in flight", ["saga", "definition", "table", "state", "keys"], rows)
    )
    return stuck


def _counts(console: Console, runner: SagaRunner, when: str) -> tuple[int, int]:
    """Rows and vectors per table, side by side; returns the totals."""
    counts = {table.name: runner.count(table.name) for table in TABLES}
    rows = [[name, c.rows, c.vectors] for name, c in counts.items()]
    console.print(
        show.table(f"the two stores {when}", ["table", "#SQLite rows", "#Chroma vectors"], rows)
    )
    return sum(c.rows for c in counts.values()), sum(c.vectors for c in counts.values())


# -- 5. recovery, 6. reconcile -----------------------------------------------------------


def _recover(
    console: Console, runner: SagaRunner, stuck: list[_Stuck], tally: Tally
) -> RecoveryReport:
    show.heading(console, 5, "Recovery: runner.recover(older_than=timedelta(0))")
    report = runner.recover(older_than=dt.timedelta(0))
    console.print(show.recovery_table(report))
    for saga in stuck:
        if saga.saga_id not in tally.accounted:
            tally.settle(_bucket(report, saga.saga_id), saga.definition, saga.items)
    recovered = [s for s in stuck if s.saga_id in report.resumed_ids]
    if recovered:
        # The batch is the most telling picture: it died with vectors but no rows.
        best = max(recovered, key=lambda s: (s.items, s.definition))
        tally.pictures["recovered"] = best.saga_id
    if stuck and not report.skipped:
        show.note(console, "no lease to wait out: the dead workers' pids are gone")
    return report


def _bucket(report: RecoveryReport, saga_id: str) -> Bucket:
    """Where recovery put a saga's record writes: finished, undone, or still open."""
    if saga_id in report.resumed_ids:
        return "recovered"
    if saga_id in report.compensated_ids:
        return "compensated"
    return "unresolved"


def _reconcile(console: Console, runner: SagaRunner) -> ReconcileReport:
    show.heading(console, 6, "Reconcile: compare both stores, vector by vector")
    report = runner.reconcile(fix=False, stuck_after=dt.timedelta(0))
    console.print(show.reconcile_table(report))
    show.note(console, "stores agree" if report.clean else "stores DISAGREE", good=report.clean)
    return report


# -- 7. query --------------------------------------------------------------------------


def _query(console: Console, runner: SagaRunner, plan: Plan) -> None:
    show.heading(console, 7, f"Semantic query on summaries: {QUERY!r}")
    results = runner.query("summaries", embedding=embed(QUERY), n_results=3)
    rows = [
        [n, r.key, f"{r.distance:.3f}", show.snippet(r.row["summary"])]
        for n, r in enumerate(results, start=1)
    ]
    console.print(show.table(None, ["#", "key", "#distance", "summary"], rows))
    gone = plan.check_violation
    probe = runner.query(gone.table, embedding=embed(vector_text(gone)), n_results=3)
    absent = all(r.key != gone.key for r in probe)
    show.note(
        console,
        f"only committed rows answer: the exact vector of {gone.key} (written to Chroma, "
        f"then compensated) finds {', '.join(str(r.key) for r in probe)}",
        good=absent,
    )


# -- 8. diagrams -----------------------------------------------------------------------


def _diagrams(
    console: Console, runner: SagaRunner, paths: Paths, tally: Tally
) -> tuple[list[Path], list[Path]]:
    show.heading(console, 8, "State diagrams")
    drawn = write_all(paths.diagrams, "mermaid", definitions=_definitions(runner))
    show.note(
        console, f"{len(drawn)} files in {paths.diagrams}: {', '.join(p.name for p in drawn)}"
    )
    pictures = [
        _picture(console, runner, paths, label, saga_id)
        for label, saga_id in sorted(tally.pictures.items(), reverse=True)
    ]
    return drawn, pictures


def _definitions(runner: SagaRunner) -> dict[str, Any]:
    """The definitions this runner runs, by name (the built-in dual writes)."""
    names = ("create", "update", "delete", "create_many", "update_many", "delete_many")
    return {name: runner.definition(name) for name in names}


def _picture(console: Console, runner: SagaRunner, paths: Paths, label: str, saga_id: str) -> Path:
    """Draw one saga with its path from the history table, as ``saga show --diagram`` does."""
    data = _inspect.show(paths.db, saga_id)
    moves = [(h["from_state"], h["event"], h["to_state"]) for h in data["history"]]
    drawing = render_saga(runner.definition(data["definition"]), data["state"], moves, "mermaid")
    target = paths.diagrams / f"saga-{label}-{saga_id}.mmd"
    if isinstance(drawing, bytes):
        target.write_bytes(drawing)
    else:
        target.write_text(drawing)
    states = " -> ".join(["(start)", *(m[2] for m in moves)])
    show.note(console, f"{label} saga {saga_id} ({data['definition']}): {states}")
    show.note(console, f"   drawn in {target}")
    return target


# -- summary ---------------------------------------------------------------------------


def _summarise(
    paths: Paths, plan: Plan, tally: Tally, recovery: RecoveryReport, reconcile: ReconcileReport
) -> DemoSummary:
    """The counts from the ledger and the reports (``run_demo`` adds the rest)."""
    return DemoSummary(
        workdir=paths.workdir,
        attempted=plan.attempted,
        written=tally.written,
        refused=tally.refused,
        compensated=tally.compensated,
        recovered=tally.recovered,
        unresolved=tally.unresolved,
        leftovers=tally.leftovers,
        expected_rows=tally.expected_rows,
        recovery_failed=recovery.unsettled,
        orphan_vectors=len(reconcile.orphan_vectors),
        missing_vectors=len(reconcile.missing_vectors),
        drift=len(reconcile.drift),
        stuck_sagas=len(reconcile.stuck_sagas),
    )


def _summary(console: Console, s: DemoSummary, plan: Plan, in_flight_writes: int) -> None:
    console.print()
    console.print("[bold]Summary[/bold] (one record write = one row change and its vector)")
    ops = ", ".join(_many(n, op) for op, n in plan.by_operation().items())
    rows = [
        ["attempted", s.attempted, ops],
        ["written ok", s.written, "synced in both stores"],
        ["refused", s.refused, "bad input, refused before any write"],
        ["compensated", s.compensated, "DataIntegrityError: undone, nothing left"],
        ["recovered", s.recovered, f"{in_flight_writes} in flight after SIGKILL, finished"],
        ["unresolved", s.unresolved, "must be 0"],
    ]
    console.print(show.table(None, ["record writes", "#count", "meaning"], rows))
    total = s.written + s.refused + s.compensated + s.recovered + s.unresolved
    show.note(
        console,
        f"{s.written} + {s.refused} + {s.compensated} + {s.recovered} + "
        f"{s.unresolved} = {total} (attempted {s.attempted})",
        good=s.adds_up,
    )
    show.note(
        console,
        f"SQLite rows {s.rows}, Chroma vectors {s.vectors}, expected {s.expected_rows}",
        good=s.rows == s.vectors == s.expected_rows,
    )
    show.note(
        console,
        f"final reconcile: {s.orphan_vectors} orphans, {s.missing_vectors} "
        f"missing, {s.drift} drift, {s.stuck_sagas} stuck",
        good=s.reconcile_clean,
    )
