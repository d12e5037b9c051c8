"""The demo's faults: injected in-process with failpoints, and worker processes that
SIGKILL themselves mid-saga. Each is reported with what the stores hold afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from rich.console import Console

import saga
from saga import (
    DataIntegrityError,
    SagaError,
    SagaResult,
    SagaRunner,
    ValidationError,
    failpoints,
)
from saga.demo import show
from saga.demo.app import Paths
from saga.demo.corpus import Record
from saga.demo.embedder import embed
from saga.demo.plan import Kill, Plan
from saga.demo.summary import Bucket, Tally
from saga.demo.worker import records_json
from saga.demo.writes import WRITES, vector_text

WORKER_TIMEOUT = 120.0
"""Seconds a worker may take before the demo gives up on it (it normally dies in ~1 s)."""

_WORKER_EXITS: dict[int, Bucket] = {0: "written", 1: "compensated"}

STALE_DIMENSION = 32
"""The dimension of the "old embedder" whose vector is refused before any write."""


@attrs.frozen
class _Fault:
    label: str
    spec: str
    """The failpoints armed while it runs ("" for none)."""
    op: str
    records: tuple[Record, ...]
    write: Callable[[], SagaResult]
    drawn: bool = False
    """Its saga is the compensated one drawn at the end (it got furthest before failing)."""


@attrs.frozen
class _Attempt:
    bucket: Bucket
    text: str
    saga_id: str | None = None


def inject_faults(runner: SagaRunner, plan: Plan, tally: Tally, console: Console) -> None:
    """Run each in-process fault, tally it, and print what it left behind."""
    rows = [_run_fault(runner, fault, tally) for fault in _faults(runner, plan)]
    columns = ["fault", "write", "outcome", "left behind"]
    console.print(show.table("in-process faults", columns, rows))


def _run_fault(runner: SagaRunner, fault: _Fault, tally: Tally) -> list[str]:
    """One fault: armed, attempted, tallied, and checked in both stores afterwards."""
    tries_before = _tries(fault.spec)
    with failpoints.armed(fault.spec):
        attempt = _attempt(fault.write)
    tries = _tries(fault.spec) - tries_before
    tally.settle(attempt.bucket, fault.op, len(fault.records), attempt.saga_id)
    # A write that failed must leave nothing; one that went through, both halves.
    left = _left_behind(runner, fault.records)
    whole = len(fault.records) if attempt.bucket == "written" else 0
    if left != (whole, whole):
        tally.leftovers += len(fault.records)
    if fault.drawn and attempt.saga_id is not None:
        tally.pictures[attempt.bucket] = attempt.saga_id
    label = fault.label + (f" ({tries} tries)" if tries > 1 else "")
    return [label, _describe(fault.op, fault.records), attempt.text, _left_text(*left)]


def _faults(runner: SagaRunner, plan: Plan) -> list[_Fault]:
    stale, down, lost, bad = plan.stale, plan.chroma_down, plan.lost_answer, plan.check_violation
    blank = attrs.evolve(bad, row={**bad.row, bad.text_column: ""})
    unavailable = "chroma.upsert=raise:chroma-unavailable"
    return [
        _Fault(
            f"stale {STALE_DIMENSION}-dim embedding",
            "",
            "create",
            (stale,),
            lambda: runner.create(
                stale.table,
                stale.row,
                embedding=embed(vector_text(stale), STALE_DIMENSION),
                document=stale.text,
                metadata=stale.metadata,
            ),
        ),
        _Fault(
            "Chroma unavailable",
            unavailable,
            "create",
            (down,),
            lambda: WRITES["create"](runner, [down]),
        ),
        _Fault(
            "Chroma unavailable",
            unavailable,
            "create_many",
            plan.chroma_down_batch,
            lambda: WRITES["create_many"](runner, plan.chroma_down_batch),
        ),
        _Fault(
            "Chroma applied, answer lost",
            "chroma.upsert.after=raise:chroma-timeout",
            "create",
            (lost,),
            lambda: WRITES["create"](runner, [lost]),
        ),
        _Fault(
            f"empty {bad.text_column}: SQLite CHECK",
            "",
            "create",
            (bad,),
            lambda: WRITES["create"](runner, [blank]),
            drawn=True,
        ),
    ]


def _tries(spec: str) -> int:
    """How many times the failpoints in ``spec`` have fired in this process."""
    names = [part.partition("=")[0] for part in spec.split(";") if part]
    return sum(failpoints.hits(name) for name in names)


def _attempt(write: Callable[[], SagaResult]) -> _Attempt:
    """Run one write and sort its outcome into a bucket (a saga error is never hidden)."""
    try:
        result = write()
    except ValidationError as exc:
        return _Attempt("refused", f"{type(exc).__name__}, refused: {exc.message}")
    except DataIntegrityError as exc:
        return _Attempt("compensated", f"DataIntegrityError after {_cause(exc)}", exc.saga_id)
    except SagaError as exc:
        return _Attempt("unresolved", f"{type(exc).__name__}: {exc}", exc.saga_id)
    return _Attempt("written", "synced: read back, the write had landed", result.saga_id)


def _cause(exc: DataIntegrityError) -> str:
    return type(exc.cause).__name__ if exc.cause is not None else "an error"


def _left_behind(runner: SagaRunner, records: Sequence[Record]) -> tuple[int, int]:
    """How many of ``records`` have a row in SQLite, and a vector in Chroma."""
    table = records[0].table
    keys = [record.key for record in records]
    rows = sum(runner.row(table, key) is not None for key in keys)
    return rows, len(runner.vectors_of(table, keys))


def _left_text(rows: int, vectors: int) -> str:
    return "nothing" if rows == vectors == 0 else f"rows {rows}, vectors {vectors}"


def _describe(op: str, records: Sequence[Record]) -> str:
    if len(records) == 1:
        return f"{op} {records[0].table} {show.snippet(records[0].key, 34)}"
    return f"{op} {records[0].table}, {len(records)} records"


# -- workers killed mid-saga ---------------------------------------------------------


def kill_workers(paths: Paths, plan: Plan, tally: Tally, console: Console) -> int:
    """Run each planned worker; return how many record writes died in flight."""
    rows = []
    in_flight = 0
    for kill in plan.kills:
        code, error = _run_worker(paths, kill)
        if code == -signal.SIGKILL:
            in_flight += len(kill.records)
            rows.append([kill.point, _describe(kill.op, kill.records), kill.leaves, "SIGKILL"])
            continue
        # It was not killed: the write returned (0) or raised and was compensated (1).
        tally.settle(_WORKER_EXITS.get(code, "unresolved"), kill.op, len(kill.records))
        rows.append([kill.point, _describe(kill.op, kill.records), error or "-", f"exit {code}"])
    columns = ["killed at", "write", "what the stores hold then", "end"]
    console.print(show.table("worker processes (SAGA_FAILPOINTS=<point>=kill)", columns, rows))
    return in_flight


def _run_worker(paths: Paths, kill: Kill) -> tuple[int, str]:
    """Run one worker to its end (or its death); return its exit code and last error."""
    env = dict(os.environ)
    env[failpoints.ENV_VAR] = f"{kill.point}=kill"
    # The worker must run this very code, installed or not.
    source_root = str(Path(saga.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "saga.demo.worker", str(paths.workdir), kill.op],
        input=records_json(kill.records),
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else ""
