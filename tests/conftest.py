"""Shared fixtures: real SQLite files and a real embedded Chroma in a temp folder."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from saga import RetryPolicy, SagaRunner, failpoints

DIM = 4

SCHEMA = """
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    score REAL CHECK (score IS NULL OR score >= 0),
    vector_id TEXT
);
"""


def rewired(runner: SagaRunner, **stores: Any) -> SagaRunner:
    """A runner like ``runner`` (same clock, lease, limits, definitions) whose stores are
    replaced where given: ``rewired(runner, vectors=FaultProxy(runner.stores.vectors))``.
    It shares the other stores, so closing ``runner`` closes it too."""
    return SagaRunner.from_stores(
        attrs.evolve(runner.stores, **stores),
        clock=runner.clock,
        lease=runner.lease,
        limits=runner.limits,
        definitions=runner._services.definitions,
    )


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on ``db`` through a fresh connection (not the runner's), committed."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            return [tuple(r) for r in conn.execute(statement, params)]
    finally:
        conn.close()


ROOT = Path(__file__).resolve().parent.parent


def run_saga(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process (``python -m saga ...``), from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "saga", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stored_vectors(runner: SagaRunner, collection: str = "notes") -> dict[str, Any]:
    """Every vector of a collection: (float32 embedding bytes, document, metadata). The
    bytes compare bit for bit whatever the client: a server sends float32 values as short
    decimals (54.1), the embedded client as their exact doubles (54.0999984...)."""
    ids = [r.id for page in runner.stores.vectors.iter_records(collection, 1000) for r in page]
    found = runner.stores.vectors.get(collection, ids, embeddings=True)
    return {
        vid: (array("f", r.embedding or ()).tobytes(), r.document, r.metadata)
        for vid, r in found.items()
    }


def make_db(path: Path) -> Path:
    """An application database with one table, ``notes``."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.commit()
    conn.close()
    return path


def vec(seed: float, dim: int = DIM) -> list[float]:
    """A small deterministic embedding."""
    return [float(seed) + i / 10 for i in range(dim)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_db(tmp_path / "app.db")


@pytest.fixture
def chroma_path(tmp_path: Path) -> Path:
    return tmp_path / "chroma"


@pytest.fixture
def runner(db_path: Path, chroma_path: Path) -> Iterator[SagaRunner]:
    """A runner with retries off (tests want to see the first failure)."""
    with SagaRunner.open(db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled()) as r:
        r.track("notes")
        yield r


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    """Every test starts and ends with no failpoint armed."""
    failpoints.configure("")
    yield
    failpoints.configure("")


def rows(db: Path, table: str = "notes") -> dict[object, dict[str, object]]:
    """Every row of a table, read with a fresh connection (not the runner's)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}
    finally:
        conn.close()


def saga_state(db: Path, saga_id: str) -> str | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT state FROM saga_instances WHERE saga_id = ?", (saga_id,)
        ).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def vector_ids(runner: SagaRunner, collection: str = "notes") -> set[str]:
    """Every vector id stored in a collection."""
    return {r.id for page in runner.stores.vectors.iter_records(collection, 1000) for r in page}
