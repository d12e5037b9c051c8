"""What the log keeps of each vector: the opt-out at ``track()``, and the copy of vectors
synced before schema 5 filled from Chroma by ``reconcile(fix=True)`` (issue 13)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saga import ConfigurationError, DataIntegrityError, RetryPolicy, SagaRunner, ValidationError
from saga._ports import VectorRecord
from tests.conftest import rewired, sql, stored_vectors, vec
from tests.test_system_of_record import _CountingReads, _kept


def _opted_out(db_path: Path, chroma_path: Path) -> SagaRunner:
    runner = SagaRunner.open(db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled())
    runner.track("notes", keep_vectors=False)
    return runner


def test_an_opted_out_table_keeps_no_vector_and_reads_before_images_from_chroma(
    db_path: Path, chroma_path: Path
) -> None:
    with _opted_out(db_path, chroma_path) as runner:
        runner.create(
            "notes", {"id": 1, "body": "b"}, embedding=vec(1), document="d", metadata={"k": 1}
        )
        assert _kept(db_path, "notes:1") == (None, None)
        counting = _CountingReads(runner.stores.vectors)
        rewired(runner, vectors=counting).update("notes", 1, {"body": "new"})
        assert counting.gets == 1  # the before-image, from Chroma
        before = runner.vectors_of("notes", [1], embeddings=True)[1]
        with pytest.raises(DataIntegrityError):  # the CHECK on score fails at the pivot
            runner.update("notes", 1, {"score": -1.0}, embedding=vec(9), document="other")
        after = runner.vectors_of("notes", [1], embeddings=True)[1]
        assert (after.embedding, after.document, after.metadata) == (
            before.embedding,
            before.document,
            before.metadata,
        )
        assert _kept(db_path, "notes:1") == (None, None)
        assert runner.reconcile().clean


def test_rebuild_reports_an_opted_out_table_as_not_rebuildable(
    db_path: Path, chroma_path: Path, tmp_path: Path
) -> None:
    with _opted_out(db_path, chroma_path) as runner:
        runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1))
    with SagaRunner.open(db_path, chroma_path=tmp_path / "fresh") as fresh:
        report = fresh.rebuild()
    assert (report.rebuilt, report.not_rebuildable, report.complete) == (0, ("notes:1",), False)


def test_changing_keep_vectors_needs_migrate(db_path: Path, chroma_path: Path) -> None:
    with _opted_out(db_path, chroma_path) as runner:
        runner.track("notes", keep_vectors=False)  # the same again: a no-op
        with pytest.raises(ConfigurationError, match="migrate"):
            runner.track("notes")
        with pytest.raises(ValidationError) as refused:
            runner.track("notes", keep_vectors="no")  # type: ignore[arg-type]
        assert refused.value.field == "keep_vectors"
        assert runner.track("notes", migrate=True).keep_vectors
        runner.create("notes", {"id": 2, "body": "b"}, embedding=vec(2))
        assert _kept(db_path, "notes:2")[0] is not None
    with SagaRunner.open(db_path, chroma_path=chroma_path) as again:  # persisted
        assert again.spec("notes").keep_vectors


def _as_schema_4_left_them(db_path: Path) -> None:
    """A database upgraded from schema 4 holds its synced vectors without their copy."""
    sql(db_path, "UPDATE vector_sync_state SET embedding = NULL, record = NULL")


def test_reconcile_fix_fills_the_log_from_chroma_and_then_rebuild_is_exact(
    runner: SagaRunner, db_path: Path, tmp_path: Path
) -> None:
    for key in range(1, 6):
        runner.create(
            "notes",
            {"id": key, "body": "b"},
            embedding=[key / 3, 0.1, 1e-7, -key / 7],
            document=f"doc {key}",
            metadata={"f": key / 3, "s": "x"},
        )
    runner.delete("notes", 5)
    _as_schema_4_left_them(db_path)
    # One vector drifted in Chroma meanwhile: its content is not taken for the synced one.
    drifted = VectorRecord("notes:4", tuple(vec(9)), "changed", {"f": 0.5})
    runner.stores.vectors.upsert("notes", [drifted])
    with SagaRunner.open(db_path, chroma_path=tmp_path / "empty") as lost:
        assert set(lost.rebuild().not_rebuildable) == {f"notes:{k}" for k in range(1, 5)}

    report = runner.reconcile(fix=True)

    assert set(report.backfilled) == {"notes:1", "notes:2", "notes:3"}
    assert report.drift == ("notes:4",)
    assert "notes:4" in report.fixed  # rewritten through an update saga: kept since
    assert all(_kept(db_path, f"notes:{k}")[0] is not None for k in range(1, 5))
    assert runner.reconcile(fix=True).backfilled == ()  # once
    expected = stored_vectors(runner)
    runner.close()
    shutil.rmtree(tmp_path / "chroma")
    with SagaRunner.open(db_path, chroma_path=tmp_path / "chroma") as rebuilt:
        assert rebuilt.rebuild().complete
        assert stored_vectors(rebuilt) == expected
        assert rebuilt.reconcile().clean


def test_backfill_leaves_an_opted_out_table_alone(db_path: Path, chroma_path: Path) -> None:
    with _opted_out(db_path, chroma_path) as runner:
        runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1))
        report = runner.reconcile(fix=True)
        assert (report.backfilled, report.clean) == ((), True)
        assert _kept(db_path, "notes:1") == (None, None)
