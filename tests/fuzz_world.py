"""The fuzz tests' world: one runner on real stores, and a model of what was acknowledged.

What is fuzzed, the checks and the profiles are described in ``tests/fuzz_strategies.py``.
Here: the stores and their model (``World``), the whole-or-nothing checks (``attempt``,
``assert_refused``), and the helpers that seed rows and strand sagas. Each test file
builds its ``world`` fixture with ``opened_world``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event

from saga import (
    Limits,
    RetryPolicy,
    SagaError,
    SagaResult,
    SagaRunner,
    ValidationError,
    failpoints,
)
from tests._probe import sync_states

# -- the world: one runner, and a model of what was acknowledged ---------------------------

DIM = 4
LIMITS = Limits(max_document_chars=2_000, max_key_chars=64, max_batch_items=6, max_metadata_keys=8)
RESERVED = ("sqlite_table", "sqlite_record_id", "saga_id")
# Untyped columns keep what was bound (no affinity conversion), so "what was sent"
# and "what is stored" can be compared exactly.
SCHEMA = """
CREATE TABLE notes (id INTEGER PRIMARY KEY, body NOT NULL, extra, vector_id TEXT);
CREATE TABLE docs (id TEXT PRIMARY KEY, body, extra, vector_id TEXT);
CREATE TABLE plain (id INTEGER PRIMARY KEY, body, vector_id TEXT);
"""
TABLES = ("notes", "docs")
ROTATE = 200  # examples on one set of stores (the long profile's would grow too big)


class World:
    """The runner under test and a model of every acknowledged write."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fresh = itertools.count(1)
        self._generation = 0
        self.start()

    def start(self) -> None:
        """New stores: a database with the schema, a Chroma folder, both tables tracked."""
        self._generation += 1
        here = self.folder / f"stores-{self._generation}"
        here.mkdir()
        self.db = here / "app.db"
        conn = sqlite3.connect(self.db)
        conn.executescript(SCHEMA)
        conn.close()
        self.runner = SagaRunner.open(
            self.db, chroma_path=here / "chroma", retry=RetryPolicy.disabled(), limits=LIMITS
        )
        for table in TABLES:
            self.runner.track(table, dimension=DIM)
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
        self.vectors: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
        self.tracked: dict[str, tuple[str, str, str, int | None]] = {
            t: (t, "id", "vector_id", DIM) for t in TABLES
        }

    def fresh(self) -> int:
        """A number no earlier example of this test used (a fresh key space). Every
        ``ROTATE`` examples the stores start over: each example snapshots them whole."""
        number = next(self._fresh)
        if number % ROTATE == 0:
            self.runner.close()
            self.start()
        return number

    # -- the model ----------------------------------------------------------------------

    def put(
        self,
        table: str,
        key: Any,
        row: dict[str, Any],
        embedding: Any,
        document: str | None,
        metadata: dict[str, Any] | None,
        saga_id: str,
    ) -> None:
        stored = {"id": key, "body": None, "extra": None, **row, "vector_id": f"{table}:{key}"}
        self.rows[table][key] = {name: as_stored(value) for name, value in stored.items()}
        self.vectors[table][key] = {
            "embedding": as_float32(embedding),
            "document": document,
            "metadata": normalised(metadata or {}),
            "saga_id": saga_id,
        }

    def change(
        self,
        table: str,
        key: Any,
        changes: dict[str, Any],
        embedding: Any,
        document: str | None,
        metadata: dict[str, Any] | None,
        saga_id: str,
    ) -> None:
        """An update: omitted vector fields keep their stored value."""
        self.rows[table][key].update({n: as_stored(v) for n, v in changes.items()})
        vector = self.vectors[table][key]
        if embedding is not None:
            vector["embedding"] = as_float32(embedding)
        if document is not None:
            vector["document"] = document
        if metadata is not None:
            vector["metadata"] = normalised(metadata)
        vector["saga_id"] = saga_id

    def drop(self, table: str, key: Any) -> None:
        del self.rows[table][key]
        del self.vectors[table][key]

    def collections(self) -> set[str]:
        return {c.name for c in self.runner.stores.vectors.client.list_collections()}

    def exists(self, table: str, key: Any) -> bool:
        try:
            return key in self.rows[table]
        except TypeError:  # unhashable: certainly not a stored key
            return False

    # -- the stores ---------------------------------------------------------------------

    def snapshot(self) -> tuple[Any, Any]:
        """Every SQLite table and every Chroma collection (ids, documents, metadata)."""
        conn = sqlite3.connect(self.db)
        try:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            tables = {
                name: conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
                for name in sorted(names)
            }
        finally:
            conn.close()
        collections = {}
        for collection in self.runner.stores.vectors.client.list_collections():
            found = collection.get(include=["documents", "metadatas"])
            collections[collection.name] = sorted(
                zip(
                    found["ids"],
                    found["documents"],
                    [sorted((m or {}).items()) for m in found["metadatas"]],
                    strict=True,
                )
            )
        return tables, collections

    def check(self) -> None:
        """The stores hold exactly the model; nothing is in flight."""
        for table in TABLES:
            assert stored_rows(self.db, table) == self.rows[table], table
            assert_same_vectors(stored_vectors(self.runner, self.db, table), self.vectors[table])
        assert self.runner.in_flight() == []
        conn = sqlite3.connect(self.db)
        try:
            assert conn.execute("SELECT count(*) FROM pending_vectors").fetchone()[0] == 0
        finally:
            conn.close()


