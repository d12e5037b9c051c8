"""Counting-loop fault injection, as SQLite tests its own I/O errors.

For each write (create, update, delete, and the three batches of three items) and each
place a store can fail, the k-th store call fails, for k = 1, 2, ... until the write
completes without reaching a k-th call: once as a one-shot fault (only call k fails)
and once persistent (call k and every later one fail). Every run must end in success or
a typed ``SagaError``, never a raw exception. Then the fault is removed, the runner is
dropped, a new one is opened on the same files (its test clock moved past the dead
runner's lease), ``recover()`` runs, and:

- nothing is in flight and ``reconcile()`` is clean (no orphan, no missing vector, no
  drift);
- the write happened in both stores or in neither: every key it touched holds, in the
  row and in the vector, either all the new state or all the old one; a success means
  the new state, ``DataIntegrityError`` (or a refusal before any saga began) the old;
  a saga recovery found in ``compensating`` ends in the old state, one it found before
  its pivot without compensation begun is resumed (policy ``resume``);
- every other row and vector (earlier runs', and two bystanders per run) is intact.

Where the faults come from (faults are injected by wrapping the real stores):

- ``chroma``: a proxy around the runner's vector store counts every call of the port
  (``get``, ``upsert``, ``delete``, ``max_batch_size``...) and raises
  ``VectorStoreUnavailable`` at call k, ``before`` making the real call or ``after`` it
  (the write landed, its answer was lost). It also caps the request size at 2 so a
  batch of three goes in two sub-batches (progress is saved between them).
- ``log``: a proxy around the saga log raises ``SqliteStoreError`` ("disk I/O error")
  at its k-th write (``begin``, ``advance``, ``save_progress``, ``record_error``,
  ``renew``), before it runs.
- ``commit``: the k-th SQLite write transaction of the database fails at COMMIT (a real
  ``sqlite3.OperationalError``, after its statements ran), so SQLite rolls it back.
- ``failpoint``: the named point ``sqlite.commit_rows`` raises a disk I/O error at its
  k-th hit (``raise:sqlite-ioerror@k``, or ``*1`` for one shot).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import (
    COMPENSATING,
    CompensationError,
    DataIntegrityError,
    LeasePolicy,
    RetryPolicy,
    SagaError,
    SagaRunner,
    SqliteStoreError,
    VectorStoreUnavailable,
    failpoints,
)
from tests.conftest import make_db, rewired, stored_vectors

TTL = 30.0  # seconds of lease
MAX_K = 80  # a write makes far fewer store calls: reaching this is a failure
SUB_BATCH = 2  # request size cap of the vector proxy: three items go in two requests
OPS = ("create", "update", "delete", "create_many", "update_many", "delete_many")
SOURCES = ("chroma-before", "chroma-after", "log", "commit", "failpoint")
MODES = ("one-shot", "persistent")
OUTCOMES: Counter[str] = Counter()  # how the runs ended (printed by each loop)


class Clock:
    """The wall clock, moved forward on demand (to expire a dead runner's lease)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


class Fault:
    """Fails the k-th counted call (``persistent``: and every later one)."""

    def __init__(self, k: int, *, persistent: bool) -> None:
        self.k = k
        self.persistent = persistent
        self.calls = 0
        self.fired = 0
        self.enabled = True

    def due(self) -> bool:
        """Count a call; True if it must fail."""
        if not self.enabled:
            return False
        self.calls += 1
        hit = self.calls == self.k or (self.persistent and self.calls > self.k)
        self.fired += hit
        return hit


class VectorProxy:
    """The real vector store, failing on cue (``before`` or ``after`` the real call)."""

    def __init__(self, real: Any, fault: Fault | None, *, after: bool) -> None:
        self._real = real
        self._fault = fault
        self._after = after
        self.names: list[str] = []  # every call, in order

    def max_batch_size(self) -> int:
        self._call("max_batch_size", ())
        return min(SUB_BATCH, self._real.max_batch_size())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        self.names.append(name)
        due = self._fault is not None and self._fault.due()
        if due and not self._after:
            raise VectorStoreUnavailable(f"injected: Chroma unavailable ({name})")
        result = getattr(self._real, name)(*args, **(kwargs or {}))
        if due:
            raise VectorStoreUnavailable(f"injected: answer to {name} lost")
        return result


class LogProxy:
    """The real saga log; its k-th write (a unit of work, or a one-statement write)
    fails with a disk I/O error before it runs."""

    WRITES = frozenset({"unit", "advance", "save_progress", "record_error", "renew"})

    def __init__(self, real: Any, fault: Fault) -> None:
        self._real = real
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name not in self.WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            if self._fault.due():
                raise SqliteStoreError(f"SQLite: injected disk I/O error ({name})")
            return attribute(*args, **kwargs)

        return write


def fail_commits(database: Any, fault: Fault) -> None:
    """Make the database's k-th write transaction fail at COMMIT (rolled back).

    ``Database.write`` is replaced on the instance, so ``write_settled`` goes through it.
    """
    real = database.write

    @contextlib.contextmanager
    def write(saga_id: str | None = None) -> Iterator[sqlite3.Connection]:
        due = fault.due()
        with real(saga_id) as conn:
            yield conn
            if due:  # the statements ran; COMMIT fails, and Database.write rolls back
                raise sqlite3.OperationalError("disk I/O error (injected at COMMIT)")

    database.write = write


# -- the world of one (op, source) loop ---------------------------------------------------


class Stores:
    """One database and Chroma folder for a whole loop; each run uses fresh keys."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        make_db(folder / "app.db")
        self.clock = Clock()
        self.model: dict[int, tuple[str, str | None]] = {}  # key -> (body, document)
        self.runner = self.open()
        self.runner.track("notes", dimension=4)
        self._runs = itertools.count(1)

    def fresh_keys(self) -> int:
        """The base of a key space no earlier run used."""
        return next(self._runs) * 16

    def open(self) -> SagaRunner:
        return SagaRunner.open(
            self.folder / "app.db",
            chroma_path=self.folder / "chroma",
            retry=RetryPolicy.disabled(),
            clock=self.clock,
            lease=LeasePolicy(ttl=TTL),
        )

    def restart(self) -> None:
        """Drop the runner (as a crash would) and open another, a new lease owner; the
        clock moves past the old lease so recovery may take its sagas."""
        self.runner.close()
        self.clock.offset += dt.timedelta(seconds=TTL + 1)
        self.runner = self.open()

    def seed(self, keys: list[int]) -> None:
        """Rows and vectors the write under test finds in place (and bystanders)."""
        self.runner.create_many(
            "notes",
            [
                {
                    "row": {"id": k, "body": f"old {k}"},
                    "embedding": [float(k), 0.5, 0.25, 1.0],
                    "document": f"old doc {k}",
                    "metadata": {"k": k},
                }
                for k in keys
            ],
        )
        self.model.update({k: (f"old {k}", f"old doc {k}") for k in keys})

    def observed(self) -> dict[int, tuple[Any, Any]]:
        """key -> (row body, vector document) for every key in either store."""
        conn = sqlite3.connect(self.folder / "app.db")
        try:
            bodies = dict(conn.execute("SELECT id, body FROM notes").fetchall())
        finally:
            conn.close()
        ids = [
            r.id for page in self.runner.stores.vectors.iter_records("notes", 1000) for r in page
        ]
        documents = {
            int(v.id.partition(":")[2]): v.document
            for v in self.runner.stores.vectors.get("notes", ids).values()
        }
        return {k: (bodies.get(k), documents.get(k)) for k in {*bodies, *documents}}


def write(runner: SagaRunner, op: str, keys: list[int]) -> Any:
    """The write under test on ``keys`` (new keys for creates, seeded ones otherwise)."""
    if op == "create":
        (key,) = keys
        return runner.create(
            "notes",
            {"id": key, "body": f"new {key}"},
            embedding=[1, 2, 3, 4],
            document=f"new doc {key}",
        )
    if op == "update":
        (key,) = keys
        return runner.update(
            "notes", key, {"body": f"new {key}"}, embedding=[4, 3, 2, 1], document=f"new doc {key}"
        )
    if op == "delete":
        (key,) = keys
        return runner.delete("notes", key)
    if op == "create_many":
        items = [
            {
                "row": {"id": k, "body": f"new {k}"},
                "embedding": [k, 1, 2, 3],
                "document": f"new doc {k}",
            }
            for k in keys
        ]
        return runner.create_many("notes", items)
    if op == "update_many":
        items = [
            {
                "key": k,
                "changes": {"body": f"new {k}"},
                "embedding": [3, 2, 1, k],
                "document": f"new doc {k}",
            }
            for k in keys
        ]
        return runner.update_many("notes", items)
    return runner.delete_many("notes", keys)


def _key(vector_id: str) -> int:
    return int(vector_id.partition(":")[2])


def _first_write(names: list[str]) -> Iterator[int]:
    return (i for i, name in enumerate(names) if name in ("upsert", "delete"))


def new_state(op: str, keys: list[int]) -> dict[int, tuple[Any, Any]]:
    if op.startswith("delete"):
        return dict.fromkeys(keys, (None, None))
    return {k: (f"new {k}", f"new doc {k}") for k in keys}


def install(stores: Stores, source: str, k: int, *, persistent: bool) -> tuple[Fault, VectorProxy]:
    """Arm the fault of ``source`` at call ``k`` on the current runner."""
    fault = Fault(k, persistent=persistent)
    runner = stores.runner
    chroma_fault = fault if source.startswith("chroma") else None
    proxy = VectorProxy(runner.stores.vectors, chroma_fault, after=source == "chroma-after")
    log = LogProxy(runner.stores.log, fault) if source == "log" else runner.stores.log
    stores.runner = rewired(runner, vectors=proxy, log=log)
    if source == "commit":
        fail_commits(runner.stores.log.db, fault)
    return fault, proxy


@contextlib.contextmanager
def armed_failpoint(source: str, k: int, *, persistent: bool) -> Iterator[Callable[[], int]]:
    """For ``failpoint``: ``sqlite.commit_rows`` fails from its k-th hit; yields how
    many times it fired."""
    if source != "failpoint":
        yield lambda: 0
        return
    name = "sqlite.commit_rows"
    before = failpoints.hits(name)
    spec = f"{name}=raise:sqlite-ioerror{'' if persistent else '*1'}@{k}"
    with failpoints.armed(spec):
        yield lambda: failpoints.hits(name) - before


def one_run(stores: Stores, op: str, source: str, k: int, *, persistent: bool) -> bool:
    """Fail call ``k`` of one write, recover, check. Returns whether the fault fired."""
    base = stores.fresh_keys()
    touched = [base + i for i in range(1, 4 if op.endswith("_many") else 2)]
    bystanders = [base + 8, base + 9]
    stores.seed(bystanders + ([] if op.startswith("create") else touched))
    before = stores.observed()
    exact_before = {v: c for v, c in stored_vectors(stores.runner).items() if _key(v) in touched}

    fault, proxy = install(stores, source, k, persistent=persistent)
    error: BaseException | None = None
    with armed_failpoint(source, k, persistent=persistent) as fired_points:
        try:
            write(stores.runner, op, touched)
        except Exception as exc:  # checked below: it must be a typed SagaError
            error = exc
    fault.enabled = False
    fired = fault.fired + fired_points() > 0
    label = f"{op} {source} {'persistent' if persistent else 'one-shot'} k={k}: {error!r}"
    assert error is None or isinstance(error, SagaError), f"raw exception: {label}"
    assert fired or error is None, f"failed with no fault: {label}"
    if op.startswith(("update", "delete")):  # before-images come from the log
        reads = proxy.names[: next(_first_write(proxy.names), len(proxy.names))]
        assert "get" not in reads, f"read Chroma before writing: {label}: {proxy.names}"

    left = {s.saga_id: s.state for s in stores.runner.in_flight()}
    if isinstance(error, DataIntegrityError):
        assert not left, f"DataIntegrityError left sagas in flight: {label}"
    if isinstance(error, CompensationError):
        assert error.saga_id in left, label

    stores.restart()
    report = stores.runner.recover()
    assert report.failed == 0, (label, report.errors)
    assert set(report.resumed_ids) | set(report.compensated_ids) == set(left), label
    assert stores.runner.in_flight() == [], label
    assert stores.runner.reconcile().clean, label

    applied = new_state(op, touched)
    old = {k: before.get(k, (None, None)) for k in touched}
    after = stores.observed()
    now = {k: after.get(k, (None, None)) for k in touched}
    assert now in (applied, old), f"half a write: {label}: {now}"
    # New: acknowledged, or resumed by recovery. Old: compensated (by the call itself or
    # by recovery), or refused before any saga began.
    resumed = any(state != COMPENSATING for state in left.values())
    expected = applied if error is None or resumed else old
    assert now == expected, f"{label}: expected {'new' if expected is applied else 'old'}"
    if now == old:  # compensated (or refused): every touched vector as it was, bit for bit
        exact = {v: c for v, c in stored_vectors(stores.runner).items() if _key(v) in touched}
        assert exact == exact_before, f"before-image not restored exactly: {label}"

    stores.model.update({k: v for k, v in now.items() if v != (None, None)})
    for key in touched:
        if now[key] == (None, None):
            stores.model.pop(key, None)
    assert after == stores.model, f"other rows changed: {label}"
    OUTCOMES[
        f"{type(error).__name__ if error else 'success'}"
        f"{' -> recovered ' + '/'.join(sorted(set(left.values()))) if left else ''}"
    ] += 1
    return fired


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("op", OPS)
def test_failing_the_kth_store_call_leaves_all_or_nothing(
    tmp_path: Path, op: str, source: str
) -> None:
    stores = Stores(tmp_path)
    OUTCOMES.clear()
    runs = {}
    try:
        for persistent in (False, True):
            for k in range(1, MAX_K + 1):
                if not one_run(stores, op, source, k, persistent=persistent):
                    break  # the write completed without reaching its k-th call
            else:
                pytest.fail(f"{op} {source}: still failing at k={MAX_K}")
            assert k > 1, f"{op} {source}: the fault never fired"
            runs[MODES[persistent]] = k
    finally:
        stores.runner.close()
    print(f"{op} {source}: runs {runs}; {dict(OUTCOMES)}")  # the counts, with -s or -rP
