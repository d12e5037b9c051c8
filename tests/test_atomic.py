"""Atomic units: several row changes on several tracked tables (so several collections)
as one saga, all or nothing (issue 14)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import (
    DataIntegrityError,
    LeasePolicy,
    RecordNotFoundError,
    RetryPolicy,
    SagaConflictError,
    SagaError,
    SagaRunner,
    ValidationError,
    VectorStoreUnavailable,
)
from tests.conftest import rewired, run_saga, sql, stored_vectors

SCHEMA = """
CREATE TABLE summaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    vector_id TEXT
);
CREATE TABLE constraints (
    id INTEGER PRIMARY KEY,
    summary_id INTEGER NOT NULL REFERENCES summaries (id),
    text TEXT NOT NULL,
    vector_id TEXT
);
CREATE TABLE glossary (
    term TEXT NOT NULL PRIMARY KEY,
    meaning TEXT NOT NULL,
    vector_id TEXT
);
"""


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def open_app(folder: Path, clock: Clock | None = None) -> SagaRunner:
    db = folder / "app.db"
    if not db.exists():
        conn = sqlite3.connect(db)
        conn.executescript(SCHEMA)
        conn.close()
    runner = SagaRunner.open(
        db,
        chroma_path=folder / "chroma",
        retry=RetryPolicy.disabled(),
        clock=clock,
        lease=LeasePolicy(ttl=30),
    )
    runner.track("summaries", dimension=3)
    runner.track("constraints", dimension=3)
    runner.track("glossary", key="term", dimension=3)
    return runner


@pytest.fixture
def app(tmp_path: Path) -> Iterator[SagaRunner]:
    with open_app(tmp_path) as runner:
        yield runner


def v(seed: float) -> list[float]:
    return [seed, seed / 2, 1.0]


def table_rows(runner: SagaRunner, table: str) -> dict[Any, dict[str, Any]]:
    db = runner.stores.log.db.path
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        conn.close()
    return {row[0]: dict(row) for row in rows}


def everything(runner: SagaRunner) -> dict[str, Any]:
    """Both stores, every table and collection, exactly."""
    return {
        table: (table_rows(runner, table), stored_vectors(runner, table))
        for table in ("summaries", "constraints", "glossary")
    }


def test_a_summary_with_its_constraints_is_one_saga(app: SagaRunner) -> None:
    with app.atomic() as unit:
        sid = unit.create("summaries", {"body": "s"}, embedding=v(1), document="s")
        assert isinstance(sid, int)  # at once, before the unit ends
        first = unit.create(
            "constraints", {"summary_id": sid, "text": "c1"}, embedding=v(2), document="c1"
        )
        unit.create("constraints", {"summary_id": sid, "text": "c2"}, embedding=v(3))
        unit.create("glossary", {"term": "saga", "meaning": "m"}, embedding=v(4))

    result = unit.result
    assert result is not None
    assert result.state == "synced"
    assert result.keys == (sid, first, first + 1, "saga")
    assert result.vector_ids == (
        f"summaries:{sid}",
        f"constraints:{first}",
        f"constraints:{first + 1}",
        "glossary:saga",
    )
    assert table_rows(app, "constraints")[first]["summary_id"] == sid
    assert table_rows(app, "summaries")[sid]["vector_id"] == f"summaries:{sid}"
    assert set(stored_vectors(app, "constraints")) == {
        f"constraints:{first}",
        f"constraints:{first + 1}",
    }
    assert sql(app.stores.log.db.path, "SELECT definition, state FROM saga_instances") == [
        ("atomic", "synced")
    ]
    assert app.reconcile().clean
    assert app.in_flight() == []


def test_an_exception_in_the_block_writes_nothing_and_the_key_is_not_reused(
    app: SagaRunner,
) -> None:
    before = everything(app)
    unit = app.atomic()
    reserved: list[int] = []

    def block() -> None:
        with unit:
            reserved.append(unit.create("summaries", {"body": "s"}, embedding=v(1)))
            unit.create("constraints", {"summary_id": reserved[0], "text": "c"}, embedding=v(2))
            raise RuntimeError("the application changed its mind")

    with pytest.raises(RuntimeError):
        block()
    [sid] = reserved
    assert unit.result is None
    assert everything(app) == before
    assert app.in_flight() == []
    assert sql(app.stores.log.db.path, "SELECT state FROM saga_instances") == [("failed",)]
    later = app.create("summaries", {"body": "later"}, embedding=v(5))
    assert later.keys[0] > sid  # AUTOINCREMENT: a reserved key is never handed out again
    assert app.reconcile().clean


def test_updates_and_deletes_across_tables(app: SagaRunner) -> None:
    sid = app.create("summaries", {"body": "old"}, embedding=v(1), metadata={"k": 1}).keys[0]
    app.create("glossary", {"term": "gone", "meaning": "m"}, embedding=v(2))
    with app.atomic() as unit:
        unit.update("summaries", sid, {"body": "new"}, document="new doc")
        unit.delete("glossary", "gone")
        unit.create("glossary", {"term": "fresh", "meaning": "m"}, embedding=v(3))

    assert table_rows(app, "summaries")[sid]["body"] == "new"
    assert set(table_rows(app, "glossary")) == {"fresh"}
    kept = app.vectors_of("summaries", [sid])[sid]
    assert (kept.document, kept.metadata) == ("new doc", {"k": 1})  # the rest kept
    assert set(stored_vectors(app, "glossary")) == {"glossary:fresh"}
    assert app.reconcile().clean


def test_a_pivot_that_fails_undoes_every_part_exactly(app: SagaRunner) -> None:
    sid = app.create("summaries", {"body": "old"}, embedding=v(1), metadata={"k": 1}).keys[0]
    app.create("glossary", {"term": "kept", "meaning": "m"}, embedding=v(2), document="d")
    before = everything(app)

    def block() -> None:
        with app.atomic() as unit:
            unit.update("summaries", sid, {"body": "new"}, embedding=v(9), metadata={"x": 2})
            unit.delete("glossary", "kept")
            # No summary 999: the foreign key fails inside the pivot's transaction.
            unit.create("constraints", {"summary_id": 999, "text": "c"}, embedding=v(3))

    with pytest.raises(DataIntegrityError):
        block()

    assert everything(app) == before  # rows, and vectors bit for bit
    assert app.in_flight() == []
    assert app.reconcile().clean


def test_a_chroma_failure_in_the_second_collection_undoes_the_first(
    app: SagaRunner,
) -> None:
    before = everything(app)

    class FailingConstraints:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def upsert(self, collection: str, records: Any) -> None:
            if collection == "constraints" and records:
                raise VectorStoreUnavailable("injected: the constraints upsert fails")
            self._inner.upsert(collection, records)

    faulty = rewired(app, vectors=FailingConstraints(app.stores.vectors))

    def block() -> None:
        with faulty.atomic() as unit:
            sid = unit.create("summaries", {"body": "s"}, embedding=v(1))
            unit.create("constraints", {"summary_id": sid, "text": "c"}, embedding=v(2))

    with pytest.raises(DataIntegrityError):
        block()

    assert everything(app) == before
    assert app.reconcile().clean


def test_bad_input_is_refused_at_the_call_and_adds_nothing(app: SagaRunner) -> None:
    app.create("glossary", {"term": "t", "meaning": "m"}, embedding=v(1))
    with app.atomic() as unit:
        with pytest.raises(ValidationError) as unknown:
            unit.create("summaries", {"body": "s", "nope": 1}, embedding=v(1))
        assert unknown.value.field == "row.nope"
        with pytest.raises(ValidationError) as dimension:
            unit.create("glossary", {"term": "u", "meaning": "m"}, embedding=[1.0])
        assert dimension.value.field == "embedding"
        with pytest.raises(ValidationError) as untracked:
            unit.create("untracked", {"x": 1}, embedding=v(1))
        assert untracked.value.field == "table"
        unit.delete("glossary", "t")
        with pytest.raises(ValidationError) as twice:
            unit.update("glossary", "t", {"meaning": "again"})
        assert twice.value.field == "key"
        unit.create("glossary", {"term": "x", "meaning": "m"}, embedding=v(2))

    assert unit.result is not None
    assert unit.result.keys == ("t", "x")  # only what was accepted
    assert set(table_rows(app, "glossary")) == {"x"}
    assert table_rows(app, "summaries") == {}
    assert set(stored_vectors(app, "glossary")) == {"glossary:x"}
    assert app.reconcile().clean


def test_a_missing_row_refuses_the_whole_unit_in_pending(app: SagaRunner) -> None:
    before = everything(app)
    reserved: list[int] = []

    def block() -> None:
        with app.atomic() as unit:
            reserved.append(unit.create("summaries", {"body": "s"}, embedding=v(1)))
            unit.delete("glossary", "absent")

    with pytest.raises(RecordNotFoundError):
        block()
    [sid] = reserved
    assert everything(app) == before
    assert app.in_flight() == []
    assert app.create("summaries", {"body": "t"}, embedding=v(1)).keys[0] > sid


def test_a_reserved_key_is_held_until_the_unit_ends(app: SagaRunner) -> None:
    with app.atomic() as unit:
        sid = unit.create("summaries", {"body": "s"}, embedding=v(1))
        with pytest.raises(SagaConflictError):
            app.create("summaries", {"id": sid, "body": "other"}, embedding=v(2))
        other = app.create("summaries", {"body": "other"}, embedding=v(2)).keys[0]
        assert other != sid
    assert table_rows(app, "summaries")[sid]["body"] == "s"
    assert app.reconcile().clean


def test_recovery_undoes_an_unsealed_unit_whose_owner_is_gone(tmp_path: Path) -> None:
    clock = Clock()
    dead = open_app(tmp_path, clock)
    unit = dead.atomic()
    sid = unit.create("summaries", {"body": "s"}, embedding=v(1))
    dead.close()  # the block never ends (a crash would look the same to the log)
    clock.offset += dt.timedelta(seconds=31)  # past the dead runner's lease
    with open_app(tmp_path, clock) as runner:
        assert [s.definition for s in runner.in_flight()] == ["atomic"]
        report = runner.recover(policy="resume")  # resume, yet it can only be undone
        assert report.compensated_ids == (report.compensated_ids[0],)
        assert runner.in_flight() == []
        assert table_rows(runner, "summaries") == {}
        assert runner.create("summaries", {"body": "t"}, embedding=v(1)).keys[0] > sid
        assert runner.reconcile().clean


def test_an_empty_unit_runs_nothing(app: SagaRunner) -> None:
    with app.atomic() as unit:
        pass
    assert unit.result is None
    assert sql(app.stores.log.db.path, "SELECT COUNT(*) FROM saga_instances") == [(0,)]
    with pytest.raises(SagaError, match="ended"):
        unit.create("summaries", {"body": "late"}, embedding=v(1))


def test_saga_show_names_a_units_parts_and_reserved_keys(tmp_path: Path) -> None:
    with open_app(tmp_path) as runner:
        unit = runner.atomic()
        sid = unit.create("summaries", {"body": "s"}, embedding=v(1))
        unit.update("glossary", "t", {"meaning": "m"})
        shown = run_saga("show", unit.saga_id[:8], "--db", str(tmp_path / "app.db"), "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert (data["definition"], data["state"]) == ("atomic", "pending")
        assert data["payload"]["sealed"] is False
        assert data["payload"]["reserved"] == [f"summaries:{sid}"]
        with pytest.raises(RecordNotFoundError):  # glossary 't' does not exist
            unit.__exit__(None, None, None)
        shown = run_saga("show", unit.saga_id, "--db", str(tmp_path / "app.db"), "--json")
        data = json.loads(shown.stdout)
        assert data["state"] == "failed"
        assert [h["event"] for h in data["history"]] == ["begin", "compensate", "compensated"]
