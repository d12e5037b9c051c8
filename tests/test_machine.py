"""The state machine: the create saga's exact states and edges, illegal moves refused,
and a third-party saga with an extra step driven end to end by the real engine."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from saga import (
    IllegalTransitionError,
    Item,
    SagaContext,
    SagaDefinition,
    SagaMachine,
    SagaRunner,
    VectorRecord,
    failpoints,
)
from saga._engine import Outcome
from steps import CREATE, DEFINITIONS, CommitRows, WriteVectors
from tests._probe import history, payloads, query, saga_row
from tests.conftest import rewired, rows, vec, vector_ids

CREATE_STATES = {
    "pending",
    "vector_written",
    "sqlite_committed",
    "synced",
    "compensating",
    "failed",
}
# The design's diagram, edge by edge: (source, event, destination).
CREATE_EDGES = [
    ("compensating", "compensated", "failed"),
    ("pending", "compensate", "compensating"),
    ("pending", "write_vectors", "vector_written"),
    ("sqlite_committed", "finish", "synced"),
    ("vector_written", "commit_rows", "sqlite_committed"),
    ("vector_written", "compensate", "compensating"),
]


# -- the create definition --------------------------------------------------------------


def test_create_has_exactly_the_designed_states() -> None:
    assert set(SagaMachine(CREATE).state_names()) == CREATE_STATES


def test_create_has_exactly_the_designed_transitions() -> None:
    assert SagaMachine(CREATE).table() == CREATE_EDGES


@pytest.mark.parametrize("name", sorted(set(DEFINITIONS) - {"adopt"}))
def test_every_dual_write_definition_has_the_same_shape(name: str) -> None:
    """Batches and update/delete differ from create in what they do, not in states."""
    machine = SagaMachine(DEFINITIONS[name])

    assert set(machine.state_names()) == CREATE_STATES
    assert machine.table() == CREATE_EDGES


def test_adopt_drops_the_legacy_vectors_after_its_pivot_and_only_rolls_forward() -> None:
    """``saga adopt``'s definition: one step more than a dual write, after the pivot."""
    machine = SagaMachine(DEFINITIONS["adopt"])

    assert machine.table() == [
        ("compensating", "compensated", "failed"),
        ("legacy_dropped", "finish", "synced"),
        ("pending", "compensate", "compensating"),
        ("pending", "copy_vectors", "vector_written"),
        ("sqlite_committed", "drop_legacy", "legacy_dropped"),
        ("vector_written", "compensate", "compensating"),
        ("vector_written", "point_rows", "sqlite_committed"),
    ]
    assert not machine.can_compensate("sqlite_committed")
    assert not machine.can_compensate("legacy_dropped")


def test_the_pivot_of_create_is_the_sqlite_commit() -> None:
    machine = SagaMachine(CREATE)

    assert CREATE.pivot == "commit_rows"
    assert [s for s in ("pending", "vector_written") if machine.can_compensate(s)] == [
        "pending",
        "vector_written",
    ]
    assert not machine.can_compensate("sqlite_committed")


@pytest.mark.parametrize(("source", "event", "dest"), CREATE_EDGES)
def test_every_designed_move_is_allowed(source: str, event: str, dest: str) -> None:
    assert SagaMachine(CREATE).next_state(source, event) == dest


_EVENTS = sorted({event for _, event, _ in CREATE_EDGES} | {"begin"})
_ILLEGAL = sorted(
    (source, event)
    for source, event in itertools.product(sorted(CREATE_STATES), _EVENTS)
    if (source, event) not in {(s, e) for s, e, _ in CREATE_EDGES}
)


@pytest.mark.parametrize(("source", "event"), _ILLEGAL, ids=[f"{s}-{e}" for s, e in _ILLEGAL])
def test_every_other_move_is_illegal(source: str, event: str) -> None:
    with pytest.raises(IllegalTransitionError):
        SagaMachine(CREATE).next_state(source, event)


@pytest.mark.parametrize(
    ("source", "event"),
    [
        ("synced", "compensate"),
        ("pending", "commit_rows"),
        ("sqlite_committed", "compensate"),
        ("pending", "finish"),
        ("compensating", "write_vectors"),
        *(("failed", event) for event in _EVENTS),
    ],
)
def test_named_illegal_moves_are_refused(source: str, event: str) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        SagaMachine(CREATE).next_state(source, event)
    assert event in str(caught.value)
    assert source in str(caught.value)


