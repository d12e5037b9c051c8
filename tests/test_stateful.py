"""A stateful property test: random sequences of writes, faults, crashes and recoveries.

Hypothesis drives a real runner (real SQLite file, real embedded Chroma) through rules
(create, update, delete, create_many, delete_many, a create whose key SQLite assigns,
an atomic unit of several of these, or one whose block raises; the same writes with a
Chroma fault
or a SQLite fault injected; a saga stranded in ``compensating``; a crash in the middle
of a saga followed by a restart; recovery under either policy, sometimes with Chroma
down; reconciliation) and checks, after every step, the stores against a dict model:

- acknowledged writes are present with their body, document, embedding and metadata;
  refused and failed writes left nothing (``DataIntegrityError``: compensated);
- no orphan vector, no row without its vector, no drift (``reconcile()`` clean);
- only the sagas the model knows are in flight (stranded or crashed), and recovery
  settles each of them: forward under ``resume``, backward under ``compensate`` (or
  when compensation had begun), never half-way.

A crash is simulated in-process by a failpoint that raises ``SimulatedCrash``, a
``BaseException`` (the engine catches only ``Exception``): the saga stays exactly where
it was, as after SIGKILL. The runner is then dropped and a new one opened on the same
files, with a new lease owner; the test clock is moved past the lease's time to live
so that recovery may take the dead runner's sagas (its pid is this live process).

Seeded (``derandomize``). ``SAGA_HYPOTHESIS_PROFILE=long`` runs ten times as long.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from saga import (
    CompensationError,
    DataIntegrityError,
    LeasePolicy,
    RecordExistsError,
    RecordNotFoundError,
    RetryPolicy,
    SagaConflictError,
    SagaError,
    SagaRunner,
    failpoints,
)
from saga._recovery import DEFAULT_MAX_ATTEMPTS
from tests.conftest import make_db

# -- profiles -----------------------------------------------------------------------------

_BASE = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "print_blob": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=100, phases=[Phase.explicit, Phase.generate], **_BASE)
settings.register_profile("long", max_examples=1000, **_BASE)
PROFILE = os.environ.get("SAGA_HYPOTHESIS_PROFILE", "ci")
LONG = PROFILE == "long"

TTL = 30.0  # seconds of lease
KEYS = st.integers(1, 6)  # few keys: collisions, conflicts and refusals are common


class SimulatedCrash(BaseException):  # not an error: a death
    """The process 'dies' here: nothing after this point runs, nothing is settled."""


failpoints.register_error("test-crash", SimulatedCrash)


class Clock:
    """The wall clock, moved forward on demand (to expire a dead runner's lease)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


class Note(NamedTuple):
    """What the stores should hold for one key."""

    body: str
    document: str | None
    embedding: tuple[float, ...]
    metadata: dict[str, Any]


@attrs.define
class InFlight:
    """A saga the model expects to be in flight: its keys before and after it."""

    before: dict[int, Note | None]
    after: dict[int, Note | None]
    compensating: bool  # compensation began: recovery must finish it, never resume
    claims: int = 0  # recovery runs that claimed it and failed
    vectors_stored: bool = False  # its upserts landed before the crash (still pending)

    @property
    def given_up(self) -> bool:
        """Recovery's next claim is its last forward try: it compensates instead."""
        return self.claims + 1 >= DEFAULT_MAX_ATTEMPTS


def embedding_for(seed: int) -> tuple[float, ...]:
    """Exact in float32 (eighths), so what Chroma returns equals what was sent."""
    return tuple(seed + i / 8 for i in range(4))


NOTES = st.builds(
    Note,
    body=st.sampled_from(["alpha", "beta", "gamma", "'; DROP TABLE notes; --", "nul\x00"]),
    document=st.none() | st.sampled_from(["doc a", "doc b", "", "üñí"]),
    embedding=st.integers(-50, 50).map(embedding_for),
    metadata=st.dictionaries(
        st.sampled_from(["lang", "n", "flag"]), st.integers(-5, 5) | st.text(max_size=3)
    ),
)
# Where a single write is made to fail, and how. Each leaves nothing behind
# (DataIntegrityError): the step fails before the pivot and compensation runs.
CHROMA_FAULTS = {
    "before": "chroma.{point}=raise:chroma-unavailable*1",  # the write never landed
    "after": "chroma.{point}.after=raise*1",  # it landed, the answer was lost
}
SQLITE_FAULTS = (
    "sqlite.commit_rows=raise:sqlite-ioerror*1",
    "during:commit_rows=raise:sqlite-ioerror*1",
    "before:commit_rows=raise:sqlite-locked*1",
    "after:write_vectors=raise:sqlite-ioerror*1",
)
# Where a process dies mid-saga, and whether the saga is past its pivot then.
CRASH_POINTS = {
    "after:pending": False,
    "before:write_vectors": False,
    "chroma.{point}.after": False,
    "after:write_vectors": False,
    "during:commit_rows": False,
    "after:synced": True,
}
# Points where the vector step has run but the saga is still `pending`.
VECTOR_STORED_POINTS = {"chroma.{point}.after", "after:write_vectors", "during:commit_rows"}
OPS = ("create", "update", "delete", "create_many", "delete_many")


class SagaStateMachine(RuleBasedStateMachine):
    """One database and Chroma folder, the runner on them, and the model of both."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="saga-stateful-"))
        make_db(self.folder / "app.db")
        self.clock = Clock()
        self.model: dict[int, Note] = {}
        self.in_flight: dict[str, InFlight] = {}
        self.runner = self._open()
        self.runner.track("notes", dimension=4)

    def teardown(self) -> None:
        self.runner.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _open(self) -> SagaRunner:
        return SagaRunner.open(
            self.folder / "app.db",
            chroma_path=self.folder / "chroma",
            retry=RetryPolicy.disabled(),
            clock=self.clock,
            lease=LeasePolicy(ttl=TTL),
        )

    # -- what a write should do ---------------------------------------------------------

    def locked(self) -> set[int]:
        return {key for saga in self.in_flight.values() for key in saga.before}

    def refusal(self, op: str, keys: list[int]) -> type[SagaError] | None:
        """The error a write must be refused with, or None if it may go ahead."""
        if set(keys) & self.locked():
            return SagaConflictError
        if op.startswith("create"):
            return RecordExistsError if any(k in self.model for k in keys) else None
        return RecordNotFoundError if any(k not in self.model for k in keys) else None

    def intended(self, op: str, notes: dict[int, Note]) -> dict[int, Note | None]:
        """The state the write leaves its keys in, if it succeeds."""
        if op.startswith("delete"):
            return dict.fromkeys(notes)
        if op == "update":
            return {k: merged(self.model[k], n) for k, n in notes.items()}
        return dict(notes)

    def call(self, op: str, notes: dict[int, Note]) -> Any:
        runner, key = self.runner, next(iter(notes))
        note = notes[key]
        if op == "create":
            return runner.create(
                "notes",
                {"id": key, "body": note.body},
                embedding=note.embedding,
                document=note.document,
                metadata=note.metadata,
            )
        if op == "update":
            return runner.update(
                "notes",
                key,
                {"body": note.body},
                embedding=np.array(note.embedding),
                document=note.document,
                metadata=note.metadata or None,
            )
        if op == "delete":
            return runner.delete("notes", key)
        if op == "create_many":
            return runner.create_many(
                "notes",
                [
                    {
                        "row": {"id": k, "body": n.body},
                        "embedding": list(n.embedding),
                        "document": n.document,
                        "metadata": n.metadata,
                    }
                    for k, n in notes.items()
                ],
            )
        return runner.delete_many("notes", list(notes))

    def write(self, op: str, notes: dict[int, Note], faults: str = "") -> Exception | None:
        """Make the write (with ``faults`` armed); check it was refused exactly when the
        model says so. Returns the error of a write that went ahead and failed."""
        refusal = self.refusal(op, list(notes))
        error: Exception | None = None
        try:
            with failpoints.armed(faults):
                self.call(op, notes)
        except SagaError as exc:
            error = exc
        event(f"{op}: {type(error).__name__ if error else 'ok'}{' (armed)' if faults else ''}")
        if refusal is not None:
            assert isinstance(error, refusal), f"{op} {list(notes)}: {error!r}"
            return None
        if error is None:
            self.model.update(self.intended(op, notes))
            self.model = {k: n for k, n in self.model.items() if n is not None}
        return error

    def aim(self, op: str, notes: dict[int, Note]) -> dict[int, Note]:
        """The write re-aimed at keys it can succeed on, if there are enough: faults and
        crashes are for writes that go ahead (the plain writes cover refusals)."""
        notes = single(op, notes)
        locked = self.locked()
        creating = op.startswith("create")
        pool = [k for k in range(1, 7) if k not in locked and (k in self.model) is not creating]
        if len(pool) < len(notes):
            return notes
        start = next(iter(notes)) % len(pool)
        pool = pool[start:] + pool[:start]
        return dict(zip(pool, notes.values(), strict=False))

    # -- rules: writes ------------------------------------------------------------------

    @initialize(notes=st.lists(NOTES, min_size=3, max_size=3))
    def seed(self, notes: list[Note]) -> None:
        """Three notes to begin with, so that updates and deletes have something to hit."""
        self.write("create_many", dict(zip((1, 2, 3), notes, strict=True)))

    @rule(op=st.sampled_from(("create", "update", "delete")), key=KEYS, note=NOTES)
    def single_write(self, op: str, key: int, note: Note) -> None:
        error = self.write(op, {key: note})
        assert error is None, error

    @rule(
        op=st.sampled_from(("create_many", "delete_many")),
        notes=st.dictionaries(KEYS, NOTES, min_size=1, max_size=3),
    )
    def batch_write(self, op: str, notes: dict[int, Note]) -> None:
        error = self.write(op, notes)
        assert error is None, error

    @rule(note=NOTES)
    def assigned_create(self, note: Note) -> None:
        """A create without the key: SQLite's next one, never a key held or stored."""
        held = self.locked() | set(self.model)
        result = self.runner.create(
            "notes", {"body": note.body}, embedding=note.embedding, document=note.document,
            metadata=note.metadata,
        )  # fmt: skip
        [key] = result.keys
        assert isinstance(key, int)
        assert key not in held
        self.model[key] = note

    @rule(
        writes=st.lists(
            st.tuples(st.sampled_from(("create", "assigned", "update", "delete")), KEYS, NOTES),
            min_size=1,
            max_size=4,
        ),
        raises=st.booleans(),
    )
    def atomic_unit(self, writes: list[tuple[str, int, Note]], raises: bool) -> None:
        """Several writes as one unit: all of them, or (a refusal, or an exception in
        the block) none; a key is used once per unit."""
        done: dict[int, Note | None] = {}
        refused = False
        error: BaseException | None = None
        try:
            with self.runner.atomic() as unit:
                for op, key, note in writes:
                    vector = {"embedding": note.embedding, "document": note.document}
                    if op == "assigned":
                        given = unit.create("notes", {"body": note.body}, **vector,
                                            metadata=note.metadata)  # fmt: skip
                        assert isinstance(given, int)
                        assert given not in self.model
                        assert given not in self.locked()
                        done[given] = note
                        continue
                    if key in done:
                        continue  # once per unit (a second use is refused: see test_atomic)
                    refused = refused or self.refusal(op, [key]) is not None
                    if op == "create":
                        unit.create("notes", {"id": key, "body": note.body}, **vector,
                                    metadata=note.metadata)  # fmt: skip
                        done[key] = note
                    elif op == "update":
                        unit.update("notes", key, {"body": note.body}, **vector,
                                    metadata=note.metadata or None)  # fmt: skip
                        done[key] = merged(self.model[key], note) if key in self.model else note
                    else:
                        unit.delete("notes", key)
                        done[key] = None
                if raises:
                    raise RuntimeError("the block fails")
        except (SagaError, RuntimeError) as exc:
            error = exc
        event(f"atomic unit: {type(error).__name__ if error else 'ok'}")
        if raises:
            assert isinstance(error, RuntimeError), error
        elif refused:
            assert isinstance(error, SagaConflictError | RecordExistsError | RecordNotFoundError), (
                error
            )
        else:
            assert error is None, error
            self.model.update(done)
            self.model = {k: n for k, n in self.model.items() if n is not None}

    @rule(
        op=st.sampled_from(OPS),
        notes=st.dictionaries(KEYS, NOTES, min_size=1, max_size=3),
        when=st.sampled_from(sorted(CHROMA_FAULTS)),
    )
    def write_with_chroma_fault(self, op: str, notes: dict[int, Note], when: str) -> None:
        notes = self.aim(op, notes)
        point = "delete" if op.startswith("delete") else "upsert"
        faults = CHROMA_FAULTS[when].format(point=point)
        self.failed_write(
            op, notes, faults, f"chroma.{point}" + (".after" if when == "after" else "")
        )

    @rule(
        op=st.sampled_from(OPS),
        notes=st.dictionaries(KEYS, NOTES, min_size=1, max_size=3),
        faults=st.sampled_from(SQLITE_FAULTS),
    )
    def write_with_sqlite_fault(self, op: str, notes: dict[int, Note], faults: str) -> None:
        self.failed_write(op, self.aim(op, notes), faults, faults.partition("=")[0])

    def failed_write(self, op: str, notes: dict[int, Note], faults: str, point: str) -> None:
        """A write that goes ahead fails with DataIntegrityError and leaves nothing."""
        fired = failpoints.hits(point)
        goes_ahead = self.refusal(op, list(notes)) is None
        error = self.write(op, notes, faults)
        if goes_ahead:
            assert isinstance(error, DataIntegrityError), f"{op} {faults}: {error!r}"
            assert failpoints.hits(point) == fired + 1

    # -- rules: stranded and crashed sagas ----------------------------------------------

    @rule(
        op=st.sampled_from(OPS),
        notes=st.dictionaries(KEYS, NOTES, min_size=1, max_size=3),
    )
    def strand_a_saga_compensating(self, op: str, notes: dict[int, Note]) -> None:
        """The step fails and so does its compensation: CompensationError, the saga is
        left in ``compensating``. The runner is then dropped (a live runner keeps its
        lease on the saga) and a new one opened."""
        notes = self.aim(op, notes)
        goes_ahead = self.refusal(op, list(notes)) is None
        before = {k: self.model.get(k) for k in notes}
        intended = self.intended(op, notes) if goes_ahead else {}
        known = self.in_flight_ids()
        error = self.write(
            op, notes, "after:write_vectors=raise*1;compensate:write_vectors=raise*1"
        )
        if not goes_ahead:
            return
        assert isinstance(error, CompensationError), error
        (saga_id,) = self.in_flight_ids() - known
        assert saga_id == error.saga_id
        self.in_flight[saga_id] = InFlight(before, intended, compensating=True)
        self.restart()

    @rule(
        op=st.sampled_from(OPS),
        notes=st.dictionaries(KEYS, NOTES, min_size=1, max_size=3),
        point=st.sampled_from(sorted(CRASH_POINTS)),
    )
    def crash_mid_saga(self, op: str, notes: dict[int, Note], point: str) -> None:
        """The process dies at ``point``; a new runner is opened on the same files."""
        notes = self.aim(op, notes)
        goes_ahead = self.refusal(op, list(notes)) is None
        before = {k: self.model.get(k) for k in notes}
        intended = self.intended(op, notes) if goes_ahead else {}
        known = self.in_flight_ids()
        name = point.format(point="delete" if op.startswith("delete") else "upsert")
        with pytest.raises(SimulatedCrash) if goes_ahead else _no_crash():
            self.write(op, notes, f"{name}=raise:test-crash*1")
        new = self.in_flight_ids() - known
        event(f"crash at {point}" if goes_ahead else "crash: refused")
        if not goes_ahead:
            assert not new
            return
        if CRASH_POINTS[point]:  # past the pivot and synced: acknowledged in all but name
            assert not new
            self.model.update(intended)
            self.model = {k: n for k, n in self.model.items() if n is not None}
        else:
            (saga_id,) = new
            stored = point in VECTOR_STORED_POINTS and not op.startswith("delete")
            self.in_flight[saga_id] = InFlight(
                before, intended, compensating=False, vectors_stored=stored
            )
        self.restart()

    @rule()
    def restart(self) -> None:
        """Drop the runner and open a new one on the same files (a new lease owner)."""
        self.runner.close()
        self.runner = self._open()

    # -- rules: operations --------------------------------------------------------------

    @rule(policy=st.sampled_from(["resume", "compensate"]))
    def recover(self, policy: str) -> None:
        """Settle every saga in flight: each lands on its intended or its old state."""
        self.clock.advance(TTL + 1)  # the dead runners' leases expire
        report = self.runner.recover(policy=policy)
        event(f"recover {policy}: {report.resumed} resumed, {report.compensated} compensated")
        assert report.failed == 0, report.errors
        assert report.skipped == 0
        settled = set(report.resumed_ids) | set(report.compensated_ids)
        assert settled == set(self.in_flight)
        for saga_id, saga in self.in_flight.items():
            resumed = saga_id in report.resumed_ids
            if saga.compensating or policy == "compensate" or saga.given_up:
                assert not resumed, f"{saga_id} was resumed, compensation was due"
            else:
                assert resumed, f"{saga_id} was compensated under 'resume'"
            self.model.update(saga.after if resumed else saga.before)
        self.model = {k: n for k, n in self.model.items() if n is not None}
        self.in_flight.clear()

    @precondition(lambda self: bool(self.in_flight))
    @rule()
    def recover_while_chroma_is_down(self) -> None:
        """Chroma refuses every write: each saga that needs one stays in flight,
        released, for the next run (a transient failure is not a reason to compensate)."""
        self.clock.advance(TTL + 1)
        states = {saga.saga_id: saga.state for saga in self.runner.in_flight()}
        down = "chroma.upsert=raise:chroma-unavailable;chroma.delete=raise:chroma-unavailable"
        with failpoints.armed(down):
            report = self.runner.recover()
        assert report.compensated == 0
        assert set(report.failed_ids) | set(report.resumed_ids) == set(self.in_flight)
        for saga_id in report.resumed_ids:  # only the row was left to write
            saga = self.in_flight.pop(saga_id)
            # Recorded so, or its vectors already stored exactly (recovery reads them
            # and writes only what differs, so a Chroma that refuses writes is no bar).
            assert states[saga_id] == "vector_written" or saga.vectors_stored
            assert not saga.given_up
            self.model.update(saga.after)
        self.model = {k: n for k, n in self.model.items() if n is not None}
        for saga_id in report.failed_ids:
            self.in_flight[saga_id].claims += 1
        assert self.in_flight_ids() == set(self.in_flight)
        for saga in self.runner.in_flight():
            assert saga.lease_owner is None  # released: the next run need not wait

    @rule(fix=st.booleans())
    def reconcile(self, fix: bool) -> None:
        # fix=True also recovers sagas older than 5 minutes: not while the model holds
        # some in flight (the test clock jumps ahead at every recovery).
        report = self.runner.reconcile(fix=fix and not self.in_flight)
        assert report.orphan_vectors == report.missing_vectors == report.drift == ()
        if not self.in_flight:
            assert report.clean
            assert report.fixed == ()

    # -- invariants ---------------------------------------------------------------------

    def in_flight_ids(self) -> set[str]:
        return {saga.saga_id for saga in self.runner.in_flight()}

    @invariant()
    def only_the_expected_sagas_are_in_flight(self) -> None:
        assert self.in_flight_ids() == set(self.in_flight)

    @invariant()
    def the_stores_hold_the_model(self) -> None:
        """Every key no saga is writing: row and vector exactly as acknowledged."""
        locked = self.locked()
        rows = stored_rows(self.folder / "app.db")
        vectors = stored_vectors(self.runner)
        for key in (set(self.model) | set(rows) | set(vectors)) - locked:
            note = self.model.get(key)
            if note is None:
                assert key not in rows, f"row {key} was never acknowledged"
                assert key not in vectors, f"orphan vector notes:{key}"
                continue
            assert rows.get(key) == (note.body, f"notes:{key}"), key
            assert vectors.get(key) == (note.document, note.embedding, note.metadata), key

    @invariant()
    def nothing_is_inconsistent(self) -> None:
        report = self.runner.reconcile(stuck_after=dt.timedelta(days=1))
        assert report.orphan_vectors == report.missing_vectors == report.drift == ()
        if not self.in_flight:
            assert report.clean


def merged(old: Note, new: Note) -> Note:
    """An update keeps the stored metadata when none is given (``None``)."""
    return Note(
        body=new.body,
        document=old.document if new.document is None else new.document,
        embedding=new.embedding,
        metadata=new.metadata or old.metadata,
    )


def single(op: str, notes: dict[int, Note]) -> dict[int, Note]:
    """One key for a single write, all of them for a batch."""
    return notes if op.endswith("_many") else dict([next(iter(notes.items()))])


@contextmanager
def _no_crash() -> Any:
    yield


def stored_rows(db: Path) -> dict[int, tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, body, vector_id FROM notes")}
    finally:
        conn.close()


def stored_vectors(runner: SagaRunner) -> dict[int, tuple[Any, ...]]:
    ids = [r.id for page in runner.stores.vectors.iter_records("notes", 1000) for r in page]
    found = {}
    for record in runner.stores.vectors.get("notes", ids, embeddings=True).values():
        table, _, key = record.id.partition(":")
        assert (table, str(int(key))) == ("notes", key), record.id
        # Exactly the caller's metadata: the library adds no key of its own.
        found[int(key)] = (record.document, record.embedding, dict(record.metadata or {}))
    return found


SagaStateMachine.TestCase.settings = settings(
    settings.get_profile(PROFILE),
    max_examples=400 if LONG else 40,
    stateful_step_count=60 if LONG else 30,
)
TestSagaStateMachine = SagaStateMachine.TestCase
