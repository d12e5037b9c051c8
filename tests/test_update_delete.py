"""Single and batch updates and deletes: the happy paths, the preconditions, and the
before-images put back when either store fails at any step.

Everything is read back from the real stores: the SQLite file with a fresh connection,
the embedded Chroma through the adapter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import (
    DataIntegrityError,
    RecordNotFoundError,
    SagaConflictError,
    SagaRunner,
    SqliteStoreError,
    ValidationError,
    VectorStoreUnavailable,
    failpoints,
)
from tests._probe import history, log_snapshot, payloads, saga_row, saga_rows, sync_states
from tests.conftest import rewired, rows, saga_state, vec, vector_ids

SAGA_STEPS = [
    ("begin", None, "pending"),
    ("write_vectors", "pending", "vector_written"),
    ("commit_rows", "vector_written", "sqlite_committed"),
    ("finish", "sqlite_committed", "synced"),
]
KEYS = (1, 2, 3)


def _create(runner: SagaRunner, key: int) -> str:
    return runner.create(
        "notes",
        {"id": key, "body": f"note {key}", "score": float(key)},
        embedding=vec(key),
        document=f"document {key}",
        metadata={"lang": "en", "n": key},
    ).saga_id


def _names_the_key(field: str) -> bool:
    """The key column or argument, however it is prefixed (``id``, ``row.id``, ``key``)."""
    return field in {"id", "row.id", "key"}


def _vector(runner: SagaRunner, key: int) -> Any:
    return runner.stores.vectors.get("notes", [f"notes:{key}"], embeddings=True).get(f"notes:{key}")


def _snapshot(runner: SagaRunner, db_path: Path) -> dict[str, Any]:
    """The rows and the vectors (with embeddings) of both stores."""
    ids = sorted(vector_ids(runner))
    return {
        "rows": rows(db_path),
        "vectors": runner.stores.vectors.get("notes", ids, embeddings=True),
    }


def _assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Rows equal; vectors equal, embeddings within float32 tolerance."""
    assert after["rows"] == before["rows"]
    assert set(after["vectors"]) == set(before["vectors"])
    for vector_id, old in before["vectors"].items():
        new = after["vectors"][vector_id]
        assert new.embedding == pytest.approx(old.embedding, rel=1e-6), vector_id
        assert new.document == old.document, vector_id
        assert dict(new.metadata or {}) == dict(old.metadata or {}), vector_id


# -- update: the happy path -------------------------------------------------------------


def test_update_writes_the_new_row_and_vector(runner: SagaRunner, db_path: Path) -> None:
    created = _create(runner, 1)
    hash_before = sync_states(db_path)["notes:1"]["content_hash"]

    result = runner.update(
        "notes",
        1,
        {"body": "changed", "score": 9.5},
        embedding=vec(5),
        document="new document",
        metadata={"lang": "fr"},
    )

    assert result.state == "synced"
    assert result.vector_ids == ("notes:1",)
    assert rows(db_path) == {1: {"id": 1, "body": "changed", "score": 9.5, "vector_id": "notes:1"}}
    vector = _vector(runner, 1)
    assert vector.embedding == pytest.approx(vec(5))
    assert vector.document == "new document"
    # The caller's metadata, replaced and not merged, and nothing of the library's.
    assert dict(vector.metadata) == {"lang": "fr"}
    saga = saga_row(db_path, result.saga_id)
    assert saga is not None
    assert (saga["definition"], saga["state"], saga["lease_owner"]) == ("update", "synced", None)
    assert history(db_path, result.saga_id) == SAGA_STEPS
    assert history(db_path, created) == SAGA_STEPS
    assert payloads(db_path) == {}
    state = sync_states(db_path)["notes:1"]
    assert (state["saga_id"], state["operation"], state["sync_status"]) == (
        result.saga_id,
        "update",
        "synced",
    )
    assert state["content_hash"] != hash_before


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"embedding": vec(7)},
        {"document": "only the document"},
        {"metadata": {"lang": "de"}},
    ],
    ids=["row-only", "embedding-only", "document-only", "metadata-only"],
)
def test_update_keeps_the_vector_fields_it_omits(
    runner: SagaRunner, db_path: Path, given: dict[str, Any]
) -> None:
    _create(runner, 1)

    result = runner.update("notes", 1, {"body": "changed"}, **given)

    vector = _vector(runner, 1)
    assert vector.embedding == pytest.approx(given.get("embedding", vec(1)))
    assert vector.document == given.get("document", "document 1")
    assert dict(vector.metadata) == given.get("metadata", {"lang": "en", "n": 1})
    # Kept fields are re-written under the new saga: the log names the update.
    assert sync_states(db_path)["notes:1"]["saga_id"] == result.saga_id
    assert rows(db_path)[1]["body"] == "changed"
    # What was synced is what Chroma holds: reconcile finds no drift.
    assert runner.reconcile().clean


