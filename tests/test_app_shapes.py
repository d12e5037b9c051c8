"""Shapes real applications have: keys that must really be keys, TEXT primary keys,
columns added while a runner is open, NOT NULL link columns, and reconcile when two
vectors name one row. Each test here failed before its fix (issue 14)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga import RetryPolicy, SagaRunner, ValidationError
from saga.extend import VectorRecord
from tests._probe import sync_states
from tests.conftest import sql, vec


def _db(path: Path, schema: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.close()
    return path


@pytest.fixture
def open_runner(tmp_path: Path) -> Iterator[object]:
    opened: list[SagaRunner] = []

    def make(schema: str) -> tuple[SagaRunner, Path]:
        db = _db(tmp_path / "app.db", schema)
        runner = SagaRunner.open(db, chroma_path=tmp_path / "chroma", retry=RetryPolicy.disabled())
        opened.append(runner)
        return runner, db

    yield make
    for runner in opened:
        runner.close()


# -- 1. a key that is not a key ----------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, vector_id TEXT)",
        "CREATE TABLE tags (name TEXT, lang TEXT, vector_id TEXT, PRIMARY KEY (name, lang))",
        "CREATE TABLE tags (name TEXT, lang TEXT, vector_id TEXT, UNIQUE (name, lang))",
        "CREATE TABLE tags (name TEXT, vector_id TEXT);"
        "CREATE UNIQUE INDEX tags_name ON tags (name) WHERE name <> ''",
    ],
    ids=["plain-column", "one-of-a-composite-primary-key", "one-of-a-composite-unique", "partial"],
)
def test_track_refuses_a_key_column_that_is_not_unique(open_runner: object, schema: str) -> None:
    runner, _db_path = open_runner(schema)  # type: ignore[operator]
    with pytest.raises(ValidationError) as caught:
        runner.track("tags", key="name")
    assert caught.value.field == "key"
    assert "PRIMARY KEY or have a UNIQUE constraint" in str(caught.value)
    assert runner.tracked() == []


@pytest.mark.parametrize(
    "schema",
    [
        "CREATE TABLE tags (name TEXT PRIMARY KEY, vector_id TEXT)",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE, vector_id TEXT)",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL, vector_id TEXT);"
        "CREATE UNIQUE INDEX tags_name ON tags (name)",
        "CREATE TABLE tags (name TEXT, vector_id TEXT, PRIMARY KEY (name)) WITHOUT ROWID",
    ],
    ids=["text-primary-key", "unique-column", "unique-index", "without-rowid"],
)
def test_track_accepts_a_primary_or_unique_key(open_runner: object, schema: str) -> None:
    runner, db = open_runner(schema)  # type: ignore[operator]
    runner.track("tags", key="name")
    runner.create("tags", {"name": "dup"}, embedding=vec(1))
    runner.update("tags", "dup", {}, document="changed")
    runner.delete("tags", "dup")
    assert sql(db, "SELECT COUNT(*) FROM tags") == [(0,)]


def test_a_non_unique_key_can_no_longer_change_two_rows(open_runner: object) -> None:
    """What the bug did: two rows named `dup`, both updated and both deleted."""
    runner, db = open_runner(  # type: ignore[operator]
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, body TEXT, vector_id TEXT)"
    )
    with pytest.raises(ValidationError):
        runner.track("tags", key="name")
    assert sql(db, "SELECT COUNT(*) FROM tags") == [(0,)]


# -- 2 and 5. NOT NULL key and link columns -------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        "CREATE TABLE docs (uid TEXT NOT NULL PRIMARY KEY, body TEXT, vector_id TEXT)",
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, uid TEXT UNIQUE NOT NULL, body TEXT, "
        "vector_id TEXT)",
        "CREATE TABLE docs (uid TEXT PRIMARY KEY, body TEXT, vector_id TEXT NOT NULL)",
    ],
    ids=["text-not-null-primary-key", "unique-not-null-key", "not-null-vector-id"],
)
def test_not_null_key_and_link_columns_take_writes(open_runner: object, schema: str) -> None:
    runner, db = open_runner(schema)  # type: ignore[operator]
    runner.track("docs", key="uid")
    runner.create("docs", {"uid": "a", "body": "first"}, embedding=vec(1), document="first")
    runner.create_many("docs", [{"row": {"uid": "b", "body": "second"}, "embedding": vec(2)}])
    runner.update("docs", "a", {"body": "again"})
    assert sql(db, "SELECT uid, body, vector_id FROM docs ORDER BY uid") == [
        ("a", "again", "docs:a"),
        ("b", "second", "docs:b"),
    ]
    assert runner.reconcile().clean


def test_a_not_null_column_is_still_required(open_runner: object) -> None:
    runner, db = open_runner(  # type: ignore[operator]
        "CREATE TABLE docs (uid TEXT NOT NULL PRIMARY KEY, body TEXT NOT NULL, vector_id TEXT)"
    )
    runner.track("docs", key="uid")
    with pytest.raises(ValidationError) as caught:
        runner.create("docs", {"uid": "a"}, embedding=vec(1))
    assert caught.value.field == "row.body"
    with pytest.raises(ValidationError) as missing_key:
        runner.create("docs", {"body": "b"}, embedding=vec(1))
    assert missing_key.value.field == "row.uid"
    assert sql(db, "SELECT COUNT(*) FROM docs") == [(0,)]


# -- 3. a column added while the runner is open ----------------------------------------


def test_a_column_added_after_track_is_accepted_without_a_restart(open_runner: object) -> None:
    runner, db = open_runner(  # type: ignore[operator]
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, vector_id TEXT)"
    )
    runner.track("notes")
    runner.create("notes", {"id": 1, "body": "before"}, embedding=vec(1))
    sql(db, "ALTER TABLE notes ADD COLUMN lang TEXT")

    runner.create("notes", {"id": 2, "body": "after", "lang": "en"}, embedding=vec(2))
    runner.update("notes", 1, {"lang": "fr"})

    assert sql(db, "SELECT id, lang FROM notes ORDER BY id") == [(1, "fr"), (2, "en")]
    with pytest.raises(ValidationError) as caught:  # an unknown column is still refused
        runner.update("notes", 1, {"nope": 1})
    assert caught.value.field == "changes.nope"


# -- 6. two vectors naming one row -----------------------------------------------------


def test_reconcile_keeps_every_vector_that_names_a_row(open_runner: object) -> None:
    """A stray vector whose metadata names row 1 must not hide row 1's own vector."""
    runner, _db_path = open_runner(  # type: ignore[operator]
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, vector_id TEXT)"
    )
    runner.track("notes")
    runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1), document="b")
    stray = VectorRecord(
        id="stray-1",
        embedding=tuple(vec(9)),
        document="x",
        metadata={"sqlite_table": "notes", "sqlite_record_id": 1},
    )
    runner.stores.vectors.upsert("notes", [stray])

    report = runner.reconcile()

    assert report.orphan_vectors == ("stray-1",)
    assert report.drift == ()
    assert report.missing_vectors == ()


