"""Guards that nothing else in the suite exercises: each test fails if its guard goes.

- reconcile's re-check of orphans under SQLite's write lock, before it deletes them;
- recovery's exact comparison of a stored vector's metadata before it skips a write;
- recovery never seizing a saga another thread of the same runner is driving;
- the lease owner in the compare-and-set of every transition;
- a killed child not yet reaped (a zombie) counting as dead;
- ``synchronous=FULL`` and WAL on the library's own connections, by default.

Every interleaving is forced, not hoped for: a wrapper around a real store holds a
thread at a precise call until the test lets it go, and time is frozen with freezegun.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from freezegun import freeze_time

from saga import (
    Item,
    LeaseLostError,
    LeasePolicy,
    RetryPolicy,
    SagaResult,
    SagaRunner,
    SqliteOptions,
    VectorRecord,
)
from saga._clock import parse_stamp
from steps import DEFINITIONS
from tests._probe import (
    finish_worker,
    history,
    saga_row,
    start_worker,
    sync_states,
    worker_embedding,
)
from tests.conftest import rewired, rows, vec, vector_ids

T0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
TTL = 30.0  # seconds: the default lease
WAIT = 30.0  # seconds a test waits for a thread or a child before it gives up
EVENTS = ["begin", "write_vectors", "commit_rows", "finish"]  # a create, each state once


class Call(threading.Thread):
    """Run ``action`` on a thread; keep what it returned or raised."""

    def __init__(self, action: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.action = action
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.action()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the call never returned"
        return self.error if self.error is not None else self.result


class Held:
    """The real vector store, holding the first call of ``method`` until ``release()``:
    after the call for ``after=True`` (the write is applied, its move not recorded),
    before it otherwise. ``reached`` is set once the caller is held."""

    def __init__(self, inner: Any, method: str, *, after: bool) -> None:
        self.inner = inner
        self.method = method
        self.after = after
        self.reached = threading.Event()
        self._released = threading.Event()
        self._spent = False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self.method or self._spent:
            return real

        def held(*args: Any, **kwargs: Any) -> Any:
            self._spent = True
            if not self.after:
                self._hold()
            answer = real(*args, **kwargs)
            if self.after:
                self._hold()
            return answer

        return held

    def _hold(self) -> None:
        self.reached.set()
        assert self._released.wait(WAIT), "the test never released the held call"

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT), f"no call of {self.method} was made"

    def release(self) -> None:
        self._released.set()


class CreatesAfterScan:
    """The real vector store; once reconcile has read its last page (the vector pass is
    over: every orphan has been listed), ``create()`` runs, before anything is fixed."""

    def __init__(self, inner: Any, create: Callable[[], None]) -> None:
        self.inner = inner
        self._create: Callable[[], None] | None = create

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def iter_records(self, collection: str, page_size: int) -> Iterator[list[VectorRecord]]:
        yield from self.inner.iter_records(collection, page_size)
        create, self._create = self._create, None
        if create is not None:
            create()


def _create(runner: SagaRunner, key: int, body: str = "fresh") -> SagaResult:
    return runner.create(
        "notes", {"id": key, "body": body}, embedding=vec(key), document=body, metadata={"v": 1}
    )


def _open(db_path: Path, chroma_path: Path) -> SagaRunner:
    runner = SagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), lease=LeasePolicy(ttl=TTL)
    )
    runner.track("notes")
    return runner


def _events(db_path: Path, saga_id: str) -> list[str]:
    return [event for event, _, _ in history(db_path, saga_id)]


# -- 1. reconcile --fix re-checks its orphans under the write lock ------------------------


def test_reconcile_fix_keeps_a_vector_whose_create_committed_after_the_scan(
    runner: SagaRunner, db_path: Path
) -> None:
    orphan = VectorRecord(id="notes:5", embedding=tuple(vec(9)), document="orphan", metadata=None)
    runner.stores.vectors.upsert("notes", [orphan])
    created: list[SagaResult] = []

    def create_five() -> None:
        created.append(_create(runner, 5))

    scanning = rewired(runner, vectors=CreatesAfterScan(runner.stores.vectors, create_five))
    report = scanning.reconcile(fix=True)

    [result] = created
    assert result.state == "synced"
    stored = runner.stores.vectors.get("notes", ["notes:5"], embeddings=True)
    assert "notes:5" in stored, "reconcile --fix deleted the vector of a committed create"
    assert report.orphan_vectors == ("notes:5",)  # an orphan when the scan saw it...
    assert "notes:5" not in report.fixed  # ...but a row's vector when the fix came
    # The create's vector, not the orphan's (other document, embedding and metadata).
    kept = stored["notes:5"]
    assert (kept.document, kept.metadata) == ("fresh", {"v": 1})
    assert kept.embedding == pytest.approx(vec(5))
    assert sync_states(db_path)["notes:5"]["saga_id"] == result.saga_id
    assert rows(db_path)[5]["vector_id"] == "notes:5"
    assert runner.reconcile().clean


# -- 2. recovery compares a stored vector's metadata before it skips the write -----------


def test_recovery_rewrites_a_vector_stored_with_stale_metadata(
    runner: SagaRunner, db_path: Path
) -> None:
    # Exact in float32, so the stored embedding equals the saga's: only metadata differ.
    item = Item(
        key=5,
        row={"body": "five"},
        embedding=(0.5, 0.25, 0.125, 1.0),
        document="five",
        metadata={"lang": "en", "n": 5},
    )
    saga, ctx = runner._services.engine.begin(
        DEFINITIONS["create"], runner.spec("notes"), "create", [item]
    )
    wanted = ctx.new_vector(item)
    stale = attrs.evolve(wanted, metadata={**(wanted.metadata or {}), "lang": "fr"})
    runner.stores.vectors.upsert("notes", [stale])  # the writer died before recording it
    runner.stores.log.release(saga)

    report = runner.recover()

    assert report.resumed_ids == (saga.saga_id,)
    stored = runner.stores.vectors.get("notes", ["notes:5"], embeddings=True)["notes:5"]
    assert (stored.embedding, stored.document) == (wanted.embedding, wanted.document)
    assert dict(stored.metadata or {}) == dict(wanted.metadata or {})
    assert rows(db_path)[5]["body"] == "five"
    assert runner.reconcile().clean


# -- 3. recovery never seizes a saga another thread of this runner is driving ------------


def test_recovery_skips_a_saga_another_thread_of_this_runner_drives(
    db_path: Path, chroma_path: Path
) -> None:
    """The same runner's saga is skipped while its lease is live (its pid is ours) and
    also once the lease ran out while the thread is stalled: only the owner's name says
    that the saga is still driven."""
    with _open(db_path, chroma_path) as runner, freeze_time(T0) as clock:
        held = Held(runner.stores.vectors, "upsert", after=True)
        call = Call(lambda: _create(rewired(runner, vectors=held), 1))
        call.start()
        held.wait_reached()
        [saga] = runner.in_flight()
        while_live = runner.recover(older_than=dt.timedelta(0))
        clock.move_to(T0 + dt.timedelta(seconds=TTL + 1))
        while_expired = runner.recover(older_than=dt.timedelta(0))
        held.release()
        done = call.outcome()

        assert while_live.skipped_ids == (saga.saga_id,)
        assert while_expired.skipped_ids == (saga.saga_id,)
        assert (while_expired.resumed, while_expired.compensated) == (0, 0)
        assert isinstance(done, SagaResult), done
        assert (done.saga_id, done.state) == (saga.saga_id, "synced")
        assert _events(db_path, saga.saga_id) == EVENTS
        assert rows(db_path)[1]["vector_id"] == "notes:1"
        assert runner.reconcile().clean


# -- 4. a transition is a compare-and-set on the lease owner too -------------------------


def test_a_stale_runner_cannot_move_a_saga_recovery_claimed_but_not_yet_moved(
    db_path: Path, chroma_path: Path
) -> None:
    """The saga is still in the state the stale runner knows (``pending``): only the
    owner in the compare-and-set stands between that runner and a move."""
    with (
        _open(db_path, chroma_path) as stale,
        _open(db_path, chroma_path) as rescuer,
        freeze_time(T0) as clock,
    ):
        stalled = Held(stale.stores.vectors, "upsert", after=True)
        call = Call(lambda: _create(rewired(stale, vectors=stalled), 1))
        call.start()
        stalled.wait_reached()  # its vector is written, its move not yet recorded
        [saga] = stale.in_flight()
        clock.move_to(T0 + dt.timedelta(seconds=TTL + 1))
        claimed = Held(rescuer.stores.vectors, "get", after=False)
        recovery = Call(lambda: rewired(rescuer, vectors=claimed).recover())
        recovery.start()
        claimed.wait_reached()  # recovery holds the claim and has moved nothing yet
        taken = saga_row(db_path, saga.saga_id)
        assert taken is not None
        assert (taken["state"], taken["lease_owner"]) == ("pending", rescuer.stores.log.owner)

        stalled.release()
        lost = call.outcome()
        assert isinstance(lost, LeaseLostError), lost
        assert lost.saga_id == saga.saga_id
        assert _events(db_path, saga.saga_id) == ["begin"]  # the stale runner moved nothing
        assert rows(db_path) == {}

        claimed.release()
        report = recovery.outcome()
        assert not isinstance(report, BaseException), report
        assert report.resumed_ids == (saga.saga_id,)
        assert _events(db_path, saga.saga_id) == EVENTS
        assert rows(db_path)[1]["body"] == "fresh"
        vector = stale.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
        assert (vector.document, vector.metadata) == ("fresh", {"v": 1})
        assert vector.embedding == pytest.approx(vec(1))
        assert sync_states(db_path)["notes:1"]["saga_id"] == saga.saga_id
        assert stale.reconcile().clean


# -- 5. a killed child its parent has not reaped yet is dead -----------------------------


def _process_state(pid: int) -> str:
    """The state letter in ``/proc/PID/stat`` (``Z`` for a zombie)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