def test_an_unknown_event_is_illegal() -> None:
    with pytest.raises(IllegalTransitionError):
        SagaMachine(CREATE).next_state("pending", "teleport")


def test_the_engine_refuses_an_illegal_move_before_persisting_it(
    runner: SagaRunner, db_path: Path
) -> None:
    result = runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
    loaded = runner.stores.log.load(result.saga_id)
    assert loaded is not None
    saga, _payload = loaded
    ctx = SagaContext(
        saga_id=saga.saga_id,
        op="create",
        spec=runner.spec("notes"),
        items=[Item(key=1)],
        vectors=runner.stores.vectors,
    )
    before = history(db_path, result.saga_id)

    with pytest.raises(IllegalTransitionError):
        runner._services.engine._persist(SagaMachine(CREATE), saga, ctx, ["compensate"])

    assert history(db_path, result.saga_id) == before
    assert saga_row(db_path, result.saga_id)["state"] == "synced"  # type: ignore[index]


# -- definitions are checked when built -------------------------------------------------


@attrs.frozen
class _Named:
    name: str
    reaches: str
    local: bool = True

    def prepare(self, ctx: SagaContext, txn: sqlite3.Connection) -> None:
        pass

    def forward(self, ctx: SagaContext, txn: sqlite3.Connection | None) -> None:
        pass

    def compensate(self, ctx: SagaContext) -> None:
        pass


@pytest.mark.parametrize(
    ("steps", "pivot"),
    [
        ((), "x"),
        ((_Named("a", "a_done"),), "b"),
        ((_Named("finish", "done"),), "finish"),
        ((_Named("a", "pending"),), "a"),
        ((_Named("a", "synced"),), "a"),
        ((_Named("a", "x"), _Named("a", "y")), "a"),
        ((_Named("a", "x"), _Named("b", "x")), "a"),
        ((_Named("Bad-Name", "x"),), "Bad-Name"),
    ],
    ids=[
        "no-steps",
        "unknown-pivot",
        "reserved-event",
        "reserved-state-pending",
        "reserved-state-synced",
        "repeated-step",
        "repeated-state",
        "bad-name",
    ],
)
def test_a_malformed_definition_is_refused(steps: tuple[Any, ...], pivot: str) -> None:
    with pytest.raises(ValueError, match="saga"):
        SagaDefinition(name="custom", steps=steps, pivot=pivot)


# -- a third-party saga with an extra step ----------------------------------------------

AUDIT_SCHEMA = "CREATE TABLE audit_log (saga_id TEXT PRIMARY KEY, record_key INTEGER NOT NULL)"


@attrs.frozen
class AuditStep:
    """A local step: an ``audit_log`` row, committed with the ``audited`` state.

    Its compensation opens its own connection (steps get no transaction to undo in).
    ``journal`` records what ran, in order; it is left out of equality and hashing.
    """

    db_path: Path
    journal: list[str] = attrs.field(factory=list, eq=False)
    name: str = "audit"
    reaches: str = "audited"
    local: bool = True

    def prepare(self, ctx: SagaContext, txn: sqlite3.Connection) -> None:
        txn.execute("SELECT 1 FROM audit_log LIMIT 0")  # fail in pending if it is missing

    def forward(self, ctx: SagaContext, txn: sqlite3.Connection | None) -> None:
        assert txn is not None
        txn.executemany(
            "INSERT OR IGNORE INTO audit_log (saga_id, record_key) VALUES (?, ?)",
            [(ctx.saga_id, item.key) for item in ctx.items],
        )
        self.journal.append("audit.forward")

    def compensate(self, ctx: SagaContext) -> None:
        conn = sqlite3.connect(self.db_path, timeout=5)
        try:
            with conn:
                conn.execute("DELETE FROM audit_log WHERE saga_id = ?", (ctx.saga_id,))
        finally:
            conn.close()
        self.journal.append("audit.compensate")


class _JournalingVectors:
    """The runner's real vector store, noting each write in ``journal``."""

    def __init__(self, store: Any, journal: list[str]) -> None:
        self._store = store
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None:
        if records:
            self._journal.append("vectors.upsert")
        self._store.upsert(collection, records)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._journal.append("vectors.delete")
        self._store.delete(collection, ids)


@pytest.fixture
def audit(runner: SagaRunner, db_path: Path) -> AuditStep:
    conn = sqlite3.connect(db_path)
    conn.execute(AUDIT_SCHEMA)
    conn.close()
    return AuditStep(db_path)


