"""SQLite keeps every synced vector (schema 5): embedding, document and metadata.
Updates and deletes take their before-images from there, not from Chroma (issue 13)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from saga import DataIntegrityError, SagaRunner
from tests.conftest import rewired, vec


class _CountingReads:
    """The real store, counting its reads."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return self._inner.get(*args, **kwargs)


def _kept(db: Path, vector_id: str) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT embedding, record FROM vector_sync_state WHERE vector_id = ?", (vector_id,)
        ).fetchone()
        return tuple(row) if row else ()
    finally:
        conn.close()


def test_the_log_keeps_each_synced_vector_and_a_delete_removes_it(
    runner: SagaRunner, db_path: Path
) -> None:
    runner.create(
        "notes", {"id": 1, "body": "b"}, embedding=vec(1), document="d", metadata={"x": 0.1 + 0.2}
    )
    embedding, record = _kept(db_path, "notes:1")
    assert len(embedding) == 4 * 4  # float32, four dimensions
    assert '"x": 0.30000000000000004' in record  # exact, not rounded
    runner.delete("notes", 1)
    assert _kept(db_path, "notes:1") == ()


def test_a_live_update_and_delete_read_nothing_from_chroma(
    runner: SagaRunner, db_path: Path
) -> None:
    runner.create(
        "notes", {"id": 1, "body": "b"}, embedding=vec(1), document="d", metadata={"keep": "me"}
    )
    runner.create("notes", {"id": 2, "body": "b"}, embedding=vec(2), document="d")
    counting = _CountingReads(runner.stores.vectors)
    counted = rewired(runner, vectors=counting)

    counted.update("notes", 1, {"body": "new"})  # vector fields kept from the log's copy
    counted.delete("notes", 2)

    assert counting.gets == 0
    stored = runner.vectors_of("notes", [1], embeddings=True)[1]
    assert (stored.document, stored.metadata) == ("d", {"keep": "me"})
    assert stored.embedding == pytest.approx(vec(1))
    assert runner.reconcile().clean


def test_a_failed_update_restores_the_before_image_from_the_log_bit_for_bit(
    runner: SagaRunner,
) -> None:
    third = [1 / 3, 2 / 3, 0.1, 1e-7]
    runner.create(
        "notes", {"id": 1, "body": "b"}, embedding=third, document="d", metadata={"f": 1 / 3}
    )
    before = runner.vectors_of("notes", [1], embeddings=True)[1]
    with pytest.raises(DataIntegrityError):  # the CHECK on score fails at the pivot
        runner.update("notes", 1, {"score": -1.0}, embedding=vec(9), document="other")
    after = runner.vectors_of("notes", [1], embeddings=True)[1]
    assert after.embedding == before.embedding  # float32 as stored, bit for bit
    assert (after.document, after.metadata) == (before.document, before.metadata)
    assert runner.reconcile().clean


def test_a_vector_synced_before_the_log_kept_it_is_read_from_chroma_once(
    runner: SagaRunner, db_path: Path
) -> None:
    """As a database upgraded from schema 4 holds it: no embedding in the log yet."""
    runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1), document="d")
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE vector_sync_state SET embedding = NULL, record = NULL")
    conn.close()
    counting = _CountingReads(runner.stores.vectors)

    rewired(runner, vectors=counting).update("notes", 1, {"body": "new"}, document="new")

    assert counting.gets == 1  # the before-image, once
    assert _kept(db_path, "notes:1")[0] is not None  # kept from now on
    assert runner.reconcile().clean