def _wait_for_zombie(pid: int) -> None:
    """Wait until ``pid`` has died and waits to be reaped, without reaping it (no
    ``wait()``, no ``poll()``: both would). The leader of a SIGKILLed process shows
    ``Z`` while its other threads may still be exiting, holding its files (and so the
    Chroma folder's flock): wait until the leader is all that is left."""
    deadline = time.monotonic() + WAIT * 2  # the child imports chromadb first
    while _process_state(pid) != "Z" or os.listdir(f"/proc/{pid}/task") != [str(pid)]:
        assert time.monotonic() < deadline, f"child {pid} never died"
        time.sleep(0.05)


def test_recovery_takes_at_once_a_saga_of_a_killed_child_not_yet_reaped(
    db_path: Path, chroma_path: Path
) -> None:
    child = start_worker(db_path, chroma_path, 7, "after:write_vectors=kill")
    try:
        _wait_for_zombie(child.pid)
        with SagaRunner.open(db_path, chroma_path=chroma_path) as runner:
            runner.track("notes")
            [saga] = runner.in_flight()
            assert saga.lease_owner is not None
            assert saga.lease_owner.split(":")[1] == str(child.pid)
            assert saga.lease_expires_at is not None
            assert parse_stamp(saga.lease_expires_at) > dt.datetime.now(dt.UTC)  # live lease
            assert _process_state(child.pid) == "Z"  # still unreaped when recovery looks

            report = runner.recover()

            assert report.resumed_ids == (saga.saga_id,), report
            assert rows(db_path)[7]["vector_id"] == "notes:7"
            assert vector_ids(runner) == {"notes:7"}
            stored = runner.stores.vectors.get("notes", ["notes:7"], embeddings=True)
            assert stored["notes:7"].embedding == pytest.approx(worker_embedding(7))
            assert stored["notes:7"].document == "document 7"
            assert runner.reconcile().clean
    finally:
        done = finish_worker(child)  # reaps it
    assert done.returncode == -signal.SIGKILL, done.stderr


# -- 6. acknowledged means durable: FULL and WAL by default ------------------------------


def _pragmas(runner: SagaRunner) -> tuple[int, str]:
    """``synchronous`` and ``journal_mode`` of this thread's library connection."""
    conn = runner.stores.log.db.connection()
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return int(synchronous), str(journal_mode).lower()


def test_library_connections_are_full_and_wal_by_default(db_path: Path, chroma_path: Path) -> None:
    with SagaRunner.open(db_path, chroma_path=chroma_path) as runner:
        runner.track("notes")
        _create(runner, 1)  # this thread's connection, as a write used it
        in_this_thread = _pragmas(runner)

        def write_then_look() -> tuple[int, str]:
            _create(runner, 2)
            return _pragmas(runner)

        in_another_thread = Call(write_then_look)
        in_another_thread.start()
        seen = in_another_thread.outcome()

    full = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
    assert in_this_thread == (full, "wal")
    assert seen == (full, "wal")
    assert SqliteOptions().synchronous == "FULL"