@pytest.fixture
def audited(runner: SagaRunner, audit: AuditStep) -> SagaRunner:
    """``runner`` over its real vector store, journaled into ``audit.journal``."""
    return rewired(runner, vectors=_JournalingVectors(runner.stores.vectors, audit.journal))


def _audited_create(audit: AuditStep) -> SagaDefinition:
    return SagaDefinition(
        name="audited_create",
        steps=(WriteVectors("create"), audit, CommitRows("create")),
        pivot="commit_rows",
    )


def _drive(runner: SagaRunner, definition: SagaDefinition, key: int) -> Any:
    item = Item(key=key, row={"body": f"note {key}"}, embedding=tuple(vec(key)), document="d")
    saga, ctx = runner._services.engine.begin(definition, runner.spec("notes"), "create", [item])
    return runner._services.engine.drive(definition, saga, ctx)


def test_a_custom_definition_has_the_extra_state_before_the_pivot(audit: AuditStep) -> None:
    machine = SagaMachine(_audited_create(audit))

    assert set(machine.state_names()) == CREATE_STATES | {"audited"}
    assert ("vector_written", "audit", "audited") in machine.table()
    assert ("audited", "commit_rows", "sqlite_committed") in machine.table()
    assert ("audited", "compensate", "compensating") in machine.table()


def test_a_custom_saga_with_an_extra_step_runs_end_to_end(
    audited: SagaRunner, db_path: Path, audit: AuditStep
) -> None:
    definition = _audited_create(audit)
    audited.register(definition)

    settled = _drive(audited, definition, 1)

    assert settled.outcome is Outcome.SYNCED
    saga_id = settled.saga.saga_id
    assert history(db_path, saga_id) == [
        ("begin", None, "pending"),
        ("write_vectors", "pending", "vector_written"),
        ("audit", "vector_written", "audited"),
        ("commit_rows", "audited", "sqlite_committed"),
        ("finish", "sqlite_committed", "synced"),
    ]
    assert saga_row(db_path, saga_id)["definition"] == "audited_create"  # type: ignore[index]
    assert query(db_path, "SELECT * FROM audit_log") == [{"saga_id": saga_id, "record_key": 1}]
    assert rows(db_path)[1]["vector_id"] == "notes:1"
    assert vector_ids(audited) == {"notes:1"}
    assert payloads(db_path) == {}
    assert audit.journal == ["vectors.upsert", "audit.forward"]


def test_a_custom_saga_compensates_the_steps_before_the_pivot_in_reverse(
    audited: SagaRunner, db_path: Path, audit: AuditStep
) -> None:
    definition = _audited_create(audit)
    audited.register(definition)

    with failpoints.armed("sqlite.commit_rows=raise:sqlite-ioerror"):
        settled = _drive(audited, definition, 1)

    assert settled.outcome is Outcome.FAILED
    saga_id = settled.saga.saga_id
    assert history(db_path, saga_id) == [
        ("begin", None, "pending"),
        ("write_vectors", "pending", "vector_written"),
        ("audit", "vector_written", "audited"),
        ("compensate", "audited", "compensating"),
        ("compensated", "compensating", "failed"),
    ]
    assert audit.journal == [
        "vectors.upsert",
        "audit.forward",
        "audit.compensate",
        "vectors.delete",
    ]
    assert query(db_path, "SELECT * FROM audit_log") == []
    assert rows(db_path) == {}
    assert vector_ids(audited) == set()
    assert payloads(db_path) == {}


def test_a_failing_extra_step_rolls_back_and_compensates_what_ran_before_it(
    audited: SagaRunner, db_path: Path, audit: AuditStep
) -> None:
    definition = _audited_create(audit)
    audited.register(definition)

    with failpoints.armed("during:audit=raise"):
        settled = _drive(audited, definition, 1)

    assert settled.outcome is Outcome.FAILED
    assert history(db_path, settled.saga.saga_id) == [
        ("begin", None, "pending"),
        ("write_vectors", "pending", "vector_written"),
        ("compensate", "vector_written", "compensating"),
        ("compensated", "compensating", "failed"),
    ]
    # The step in flight is compensated too (harmlessly), then the vector is deleted.
    assert audit.journal == [
        "vectors.upsert",
        "audit.forward",
        "audit.compensate",
        "vectors.delete",
    ]
    assert query(db_path, "SELECT * FROM audit_log") == []
    assert rows(db_path) == {}
    assert vector_ids(audited) == set()
