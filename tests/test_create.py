"""A single create: the happy path, every way it can fail, and what each leaves behind.

Everything is read back from the real stores: the SQLite file with a fresh connection,
the embedded Chroma through the adapter.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import (
    CompensationError,
    DataIntegrityError,
    RecordExistsError,
    RetryPolicy,
    SagaConflictError,
    SagaRunner,
    SqliteOptions,
    SqliteStoreError,
    ValidationError,
    VectorStoreUnavailable,
    failpoints,
)
from tests._probe import (
    history,
    log_snapshot,
    payloads,
    run_worker,
    saga_row,
    saga_rows,
    sync_states,
)
from tests.conftest import rewired, rows, saga_state, vec, vector_ids

CREATED = [
    ("begin", None, "pending"),
    ("write_vectors", "pending", "vector_written"),
    ("commit_rows", "vector_written", "sqlite_committed"),
    ("finish", "sqlite_committed", "synced"),
]


def _create(runner: SagaRunner, key: int = 1, **row: Any) -> Any:
    return runner.create(
        "notes",
        {"id": key, "body": f"note {key}", **row},
        embedding=vec(key),
        document=f"document {key}",
        metadata={"lang": "en", "n": key},
    )


def _assert_left_nothing(db_path: Path, runner: SagaRunner, saga_id: str) -> None:
    """A failed create: no row, no vector, saga `failed`, no payload left."""
    assert rows(db_path) == {}
    assert vector_ids(runner) == set()
    assert saga_state(db_path, saga_id) == "failed"
    assert payloads(db_path) == {}
    assert sync_states(db_path)["notes:1"]["sync_status"] == "failed"


# -- the happy path ---------------------------------------------------------------------


def test_create_stores_the_row_linked_to_its_vector(runner: SagaRunner, db_path: Path) -> None:
    result = _create(runner)

    assert result.state == "synced"
    assert result.vector_ids == ("notes:1",)
    assert rows(db_path) == {1: {"id": 1, "body": "note 1", "score": None, "vector_id": "notes:1"}}
    stored = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)
    assert set(stored) == {"notes:1"}
    vector = stored["notes:1"]
    assert vector.embedding == pytest.approx(vec(1))
    assert vector.document == "document 1"
    # Exactly the caller's metadata: the link is the id, the writer is in the log.
    assert dict(vector.metadata or {}) == {"lang": "en", "n": 1}
    assert sync_states(db_path)["notes:1"]["saga_id"] == result.saga_id


def test_create_leaves_a_complete_saga_log(runner: SagaRunner, db_path: Path) -> None:
    result = _create(runner)

    saga = saga_row(db_path, result.saga_id)
    assert saga is not None
    assert saga["state"] == "synced"
    assert saga["definition"] == "create"
    assert saga["lease_owner"] is None  # released
    assert saga["last_error"] is None
    assert history(db_path, result.saga_id) == CREATED
    assert payloads(db_path) == {}


def test_create_records_the_synced_vector_with_a_content_hash(
    runner: SagaRunner, db_path: Path
) -> None:
    result = _create(runner)
    runner.create("notes", {"id": 2, "body": "two"}, embedding=vec(2), document="other")

    state = sync_states(db_path)
    assert set(state) == {"notes:1", "notes:2"}
    entry = state["notes:1"]
    assert entry["sync_status"] == "synced"
    assert entry["saga_id"] == result.saga_id
    assert entry["sqlite_table"] == "notes"
    assert entry["sqlite_record_id"] == 1
    assert entry["operation"] == "create"
    assert entry["last_synced_at"] is not None
    assert re.fullmatch(r"[0-9a-f]{16,64}", entry["content_hash"])
    # The hash follows the content: another document, another hash.
    assert state["notes:2"]["content_hash"] != entry["content_hash"]


# -- Chroma fails -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "point",
    ["chroma.upsert", "chroma.upsert.after"],
    ids=["before-applied", "after-applied"],
)
def test_chroma_failure_is_compensated_and_reported(
    runner: SagaRunner, db_path: Path, point: str
) -> None:
    with (
        failpoints.armed(f"{point}=raise:chroma-unavailable"),
        pytest.raises(DataIntegrityError) as caught,
    ):
        _create(runner)

    error = caught.value
    assert isinstance(error.saga_id, str)
    assert isinstance(error.cause, VectorStoreUnavailable)
    assert error.cause.saga_id == error.saga_id
    assert [s["saga_id"] for s in saga_rows(db_path)] == [error.saga_id]
    _assert_left_nothing(db_path, runner, error.saga_id)
    assert history(db_path, error.saga_id) == [
        ("begin", None, "pending"),
        ("compensate", "pending", "compensating"),
        ("compensated", "compensating", "failed"),
    ]


# -- SQLite fails at the pivot ----------------------------------------------------------

PIVOT_FAILED = [
    ("begin", None, "pending"),
    ("write_vectors", "pending", "vector_written"),
    ("compensate", "vector_written", "compensating"),
    ("compensated", "compensating", "failed"),
]


@pytest.mark.parametrize(
    ("row", "message"),
    [({"score": -1.0}, "CHECK constraint failed")],
    ids=["check"],
)
def test_constraint_violation_at_the_pivot_deletes_the_vector(
    runner: SagaRunner, db_path: Path, row: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataIntegrityError) as caught:
        _create(runner, **row)

    error = caught.value
    assert isinstance(error.cause, SqliteStoreError)
    assert message in str(error.cause)
    _assert_left_nothing(db_path, runner, error.saga_id)
    assert history(db_path, error.saga_id) == PIVOT_FAILED


def test_a_not_null_column_left_empty_is_refused_before_any_write(
    runner: SagaRunner, db_path: Path
) -> None:
    # PRAGMA table_info says `body` is NOT NULL without a default: no need to find out
    # at the pivot, after the vector was written.
    before = log_snapshot(db_path)
    with pytest.raises(ValidationError) as caught:
        _create(runner, body=None)
    assert caught.value.field == "row.body"
    assert log_snapshot(db_path) == before
    assert vector_ids(runner) == set()


def test_disk_io_error_at_the_pivot_deletes_the_vector(runner: SagaRunner, db_path: Path) -> None:
    with (
        failpoints.armed("sqlite.commit_rows=raise:sqlite-ioerror"),
        pytest.raises(DataIntegrityError) as caught,
    ):
        _create(runner)

    error = caught.value
    assert isinstance(error.cause, SqliteStoreError)
    assert "disk I/O error" in str(error.cause)
    _assert_left_nothing(db_path, runner, error.saga_id)
    assert history(db_path, error.saga_id) == PIVOT_FAILED


class _WriteLockHolder:
    """Another real connection that holds SQLite's write lock for ``hold`` seconds."""

    def __init__(self, db_path: Path, hold: float) -> None:
        self.conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.hold = hold
        self.released_at: float | None = None
        self.timer: threading.Timer | None = None

    def take(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.timer = threading.Timer(self.hold, self.release)
        self.timer.start()

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.released_at = time.monotonic()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.join()
        self.conn.close()


class _LockAfterUpsert:
    """The runner's real vector store; once a vector is upserted, ``holder`` takes the
    write lock, so the very next transaction (the pivot) finds the database locked."""

    def __init__(self, vectors: Any, holder: _WriteLockHolder) -> None:
        self._vectors = vectors
        self._holder = holder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vectors, name)

    def upsert(self, collection: str, records: Any) -> None:
        self._vectors.upsert(collection, records)
        self._holder.take()