def as_stored(value: Any) -> Any:
    """What SQLite gives back for a value the validator let through."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def as_float32(embedding: Any) -> tuple[float, ...]:
    values = embedding.tolist() if hasattr(embedding, "tolist") else embedding
    return tuple(float(np.float32(float(v))) for v in values)


def normalised(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata with its types made plain (numpy floats are floats), for comparing."""
    return {
        k: (type(v).__name__ if not isinstance(v, float) else "float", v)
        for k, v in metadata.items()
    }


def assert_same_vectors(stored: dict[Any, Any], model: dict[Any, Any]) -> None:
    """Exact, except metadata floats: Chroma 1.5 keeps them to about 16 significant
    digits, not 17, so a third of all doubles come back one ulp off (not the library's
    doing; but see test_reconcile_sees_no_drift_in_a_float_metadata_value)."""
    assert set(stored) == set(model)
    for key, want in model.items():
        got = stored[key]
        assert {**got, "metadata": None} == {**want, "metadata": None}, key
        assert got["metadata"].keys() == want["metadata"].keys(), key
        for name, (kind, value) in want["metadata"].items():
            got_kind, got_value = got["metadata"][name]
            assert got_kind == kind, (key, name)
            if kind == "float":
                assert math.isclose(got_value, value, rel_tol=1e-15), (key, name)
            else:
                assert got_value == value, (key, name)


def stored_rows(db: Path, table: str) -> dict[Any, dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}
    finally:
        conn.close()


def stored_vectors(runner: SagaRunner, db: Path, table: str) -> dict[Any, dict[str, Any]]:
    """Every vector of ``table``'s collection by key, with its metadata exactly as
    stored (the caller's: the library adds no key) and the saga the log says wrote it
    (``vector_sync_state``, which also gives the key, with its type)."""
    ids = [r.id for page in runner.stores.vectors.iter_records(table, 1000) for r in page]
    states = sync_states(db)
    found: dict[Any, dict[str, Any]] = {}
    for vector_id, record in runner.stores.vectors.get(table, ids, embeddings=True).items():
        state = states.get(vector_id)
        assert state is not None, f"{vector_id}: in Chroma, not in vector_sync_state"
        key = state["sqlite_record_id"]
        assert (vector_id, state["sqlite_table"], state["sync_status"]) == (
            f"{table}:{key}",
            table,
            "synced",
        )
        found[key] = {
            "embedding": record.embedding,
            "document": record.document,
            "metadata": normalised(dict(record.metadata or {})),
            "saga_id": state["saga_id"],
        }
    return found


