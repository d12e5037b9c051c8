"""Reconcile finds each kind of inconsistency planted behind the library's back, and
``fix`` repairs it (through sagas where a vector must be rewritten)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from saga import SagaRunner, VectorRecord
from tests._recovery_worker import body, embedding_for
from tests.conftest import rows, vector_ids
from tests.test_recovery import crash_once, open_runner


def write(runner: SagaRunner, key: int, tag: str = "t") -> None:
    text = body(tag, key)
    runner.create(
        "notes",
        {"id": key, "body": text},
        embedding=embedding_for(text),
        document=text,
        metadata={"tag": tag},
    )


def rebuild(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """What the application would do: embed the row's text again."""
    assert table == "notes"
    return {
        "embedding": embedding_for(row["body"]),
        "document": row["body"],
        "metadata": {"tag": "t"},
    }


@pytest.fixture
def populated(runner: SagaRunner) -> SagaRunner:
    for key in range(1, 8):
        write(runner, key)
    assert runner.reconcile().clean
    return runner


def test_a_consistent_pair_of_stores_is_clean(populated: SagaRunner) -> None:
    report = populated.reconcile(page_size=3)
    assert report.clean
    assert (report.rows_checked, report.vectors_checked) == (7, 7)


def test_orphan_vectors_are_found_across_pages_and_deleted(populated: SagaRunner) -> None:
    planted = [
        VectorRecord(id="notes:99", embedding=(0.1, 0.2, 0.3, 0.4), document="x", metadata=None),
        VectorRecord(id="stray", embedding=(0.4, 0.3, 0.2, 0.1), document=None, metadata=None),
    ]
    populated.vectors.upsert("notes", planted)
    report = populated.reconcile(page_size=2)
    assert set(report.orphan_vectors) == {"notes:99", "stray"}
    assert not report.clean
    fixed = populated.reconcile(fix=True, page_size=2)
    assert set(fixed.fixed) == {"notes:99", "stray"}
    assert fixed.clean
    assert "stray" not in vector_ids(populated)
    assert populated.reconcile().clean


def test_drift_is_found_and_rewritten_from_the_synced_state(populated: SagaRunner) -> None:
    before = populated.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    tampered = VectorRecord(
        id="notes:3", embedding=before.embedding, document="tampered", metadata={"x": 1}
    )
    populated.vectors.upsert("notes", [tampered])
    assert populated.reconcile().drift == ("notes:3",)
    report = populated.reconcile(fix=True)
    assert report.fixed == ("notes:3",)
    after = populated.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    assert after.document == body("t", 3)
    assert after.embedding == pytest.approx(before.embedding)
    assert {k: v for k, v in (after.metadata or {}).items() if k != "saga_id"} == {
        "tag": "t",
        "sqlite_table": "notes",
        "sqlite_record_id": 3,
    }
    assert populated.reconcile().clean


def test_missing_vectors_need_the_applications_embedder(populated: SagaRunner) -> None:
    populated.vectors.delete("notes", ["notes:2", "notes:5"])
    report = populated.reconcile(fix=True)
    assert set(report.missing_vectors) == {"notes:2", "notes:5"}
    assert set(report.unfixable) == {"notes:2", "notes:5"}
    assert not report.clean
    repaired = populated.reconcile(fix=True, rebuild=rebuild)
    assert set(repaired.fixed) == {"notes:2", "notes:5"}
    assert populated.reconcile().clean
    stored = populated.vectors.get("notes", ["notes:2"])["notes:2"]
    assert stored.document == body("t", 2)


def test_a_row_written_behind_the_library_is_missing_its_vector(
    populated: SagaRunner, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO notes (id, body) VALUES (50, 'sneaky')")
    conn.commit()
    conn.close()
    assert populated.reconcile().missing_vectors == ("notes:50",)
    assert populated.reconcile(fix=True, rebuild=rebuild).clean
    assert rows(db_path)[50]["vector_id"] == "notes:50"


def test_in_flight_sagas_are_not_orphans_but_stuck_once_old(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "create", "after:write_vectors=kill")
    with open_runner(crashed) as runner:
        young = runner.reconcile(stuck_after=dt.timedelta(hours=1))
        assert young.orphan_vectors == ()  # notes:11 is written by a saga in flight
        assert young.clean
        old = runner.reconcile(stuck_after=dt.timedelta(0))
        assert len(old.stuck_sagas) == 1
        assert not old.clean
        fixed = runner.reconcile(fix=True, stuck_after=dt.timedelta(0))
        assert fixed.clean
        assert runner.log.in_flight() == []


def test_aliases(populated: SagaRunner) -> None:
    populated.vectors.upsert(
        "notes", [VectorRecord(id="zz-orphan", embedding=(1.0,) * 4, document=None, metadata=None)]
    )
    assert populated.detect_orphaned_records().orphan_vectors == ("zz-orphan",)
    assert populated.recover_orphaned_vectors().clean
