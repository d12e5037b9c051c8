"""The application's own SQLite connection beside the runner (issue 15): a transaction
it leaves open around a saga is named as the likely cause of the lock error; the
documented shape (commit first) works; WAL and foreign keys are as the README says."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from saga import (
    ConfigurationError,
    DataIntegrityError,
    RetryPolicy,
    SagaRunner,
    SqliteOptions,
    SqliteStoreError,
)
from tests.conftest import make_db, rows, vec


def _runner(db: Path, chroma: Path) -> SagaRunner:
    runner = SagaRunner.open(
        db,
        chroma_path=chroma,
        retry=RetryPolicy.disabled(),
        sqlite=SqliteOptions(busy_timeout=0.3, settle_timeout=0.5),
    )
    runner.track("notes")
    return runner


def test_a_transaction_the_application_holds_is_named_in_the_lock_error(
    tmp_path: Path,
) -> None:
    db = make_db(tmp_path / "app.db")
    app = sqlite3.connect(db)
    with _runner(db, tmp_path / "chroma") as runner:
        try:
            with app:  # the application's usual shape: its INSERT, then the saga
                app.execute("INSERT INTO notes (id, body) VALUES (1, 'app')")
                with pytest.raises(SqliteStoreError) as locked:
                    runner.create("notes", {"id": 2, "body": "saga"}, embedding=vec(2))
        finally:
            app.close()
        error = locked.value
        assert error.transient
        assert "database is locked" in str(error)
        assert "your application's own" in str(error)
        assert "commit it first" in str(error)
        assert set(rows(db)) == {1}  # the app's row committed; the saga wrote nothing
        assert runner.in_flight() == []
        assert runner.count("notes").vectors == 0


def test_commit_first_then_the_saga(tmp_path: Path) -> None:
    db = make_db(tmp_path / "app.db")
    with _runner(db, tmp_path / "chroma") as runner:
        app = sqlite3.connect(db)
        with app:
            app.execute("CREATE TABLE audit (what TEXT)")
            app.execute("INSERT INTO audit VALUES ('about to write note 1')")
        app.close()
        runner.create("notes", {"id": 1, "body": "saga"}, embedding=vec(1))
        assert set(rows(db)) == {1}
        assert runner.reconcile().clean


def test_the_file_is_in_wal_mode_and_saga_writes_enforce_foreign_keys(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE parents (id INTEGER PRIMARY KEY, vector_id TEXT);"
        "CREATE TABLE children (id INTEGER PRIMARY KEY, "
        "parent_id INTEGER REFERENCES parents (id), vector_id TEXT);"
    )
    conn.close()
    with SagaRunner.open(db, chroma_path=tmp_path / "chroma") as runner:
        runner.track("children")
        check = sqlite3.connect(db)
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        check.execute("INSERT INTO children (id, parent_id) VALUES (1, 99)")  # app: allowed
        check.commit()
        check.close()
        with pytest.raises(DataIntegrityError, match="FOREIGN KEY"):
            runner.create("children", {"id": 2, "parent_id": 99}, embedding=vec(1))


def test_a_folder_this_process_already_opened_names_chroma_client(tmp_path: Path) -> None:
    import chromadb  # noqa: PLC0415 - the application's own client

    db = make_db(tmp_path / "app.db")
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    with pytest.raises(ConfigurationError) as refused:
        SagaRunner.open(db, chroma_path=tmp_path / "chroma")
    assert refused.value.field == "chroma_path"
    assert "chroma_client=" in str(refused.value)
    with SagaRunner.open(db, chroma_client=client) as runner:  # as the error says
        runner.track("notes")
        runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1))
        assert runner.reconcile().clean
