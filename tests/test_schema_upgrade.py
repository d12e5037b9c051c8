"""A database written by the previous schema version is migrated forward on open, and
the sagas it left in flight are recovered."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from saga import ConfigurationError, RetryPolicy, SagaRunner
from stores._schema import SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1.db"


def schema_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT value FROM saga_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])
    finally:
        conn.close()


def columns(db: Path, table: str) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


def test_a_version_1_database_is_migrated_and_its_sagas_recovered(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    shutil.copy(FIXTURE, db)
    assert schema_version(db) == 1
    assert "content" not in columns(db, "vector_sync_state")
    with SagaRunner.open(
        db, chroma_path=tmp_path / "chroma", retry=RetryPolicy.disabled()
    ) as runner:
        assert schema_version(db) == SCHEMA_VERSION == 7
        assert "content" in columns(db, "vector_sync_state")
        assert [s.state for s in runner.in_flight()] == ["pending", "pending"]
        report = runner.recover()
        assert (report.resumed, report.failed) == (2, 0)
        assert runner.reconcile().clean
        hits = runner.query("notes", embedding=[21, 0.5, 0.25, 0.125], n_results=1)
        assert hits[0].row["body"] == "v1-21"


def test_a_database_from_a_newer_library_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    shutil.copy(FIXTURE, db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE saga_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigurationError, match="newer"):
        SagaRunner.open(db, chroma_path=tmp_path / "chroma")
    assert schema_version(db) == 99  # untouched