@pytest.fixture
def lock_holder(db_path: Path) -> Iterator[_WriteLockHolder]:
    holder = _WriteLockHolder(db_path, hold=1.0)
    yield holder
    holder.close()


def test_database_locked_at_the_pivot_deletes_the_vector(
    db_path: Path, chroma_path: Path, lock_holder: _WriteLockHolder
) -> None:
    options = SqliteOptions(busy_timeout=0.2, settle_timeout=10)
    with SagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), sqlite=options
    ) as runner:
        runner.track("notes")
        locked = rewired(runner, vectors=_LockAfterUpsert(runner.stores.vectors, lock_holder))
        with pytest.raises(DataIntegrityError) as caught:
            _create(locked)
        error = caught.value
        # The lock was really held across the pivot, and the compensation waited for it.
        assert lock_holder.released_at is not None
        assert isinstance(error.cause, SqliteStoreError)
        assert "database is locked" in str(error.cause)
        _assert_left_nothing(db_path, runner, error.saga_id)
    assert history(db_path, error.saga_id) == PIVOT_FAILED


# -- compensation fails -----------------------------------------------------------------


def test_failed_compensation_leaves_the_saga_compensating_for_recovery(
    runner: SagaRunner, db_path: Path
) -> None:
    with (
        failpoints.armed("chroma.upsert.after=raise;chroma.delete=raise"),
        pytest.raises(CompensationError) as caught,
    ):
        _create(runner)

    error = caught.value
    saga = saga_row(db_path, error.saga_id)
    assert saga is not None
    assert saga["state"] == "compensating"
    assert "chroma.delete" in saga["last_error"]
    assert history(db_path, error.saga_id) == [
        ("begin", None, "pending"),
        ("compensate", "pending", "compensating"),
    ]
    # What recovery needs and will undo is still there: the payload and the vector.
    assert set(payloads(db_path)) == {error.saga_id}
    assert vector_ids(runner) == {"notes:1"}
    assert rows(db_path) == {}
    assert sync_states(db_path)["notes:1"]["sync_status"] == "compensating"


# -- preconditions ----------------------------------------------------------------------