def test_update_without_row_changes_rewrites_only_the_vector(
    runner: SagaRunner, db_path: Path
) -> None:
    _create(runner, 1)
    row_before = rows(db_path)

    runner.update("notes", 1, embedding=vec(3))

    assert rows(db_path) == row_before
    assert _vector(runner, 1).embedding == pytest.approx(vec(3))


# -- delete: the happy path -------------------------------------------------------------


def test_delete_removes_both_sides_and_keeps_the_history(runner: SagaRunner, db_path: Path) -> None:
    created = _create(runner, 1)
    _create(runner, 2)

    result = runner.delete("notes", 1)

    assert result.state == "synced"
    assert result.vector_ids == ("notes:1",)
    assert set(rows(db_path)) == {2}
    assert vector_ids(runner) == {"notes:2"}
    # The key's sync row is gone; the other key's is untouched.
    assert set(sync_states(db_path)) == {"notes:2"}
    saga = saga_row(db_path, result.saga_id)
    assert saga is not None
    assert (saga["definition"], saga["state"], saga["lease_owner"]) == ("delete", "synced", None)
    assert history(db_path, result.saga_id) == SAGA_STEPS
    assert history(db_path, created) == SAGA_STEPS
    assert payloads(db_path) == {}
    assert runner.reconcile().clean


def test_a_deleted_key_can_be_created_again(runner: SagaRunner, db_path: Path) -> None:
    _create(runner, 1)
    runner.delete("notes", 1)

    again = runner.create("notes", {"id": 1, "body": "reborn"}, embedding=vec(4))

    assert rows(db_path)[1]["body"] == "reborn"
    # The new vector, nothing of the deleted one (its document and metadata are gone).
    vector = _vector(runner, 1)
    assert vector.embedding == pytest.approx(vec(4))
    assert (vector.document, dict(vector.metadata or {})) == (None, {})
    state = sync_states(db_path)["notes:1"]
    assert (state["saga_id"], state["operation"]) == (again.saga_id, "create")


# -- preconditions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda r: r.update("notes", 99, {"body": "x"}, embedding=vec(9)),
        lambda r: r.delete("notes", 99),
        lambda r: r.update_many(
            "notes", [{"key": 1, "changes": {"body": "x"}}, {"key": 99, "embedding": vec(9)}]
        ),
        lambda r: r.delete_many("notes", [1, 99]),
    ],
    ids=["update", "delete", "update_many", "delete_many"],
)
def test_a_missing_key_is_refused_before_chroma_is_written(
    runner: SagaRunner, db_path: Path, write: Any
) -> None:
    _create(runner, 1)
    before = _snapshot(runner, db_path)
    log_before = log_snapshot(db_path)

    # Any Chroma write would fail loudly, and become a DataIntegrityError.
    with (
        failpoints.armed("chroma.upsert=raise;chroma.delete=raise"),
        pytest.raises(RecordNotFoundError) as caught,
    ):
        write(runner)

    assert isinstance(caught.value, ValidationError)
    assert _names_the_key(caught.value.field)
    assert "99" in str(caught.value)
    assert caught.value.index in (None, 1)
    assert log_snapshot(db_path) == log_before  # the pending transaction rolled back
    _assert_same_state(before, _snapshot(runner, db_path))


def test_an_update_of_a_missing_key_without_embedding_names_the_key(
    runner: SagaRunner,
) -> None:
    with pytest.raises(RecordNotFoundError) as caught:
        runner.update("notes", 99, {"body": "x"})

    assert _names_the_key(caught.value.field)
    assert "99" in str(caught.value)


@pytest.mark.parametrize(
    "write",
    [
        lambda r: r.update("notes", 99, {"body": "x"}, embedding=vec(9)),
        lambda r: r.delete("notes", 99),
    ],
    ids=["update", "delete"],
)
def test_a_missing_key_is_refused_without_reading_chroma(runner: SagaRunner, write: Any) -> None:
    since = failpoints.hits("chroma.get")
    with (
        failpoints.armed("chroma.get=raise;chroma.upsert=raise;chroma.delete=raise"),
        pytest.raises(RecordNotFoundError),
    ):
        write(runner)
    assert failpoints.hits("chroma.get") == since