@contextlib.contextmanager
def opened_world(folder: Path) -> Iterator[World]:
    """A ``World`` in ``folder``, its runner closed at the end (each test file's
    ``world`` fixture: one per test function)."""
    world = World(folder)
    try:
        yield world
    finally:
        world.runner.close()


def attempt(world: World, call: Callable[[], SagaResult], ok: bool) -> SagaResult | None:
    """Run ``call``: refused whole (stores unchanged) or, if ``ok``, accepted."""
    before = world.snapshot()
    refused: ValidationError | None = None
    try:
        result = call()
    except ValidationError as exc:
        refused = exc
    except SagaError as error:  # typed, but not a refusal: the stores were written to
        pytest.fail(f"{type(error).__name__} for {'good' if ok else 'bad'} input: {error}")
    if refused is not None:
        assert_refused(world, before, refused, ok)
        return None
    assert ok, "bad input accepted"
    assert result.state == "synced"
    event("accepted")
    return result


def assert_refused(world: World, before: Any, refused: ValidationError, ok: bool) -> None:
    assert isinstance(refused.field, str), refused
    assert refused.field, refused
    assert world.snapshot() == before, f"a refused call changed the stores: {refused}"
    assert not ok, f"good input refused: {refused}"
    event(f"refused: {type(refused).__name__}")


# -- committed rows to change -----------------------------------------------------------

SEED = ([0.5, 0.25, -1.0, 2.0], {"seed": 1})


def seed_keys(world: World, table: str, fresh: int, count: int) -> list[Any]:
    """Committed rows and vectors to update or delete (one saga; in the model too)."""
    keys = [f"seed#{fresh}.{i}" if table == "docs" else fresh * 16 + i for i in range(count)]
    embedding, metadata = SEED
    result = world.runner.create_many(
        table,
        [
            {
                "row": {"id": key, "body": "seed"},
                "embedding": embedding,
                "document": f"seed {key!r}",
                "metadata": metadata,
            }
            for key in keys
        ],
    )
    for key in keys:
        world.put(
            table, key, {"body": "seed"}, embedding, f"seed {key!r}", metadata, result.saga_id
        )
    return keys


def good_create(world: World, key: Any, table: str = "notes", **override: Any) -> Any:
    arguments: dict[str, Any] = {
        "row": {"id": key, "body": "b"},
        "embedding": [0.5, 0.25, -1.0, 2.0],
        "document": "doc",
        "metadata": {"k": "v"},
        **override,
    }
    return world.runner.create(table, arguments.pop("row"), **arguments)


# -- a stranded saga: a create that "died" mid-way, for recovery to settle -------------------


class FuzzCrash(BaseException):
    """A process death in the middle of a saga (the engine catches only Exception)."""


failpoints.register_error("fuzz-crash", FuzzCrash)


def strand(world: World, key: int) -> str:
    """A create that 'dies' right after ``pending``; its lease then freed (as a dead
    runner's is, once expired). Returns the saga id."""
    known = {saga.saga_id for saga in world.runner.in_flight()}
    with failpoints.armed("after:pending=raise:fuzz-crash"), pytest.raises(FuzzCrash):
        good_create(world, key)
    (saga_id,) = {saga.saga_id for saga in world.runner.in_flight()} - known
    conn = sqlite3.connect(world.db)
    with conn:
        conn.execute(
            "UPDATE saga_instances SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE saga_id = ?",
            (saga_id,),
        )
    conn.close()
    return saga_id


def rewrite_payload(db: Path, saga_id: str, tamper: Callable[[str], str]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        (payload,) = conn.execute(
            "SELECT payload FROM pending_vectors WHERE temp_id = ?", (saga_id,)
        ).fetchone()
        conn.execute(
            "UPDATE pending_vectors SET payload = ? WHERE temp_id = ?", (tamper(payload), saga_id)
        )
    conn.close()