# -- 4. a create over an orphan vector --------------------------------------------------


def _orphan(runner: SagaRunner, key: int) -> None:
    runner.stores.vectors.upsert(
        "notes",
        [
            VectorRecord(
                id=f"notes:{key}",
                embedding=tuple(vec(50 + key)),
                document="orphan's document",
                metadata={"stale": "x", "sqlite_table": "notes", "saga_id": "someone-else"},
            )
        ],
    )


NOTES = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, vector_id TEXT)"


@pytest.mark.parametrize("document", [None, "mine"])
@pytest.mark.parametrize("many", [False, True], ids=["create", "create_many"])
def test_a_create_over_an_orphan_vector_replaces_it_exactly(
    open_runner: object, document: str | None, many: bool
) -> None:
    runner, db_path = open_runner(NOTES)  # type: ignore[operator]
    runner.track("notes")
    _orphan(runner, 1)

    if many:
        entry = {
            "row": {"id": 1, "body": "b"},
            "embedding": vec(1),
            "document": document,
            "metadata": {"lang": "en"},
        }
        result = runner.create_many("notes", [entry])
    else:
        result = runner.create(
            "notes",
            {"id": 1, "body": "b"},
            embedding=vec(1),
            document=document,
            metadata={"lang": "en"},
        )

    stored = runner.vectors_of("notes", [1], embeddings=True)[1]
    assert stored.document == document
    assert stored.embedding == pytest.approx(vec(1))
    # Exactly the caller's metadata: none of the orphan's keys survive Chroma's merge.
    assert stored.metadata == {"lang": "en"}
    assert sync_states(db_path)["notes:1"]["saga_id"] == result.saga_id
    assert runner.reconcile().clean


def test_recovery_of_a_create_over_an_orphan_replaces_it_exactly(open_runner: object) -> None:
    """The writer died in `pending`; recovery's grouped path writes the vector exactly."""
    from saga.extend import Item  # noqa: PLC0415

    runner, db_path = open_runner(NOTES)  # type: ignore[operator]
    runner.track("notes")
    _orphan(runner, 2)
    item = Item(
        key=2, row={"body": "b"}, embedding=tuple(vec(2)), document=None, metadata={"lang": "en"}
    )
    engine = runner._services.engine
    saga, _ctx = engine.begin(runner.definition("create"), runner.spec("notes"), "create", [item])
    runner.stores.log.release(saga)  # as if its writer had died

    report = runner.recover()

    assert report.resumed_ids == (saga.saga_id,)
    stored = runner.vectors_of("notes", [2], embeddings=True)[2]
    assert stored.document is None
    assert stored.embedding == pytest.approx(vec(2))
    assert stored.metadata == {"lang": "en"}
    assert sync_states(db_path)["notes:2"]["saga_id"] == saga.saga_id
    assert runner.reconcile().clean


# -- keys SQLite assigns -----------------------------------------------------------------


def test_a_key_sqlite_cannot_assign_is_still_required(open_runner: object) -> None:
    runner, db = open_runner(  # type: ignore[operator]
        "CREATE TABLE docs (uid TEXT PRIMARY KEY, body TEXT, vector_id TEXT)"
    )
    runner.track("docs", key="uid")
    with pytest.raises(ValidationError) as single:
        runner.create("docs", {"body": "no key"}, embedding=vec(1))
    assert single.value.field == "row.uid"
    with pytest.raises(ValidationError) as batch:
        runner.create_many(
            "docs",
            [
                {"row": {"uid": "a", "body": "x"}, "embedding": vec(1)},
                {"row": {"body": "no key"}, "embedding": vec(2)},
            ],
        )
    assert (batch.value.field, batch.value.index) == ("row.uid", 1)
    assert sql(db, "SELECT COUNT(*) FROM docs") == [(0,)]
    assert runner.in_flight() == []