def test_create_on_an_existing_key_is_refused_before_chroma_is_touched(
    runner: SagaRunner, db_path: Path
) -> None:
    _create(runner)
    vector_before = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)
    log_before = log_snapshot(db_path)

    # Any Chroma call would now fail loudly (and its compensation would delete notes:1).
    armed = "chroma.upsert=raise;chroma.delete=raise;chroma.get=raise"
    with failpoints.armed(armed), pytest.raises(RecordExistsError) as caught:
        runner.create("notes", {"id": 1, "body": "other"}, embedding=vec(9), document="other")

    error = caught.value
    assert isinstance(error, ValidationError)
    assert error.field in {"id", "row.id"}  # the key column, however it is prefixed
    assert runner.stores.vectors.get("notes", ["notes:1"], embeddings=True) == vector_before
    # The pending transaction was rolled back: no saga, history, payload or sync change.
    assert log_snapshot(db_path) == log_before


def test_create_on_a_key_with_a_saga_in_flight_is_a_conflict(
    db_path: Path, chroma_path: Path
) -> None:
    died = run_worker(db_path, chroma_path, 7, "after:pending=exit")
    assert died.returncode == 86, died.stderr
    [holder] = saga_rows(db_path)
    assert holder["state"] == "pending"

    with SagaRunner.open(db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled()) as runner:
        runner.track("notes")
        before = log_snapshot(db_path)
        with pytest.raises(SagaConflictError) as caught:
            _create(runner, key=7)
        assert log_snapshot(db_path) == before
        assert vector_ids(runner) == set()
        # The conflict is per key: another key goes through.
        assert _create(runner, key=8).state == "synced"

    error = caught.value
    assert error.key == 7
    assert error.holder == holder["saga_id"]
    assert holder["saga_id"] in str(error)
    assert saga_state(db_path, holder["saga_id"]) == "pending"


# -- SQLite locked before the saga begins ----------------------------------------------


@pytest.fixture
def locked_runner(db_path: Path, chroma_path: Path) -> Iterator[SagaRunner]:
    """A runner with a short busy timeout, while another connection holds the write lock."""
    options = SqliteOptions(busy_timeout=0.2, settle_timeout=0.5)
    with SagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), sqlite=options
    ) as runner:
        runner.track("notes")
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield runner
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_a_create_that_cannot_record_its_intent_writes_nothing(
    locked_runner: SagaRunner, db_path: Path
) -> None:
    before = log_snapshot(db_path)

    with pytest.raises(SqliteStoreError) as caught:
        _create(locked_runner)

    assert caught.value.transient
    assert log_snapshot(db_path) == before
    assert vector_ids(locked_runner) == set()


def test_a_create_that_cannot_record_its_intent_names_no_phantom_saga(
    locked_runner: SagaRunner, db_path: Path
) -> None:
    with pytest.raises(SqliteStoreError) as caught:
        _create(locked_runner)

    assert caught.value.saga_id is None or saga_row(db_path, caught.value.saga_id) is not None


# -- a failed first write ---------------------------------------------------------------


def test_a_failed_first_create_records_no_dimension_but_chroma_keeps_one(
    runner: SagaRunner, db_path: Path
) -> None:
    with pytest.raises(DataIntegrityError):  # the CHECK (score >= 0) fails at the pivot
        runner.create("notes", {"id": 1, "body": "x", "score": -1}, embedding=vec(1, dim=3))

    tracked = log_snapshot(db_path)["saga_tracked_tables"]
    assert [t["dimension"] for t in tracked] == [None]
    # Chroma fixed the collection's dimension at the first upsert, even though the
    # vector was deleted again: a 4-dimension write is refused there, loudly and clean.
    with pytest.raises(DataIntegrityError) as caught:
        runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
    assert "dimension" in str(caught.value)
    _assert_left_nothing(db_path, runner, caught.value.saga_id)
    assert runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1, dim=3)).state == "synced"
    assert [t["dimension"] for t in log_snapshot(db_path)["saga_tracked_tables"]] == [3]


# -- two callers, one key ---------------------------------------------------------------


def test_concurrent_creates_of_one_key_leave_exactly_one_winner(
    runner: SagaRunner, db_path: Path
) -> None:
    contenders = 4
    barrier = threading.Barrier(contenders)
    outcomes: list[object] = []

    def contend(i: int) -> None:
        barrier.wait()
        body = f"b{i}"  # distinct content per contender: a loser's vector would show
        try:
            outcomes.append(
                runner.create(
                    "notes",
                    {"id": 1, "body": body},
                    embedding=vec(i),
                    document=body,
                    metadata={"by": body},
                )
            )
        except (SagaConflictError, RecordExistsError) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(outcomes) == contenders
    assert len(winners) == 1
    [row] = rows(db_path).values()
    # The winner's vector, whole, under the winner's row; the log names the winner.
    stored = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
    body = row["body"]
    assert (stored.document, stored.metadata) == (body, {"by": body})
    assert stored.embedding == pytest.approx(vec(int(str(body)[1:])))
    assert sync_states(db_path)["notes:1"]["saga_id"] == winners[0].saga_id  # type: ignore[attr-defined]
    assert [s["state"] for s in saga_rows(db_path)] == ["synced"]
    assert row["vector_id"] == "notes:1"
