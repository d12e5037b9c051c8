"""Batch sagas: create_many, update_many, delete_many.

One saga per batch, validated entirely before anything is written, and undone as a
whole. Chroma's request size limit is made small by wrapping the real store, so a
batch spans several sub-batches without thousands of records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from saga import (
    DataIntegrityError,
    RecordExistsError,
    RecordNotFoundError,
    SagaRunner,
    ValidationError,
    VectorRecord,
    VectorStoreUnavailable,
)
from tests._probe import history, log_snapshot, payloads, saga_rows, sync_states
from tests.conftest import rewired, rows, saga_state, vec, vector_ids

SAGA_STEPS = [
    ("begin", None, "pending"),
    ("write_vectors", "pending", "vector_written"),
    ("commit_rows", "vector_written", "sqlite_committed"),
    ("finish", "sqlite_committed", "synced"),
]


def _items(keys: Sequence[int], tag: str = "note") -> list[dict[str, Any]]:
    return [
        {
            "row": {"id": k, "body": f"{tag} {k}"},
            "embedding": vec(k),
            "document": f"{tag} document {k}",
            "metadata": {"n": k},
        }
        for k in keys
    ]


def _names_the_key(field: str) -> bool:
    """The key column or argument, however it is prefixed (``id``, ``row.id``, ``key``)."""
    return field in {"id", "row.id", "key"}


def _progress(db_path: Path, saga_id: str | None = None) -> list[list[int]]:
    """``saga_instances.progress`` of every saga (or one), read with a fresh connection."""
    conn = sqlite3.connect(db_path)
    try:
        sql = "SELECT progress FROM saga_instances"
        found = conn.execute(
            sql + (" WHERE saga_id = ?" if saga_id else ""), ((saga_id,) if saga_id else ())
        )
        return [__import__("json").loads(r[0]) for r in found]
    finally:
        conn.close()


def _everything(runner: SagaRunner, db_path: Path) -> dict[str, Any]:
    ids = sorted(vector_ids(runner))
    return {
        "rows": rows(db_path),
        "vectors": runner.stores.vectors.get("notes", ids, embeddings=True),
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["rows"] == before["rows"]
    assert set(after["vectors"]) == set(before["vectors"])
    for vector_id, old in before["vectors"].items():
        new = after["vectors"][vector_id]
        assert new.embedding == pytest.approx(old.embedding, rel=1e-6), vector_id
        assert (new.document, dict(new.metadata or {})) == (
            old.document,
            dict(old.metadata or {}),
        ), vector_id


# -- happy paths ------------------------------------------------------------------------


def test_create_many_writes_every_item_in_one_saga(runner: SagaRunner, db_path: Path) -> None:
    result = runner.create_many("notes", _items(range(1, 6)))

    assert result.state == "synced"
    assert result.vector_ids == tuple(f"notes:{k}" for k in range(1, 6))
    assert rows(db_path) == {
        k: {"id": k, "body": f"note {k}", "score": None, "vector_id": f"notes:{k}"}
        for k in range(1, 6)
    }
    stored = runner.stores.vectors.get("notes", list(result.vector_ids), embeddings=True)
    for k in range(1, 6):
        vector = stored[f"notes:{k}"]
        assert vector.embedding == pytest.approx(vec(k))
        assert vector.document == f"note document {k}"
        assert dict(vector.metadata) == {"n": k}  # exactly the caller's
    [saga] = saga_rows(db_path)
    assert (saga["definition"], saga["item_count"]) == ("create_many", 5)
    assert history(db_path, result.saga_id) == SAGA_STEPS
    assert {s["saga_id"] for s in sync_states(db_path).values()} == {result.saga_id}
    assert payloads(db_path) == {}
    assert runner.reconcile().clean


def test_update_many_changes_every_item_and_keeps_what_it_omits(
    runner: SagaRunner, db_path: Path
) -> None:
    created = runner.create_many("notes", _items(range(1, 5)))

    result = runner.update_many(
        "notes",
        [
            {"key": 1, "changes": {"body": "one"}},
            {"key": 2, "embedding": vec(20)},
            {"key": 3, "document": "three", "metadata": {"n": 30}},
        ],
    )

    assert result.state == "synced"
    assert history(db_path, result.saga_id) == SAGA_STEPS
    stored = runner.stores.vectors.get(
        "notes", [f"notes:{k}" for k in range(1, 5)], embeddings=True
    )
    expected = {  # key -> (body, embedding, document, caller metadata)
        1: ("one", vec(1), "note document 1", {"n": 1}),
        2: ("note 2", vec(20), "note document 2", {"n": 2}),
        3: ("note 3", vec(3), "three", {"n": 30}),
        4: ("note 4", vec(4), "note document 4", {"n": 4}),  # not in the batch
    }
    for key, (body, embedding, document, metadata) in expected.items():
        vector = stored[f"notes:{key}"]
        assert rows(db_path)[key]["body"] == body
        assert vector.embedding == pytest.approx(embedding)
        assert vector.document == document
        assert dict(vector.metadata) == metadata  # exactly the caller's
    # Every item of the batch was (re)written by it, the key outside it was not.
    writers = {k: s["saga_id"] for k, s in sync_states(db_path).items()}
    assert writers == {
        **{f"notes:{k}": result.saga_id for k in (1, 2, 3)},
        "notes:4": created.saga_id,
    }
    assert runner.reconcile().clean


def test_delete_many_removes_every_item(runner: SagaRunner, db_path: Path) -> None:
    created = runner.create_many("notes", _items(range(1, 6)))

    result = runner.delete_many("notes", [1, 3, 5])

    assert result.state == "synced"
    assert set(rows(db_path)) == {2, 4}
    assert vector_ids(runner) == {"notes:2", "notes:4"}
    assert set(sync_states(db_path)) == {"notes:2", "notes:4"}
    assert history(db_path, result.saga_id) == SAGA_STEPS
    assert history(db_path, created.saga_id) == SAGA_STEPS
    assert runner.reconcile().clean


# -- one bad item refuses the batch -----------------------------------------------------


def _with(index: int, **change: Any) -> list[dict[str, Any]]:
    items = _items(range(1, 5))
    items[index] = {**items[index], **change}
    return items


@pytest.mark.parametrize(
    ("items", "field"),
    [
        (_with(2, embedding=[1.0, "x", 2.0, 3.0]), "embedding"),
        (_with(2, embedding=[1.0, 2.0]), "embedding"),
        (_with(2, metadata={"saga_id": "forged"}), "metadata.saga_id"),
        (_with(2, metadata={"nested": {"a": 1}}), "metadata.nested"),
        (_with(2, row={"id": 3, "nope": 1}), "row.nope"),
        (_with(2, row={"id": 3, "vector_id": "x"}), "row.vector_id"),
        (_with(2, document=42), "document"),
        (_with(2, metadata={"": 1}), "metadata"),
        (_with(2, row={"id": 3, "bad name": 1}), "row.bad name"),
        (_with(2, colour="red"), "item"),
    ],
    ids=[
        "embedding-type",
        "embedding-dimension",
        "reserved-metadata",
        "nested-metadata",
        "unknown-column",
        "protected-column",
        "document-type",
        "empty-metadata-key",
        "bad-column-name",
        "unknown-field",
    ],
)
def test_one_bad_item_refuses_the_whole_create_many(
    runner: SagaRunner, db_path: Path, items: list[dict[str, Any]], field: str
) -> None:
    runner.create("notes", {"id": 10, "body": "ten"}, embedding=vec(10))  # learns DIM
    log_before = log_snapshot(db_path)

    with pytest.raises(ValidationError) as caught:
        runner.create_many("notes", items)

    assert caught.value.index == 2
    assert caught.value.field == field
    assert f"items[2].{field}" in str(caught.value)
    assert log_snapshot(db_path) == log_before
    assert vector_ids(runner) == {"notes:10"}


def test_one_existing_key_refuses_the_whole_create_many(runner: SagaRunner, db_path: Path) -> None:
    runner.create("notes", {"id": 3, "body": "three"}, embedding=vec(3))
    before = _everything(runner, db_path)
    log_before = log_snapshot(db_path)

    with pytest.raises(RecordExistsError) as caught:
        runner.create_many("notes", _items(range(1, 5)))

    assert caught.value.index == 2
    assert _names_the_key(caught.value.field)
    assert log_snapshot(db_path) == log_before
    _assert_same(before, _everything(runner, db_path))


@pytest.mark.parametrize(
    ("items", "field", "error"),
    [
        ([{"key": 1}, {"key": 2, "changes": {"nope": 1}}], "changes.nope", ValidationError),
        ([{"key": 1}, {"key": 2, "changes": {"id": 7}}], "changes.id", ValidationError),
        ([{"key": 1}, {"key": 2, "embedding": [1.0]}], "embedding", ValidationError),
        ([{"key": 1}, {"changes": {"body": "x"}}], "item", ValidationError),
        ([{"key": 1}, {"key": 9, "embedding": vec(9)}], "key", RecordNotFoundError),
    ],
    ids=["unknown-column", "key-column", "dimension", "no-key", "missing-row"],
)
def test_one_bad_item_refuses_the_whole_update_many(
    runner: SagaRunner,
    db_path: Path,
    items: list[dict[str, Any]],
    field: str,
    error: type[Exception],
) -> None:
    runner.create_many("notes", _items(range(1, 4)))
    before = _everything(runner, db_path)
    log_before = log_snapshot(db_path)

    with pytest.raises(error) as caught:
        runner.update_many("notes", items)

    assert isinstance(caught.value, ValidationError)
    assert caught.value.index == 1
    assert caught.value.field == field or (field == "key" and _names_the_key(caught.value.field))
    assert log_snapshot(db_path) == log_before
    _assert_same(before, _everything(runner, db_path))


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ([1, 2.5, 3], ValidationError),
        ([1, 9, 3], RecordNotFoundError),
        ([1, True], ValidationError),
    ],
    ids=["float-key", "missing-row", "bool-key"],
)
def test_one_bad_key_refuses_the_whole_delete_many(
    runner: SagaRunner, db_path: Path, keys: list[Any], error: type[Exception]
) -> None:
    runner.create_many("notes", _items(range(1, 4)))
    before = _everything(runner, db_path)
    log_before = log_snapshot(db_path)

    with pytest.raises(error) as caught:
        runner.delete_many("notes", keys)

    assert caught.value.index == 1
    assert _names_the_key(caught.value.field)
    assert log_snapshot(db_path) == log_before
    _assert_same(before, _everything(runner, db_path))


@pytest.mark.parametrize(
    "write",
    [
        lambda r: r.create_many("notes", _items([5, 6, 5])),
        lambda r: r.update_many("notes", [{"key": 1}, {"key": 2}, {"key": 1}]),
        lambda r: r.delete_many("notes", [1, 2, 1]),
    ],
    ids=["create_many", "update_many", "delete_many"],
)
def test_a_key_twice_in_one_batch_is_refused(runner: SagaRunner, db_path: Path, write: Any) -> None:
    runner.create_many("notes", _items(range(1, 4)))
    log_before = log_snapshot(db_path)
    before = _everything(runner, db_path)

    with pytest.raises(ValidationError) as caught:
        write(runner)

    assert caught.value.index == 2
    assert _names_the_key(caught.value.field)
    assert "item 0" in str(caught.value)
    assert log_snapshot(db_path) == log_before
    _assert_same(before, _everything(runner, db_path))


@pytest.mark.parametrize(
    "write",
    [
        lambda r: r.create_many("notes", []),
        lambda r: r.update_many("notes", []),
        lambda r: r.delete_many("notes", []),
        lambda r: r.create_many("notes", {"row": {"id": 1}}),
        lambda r: r.delete_many("notes", "123"),
    ],
    ids=["empty-create", "empty-update", "empty-delete", "dict", "str"],
)
def test_a_batch_that_is_not_a_non_empty_list_is_refused(
    runner: SagaRunner, db_path: Path, write: Any
) -> None:
    log_before = log_snapshot(db_path)
    with pytest.raises(ValidationError) as caught:
        write(runner)
    assert caught.value.field in {"items", "keys"}
    assert log_snapshot(db_path) == log_before


# -- sub-batches ------------------------------------------------------------------------


class SmallBatches:
    """The real Chroma store, with a request size limit of ``size`` records.

    ``fail_call``: the n-th non-empty write (upsert or delete, by ``verb``) raises
    ``VectorStoreUnavailable``, before reaching Chroma (``applied=False``) or after
    Chroma applied it (``applied=True``, a "maybe written" timeout). ``seen`` records,
    at that moment, the saga's persisted progress and which vectors Chroma held.
    """

    def __init__(
        self,
        inner: Any,
        db_path: Path,
        size: int = 3,
        verb: str = "upsert",
        fail_call: int = 0,
        *,
        applied: bool = False,
    ) -> None:
        self.inner = inner
        self.db_path = db_path
        self.size = size
        self.verb = verb
        self.fail_call = fail_call
        self.applied = applied
        self.calls: dict[str, list[list[str]]] = {"upsert": [], "delete": []}
        self.seen: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def max_batch_size(self) -> int:
        return self.size

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None:
        self._write(
            "upsert", [r.id for r in records], lambda: self.inner.upsert(collection, records)
        )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._write("delete", list(ids), lambda: self.inner.delete(collection, ids))

    def _write(self, verb: str, ids: list[str], action: Any) -> None:
        if not ids:
            return
        assert len(ids) <= self.size, "a request larger than the store's limit"
        self.calls[verb].append(ids)
        failing = verb == self.verb and len(self.calls[verb]) == self.fail_call
        if failing:
            self.seen["progress"] = _progress(self.db_path)
            self.seen["stored"] = set(self.inner.get("notes", [f"notes:{k}" for k in range(100)]))
        if failing and not self.applied:
            raise VectorStoreUnavailable("injected: sub-batch refused")
        action()
        if failing:
            raise VectorStoreUnavailable("injected: sub-batch applied, answer lost")


def _wrap(runner: SagaRunner, store: SmallBatches) -> SagaRunner:
    """A runner like ``runner`` on ``store`` (the real adapter, wrapped)."""
    return rewired(runner, vectors=store)


def test_a_batch_over_the_request_limit_is_split_and_recorded(
    runner: SagaRunner, db_path: Path
) -> None:
    store = SmallBatches(runner.stores.vectors, db_path, size=3)
    runner = _wrap(runner, store)

    result = runner.create_many("notes", _items(range(1, 8)))

    assert [len(ids) for ids in store.calls["upsert"]] == [3, 3, 1]
    assert sorted(id_ for ids in store.calls["upsert"] for id_ in ids) == sorted(
        f"notes:{k}" for k in range(1, 8)
    )
    assert set(rows(db_path)) == set(range(1, 8))
    assert vector_ids(runner) == {f"notes:{k}" for k in range(1, 8)}
    assert saga_state(db_path, result.saga_id) == "synced"
    assert history(db_path, result.saga_id) == SAGA_STEPS
    assert runner.reconcile().clean


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "applied-then-failed"])
def test_create_many_failing_in_its_second_sub_batch_leaves_nothing(
    runner: SagaRunner, db_path: Path, applied: bool
) -> None:
    store = SmallBatches(runner.stores.vectors, db_path, fail_call=2, applied=applied)
    runner = _wrap(runner, store)

    with pytest.raises(DataIntegrityError) as caught:
        runner.create_many("notes", _items(range(1, 8)))

    # When the second sub-batch went out, the first was applied and recorded as such.
    assert store.seen["progress"] == [[0]]
    assert store.seen["stored"] == {"notes:1", "notes:2", "notes:3"}
    assert len(store.calls["upsert"]) == 2  # the third sub-batch never went out
    # Compensation deleted every sub-batch's vectors, the applied ones included.
    assert rows(db_path) == {}
    assert vector_ids(runner) == set()
    assert saga_state(db_path, caught.value.saga_id) == "failed"
    assert isinstance(caught.value.cause, VectorStoreUnavailable)
    assert payloads(db_path) == {}
    assert runner.reconcile().clean


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "applied-then-failed"])
def test_update_many_failing_in_its_second_sub_batch_restores_every_vector(
    runner: SagaRunner, db_path: Path, applied: bool
) -> None:
    runner.create_many("notes", _items(range(1, 8)))
    before = _everything(runner, db_path)
    store = SmallBatches(runner.stores.vectors, db_path, fail_call=2, applied=applied)
    runner = _wrap(runner, store)

    with pytest.raises(DataIntegrityError) as caught:
        runner.update_many(
            "notes",
            [
                {
                    "key": k,
                    "changes": {"body": "new"},
                    "embedding": vec(50 + k),
                    "metadata": {"x": 1},
                }
                for k in range(1, 8)
            ],
        )

    assert store.seen["progress"] == [[], [0]]  # the create_many's and this saga's
    assert len(store.calls["upsert"]) > 2  # the compensation's restores
    _assert_same(before, _everything(runner, db_path))
    assert saga_state(db_path, caught.value.saga_id) == "failed"
    assert runner.reconcile().clean


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "applied-then-failed"])
def test_delete_many_failing_in_its_second_sub_batch_restores_every_vector(
    runner: SagaRunner, db_path: Path, applied: bool
) -> None:
    runner.create_many("notes", _items(range(1, 8)))
    before = _everything(runner, db_path)
    store = SmallBatches(
        runner.stores.vectors, db_path, verb="delete", fail_call=2, applied=applied
    )
    runner = _wrap(runner, store)

    with pytest.raises(DataIntegrityError) as caught:
        runner.delete_many("notes", list(range(1, 8)))

    assert store.seen["progress"][-1] == [0]
    assert store.seen["stored"] == {f"notes:{k}" for k in range(4, 8)}
    _assert_same(before, _everything(runner, db_path))
    assert saga_state(db_path, caught.value.saga_id) == "failed"
    assert runner.reconcile().clean