# -- before-images put back -------------------------------------------------------------

UPDATE_FAULTS = {
    "before-vector-step": ("before:write_vectors=raise", {}),
    "chroma-refused": ("chroma.upsert=raise:chroma-unavailable*1", {}),
    "chroma-applied-then-failed": ("chroma.upsert.after=raise:chroma-unavailable*1", {}),
    "after-vector-written": ("before:commit_rows=raise", {}),
    "sqlite-ioerror": ("sqlite.commit_rows=raise:sqlite-ioerror", {}),
    "check-constraint": ("", {"score": -1.0}),
    "after-rows-in-txn": ("during:commit_rows=raise", {}),
}
DELETE_FAULTS = {
    "before-vector-step": "before:write_vectors=raise",
    "chroma-refused": "chroma.delete=raise:chroma-unavailable*1",
    "chroma-applied-then-failed": "chroma.delete.after=raise:chroma-unavailable*1",
    "after-vector-written": "before:commit_rows=raise",
    "sqlite-ioerror": "sqlite.commit_rows=raise:sqlite-ioerror",
    "after-rows-in-txn": "during:commit_rows=raise",
}


def _update(runner: SagaRunner, batch: bool, changes: dict[str, Any]) -> Any:
    fields = {"embedding": vec(40), "document": "new", "metadata": {"lang": "xx"}}
    if not batch:
        return runner.update("notes", 2, {"body": "new", **changes}, **fields)
    return runner.update_many(
        "notes",
        [{"key": key, "changes": {"body": f"new {key}", **changes}, **fields} for key in KEYS],
    )


def _delete(runner: SagaRunner, batch: bool) -> Any:
    return runner.delete_many("notes", list(KEYS)) if batch else runner.delete("notes", 2)


def _update_fields(runner: SagaRunner, batch: bool, fields: dict[str, Any]) -> Any:
    if batch:
        return runner.update_many("notes", [{"key": k, **fields} for k in KEYS])
    return runner.update("notes", 1, **fields)


def _assert_failed_and_restored(
    runner: SagaRunner, db_path: Path, before: dict[str, Any], error: DataIntegrityError
) -> None:
    _assert_same_state(before, _snapshot(runner, db_path))
    assert saga_state(db_path, error.saga_id) == "failed"
    events = [event for event, _, _ in history(db_path, error.saga_id)]
    assert events[-2:] == ["compensate", "compensated"]
    assert "commit_rows" not in events
    assert payloads(db_path) == {}
    # The keys are free again, and nothing drifted from what was last synced.
    report = runner.reconcile()
    assert report.clean, report


@pytest.mark.parametrize("batch", [False, True], ids=["update", "update_many"])
@pytest.mark.parametrize("fault", list(UPDATE_FAULTS))
def test_a_failed_update_puts_both_before_images_back(
    runner: SagaRunner, db_path: Path, fault: str, batch: bool
) -> None:
    for key in KEYS:
        _create(runner, key)
    before = _snapshot(runner, db_path)
    spec, changes = UPDATE_FAULTS[fault]

    with failpoints.armed(spec), pytest.raises(DataIntegrityError) as caught:
        _update(runner, batch, changes)

    _assert_failed_and_restored(runner, db_path, before, caught.value)
    cause = caught.value.cause
    if "sqlite" in fault or "constraint" in fault:
        assert isinstance(cause, SqliteStoreError)
    elif "chroma" in fault:
        assert isinstance(cause, VectorStoreUnavailable)
    # A later update of the same keys goes through (no lease or conflict left behind).
    _update(runner, batch, {})
    assert rows(db_path)[2]["body"].startswith("new")


@pytest.mark.parametrize("batch", [False, True], ids=["delete", "delete_many"])
@pytest.mark.parametrize("fault", list(DELETE_FAULTS))
def test_a_failed_delete_puts_both_before_images_back(
    runner: SagaRunner, db_path: Path, fault: str, batch: bool
) -> None:
    for key in KEYS:
        _create(runner, key)
    before = _snapshot(runner, db_path)

    with failpoints.armed(DELETE_FAULTS[fault]), pytest.raises(DataIntegrityError) as caught:
        _delete(runner, batch)

    _assert_failed_and_restored(runner, db_path, before, caught.value)
    runner.delete("notes", 2)
    assert set(rows(db_path)) == {1, 3}
    assert vector_ids(runner) == {"notes:1", "notes:3"}


@pytest.mark.parametrize(
    "fault",
    ["chroma.upsert.after=raise:chroma-unavailable*1", "sqlite.commit_rows=raise:sqlite-ioerror"],
    ids=["chroma", "sqlite"],
)
@pytest.mark.parametrize("batch", [False, True], ids=["update", "update_many"])
def test_a_failed_update_that_adds_metadata_and_a_document_takes_them_back(
    runner: SagaRunner, db_path: Path, fault: str, batch: bool
) -> None:
    # Chroma's upsert merges metadata and keeps a stored document when given none: a
    # plain upsert of the before-image would leave the failed update's additions.
    for key in KEYS:
        runner.create("notes", {"id": key, "body": "b"}, embedding=vec(key), metadata={"a": 1})
    before = _snapshot(runner, db_path)
    assert before["vectors"]["notes:1"].document is None
    fields = {"document": "added", "metadata": {"a": 2, "extra": True}}

    with failpoints.armed(fault), pytest.raises(DataIntegrityError) as caught:
        _update_fields(runner, batch, fields)

    _assert_failed_and_restored(runner, db_path, before, caught.value)


def test_an_update_replaces_the_callers_metadata_and_keeps_no_stale_key(
    runner: SagaRunner, db_path: Path
) -> None:
    _create(runner, 1)  # metadata {"lang": "en", "n": 1}

    runner.update("notes", 1, metadata={"lang": "de"})
    runner.update("notes", 1, {"body": "again"})  # omitted: the stored metadata is kept

    assert dict(_vector(runner, 1).metadata) == {"lang": "de"}
    assert runner.reconcile().clean


# -- before-images read outside the write lock ------------------------------------------


def test_a_before_image_read_stale_by_the_time_of_pending_is_read_again(
    runner: SagaRunner, db_path: Path
) -> None:
    """Saga A reads key 2's vector, then stalls before `pending`; saga B updates key 2
    meanwhile. A must notice and read B's vector, so that its failed pivot puts B's
    vector back, not the one A first read (which would leave Chroma behind the row)."""
    _create(runner, 2)
    outcome: list[BaseException] = []

    def saga_a() -> None:
        try:  # score -1 breaks the table's CHECK at the pivot: A compensates
            runner.update("notes", 2, {"score": -1.0}, embedding=vec(50), document="A")
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    with failpoints.armed("after:preload=sleep:1.0*1"):
        since = failpoints.hits("after:preload")
        thread = threading.Thread(target=saga_a)
        thread.start()
        deadline = time.monotonic() + 10
        while failpoints.hits("after:preload") <= since:  # A has read, and stalls
            assert time.monotonic() < deadline, "saga A never read its before-image"
            time.sleep(0.01)
        runner.update("notes", 2, {"body": "B"}, embedding=vec(60), document="B")
        thread.join(20)

    [error] = outcome
    assert isinstance(error, DataIntegrityError), error
    stored = runner.stores.vectors.get("notes", ["notes:2"], embeddings=True)["notes:2"]
    assert stored.document == "B"
    assert stored.embedding == pytest.approx(vec(60))
    assert rows(db_path)[2]["body"] == "B"
    assert runner.reconcile().clean


def test_before_images_that_keep_changing_end_in_a_conflict(
    runner: SagaRunner, db_path: Path
) -> None:
    """Three reads, each made stale by another saga: the write is refused as a
    conflict, and nothing of it is recorded."""
    _create(runner, 2)
    changes = iter(range(3))
    real = runner.stores.log
    nested = []

    class MovingLog:
        """The real saga log; right after each read of the before-images (in the log,
        outside the write lock), another saga updates the same key."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @contextlib.contextmanager
        def reading(self) -> Iterator[Any]:
            with real.reading() as unit:
                yield unit
            if not nested:
                nested.append(True)
                runner.update("notes", 2, {"body": f"other {next(changes)}"})
                nested.pop()

    moving = rewired(runner, log=MovingLog())
    with pytest.raises(SagaConflictError) as caught:
        moving.update("notes", 2, {"body": "mine"}, document="mine")

    assert caught.value.key == 2
    assert "kept changing" in str(caught.value)
    assert rows(db_path)[2]["body"] == "other 2"
    assert [s["state"] for s in saga_rows(db_path)] == ["synced"] * 4  # none of "mine"
    assert runner.reconcile().clean
