"""Read-only probes of the real stores, from outside the runner under test.

Every helper opens its own connection (plain ``sqlite3``, or a fresh Chroma adapter), so
what a test asserts is what is on disk, not what the runner believes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from saga import ChromaTimeouts, RetryPolicy, VectorRecord

REPO = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 60.0  # seconds; a worker normally dies in about one


def query(db: Path, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Every row of ``sql`` as dicts, read with a fresh connection."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, tuple(params))]
    finally:
        conn.close()


def saga_rows(db: Path) -> list[dict[str, Any]]:
    """Every saga in ``saga_instances``, oldest first."""
    return query(db, "SELECT * FROM saga_instances ORDER BY created_at, saga_id")


def saga_row(db: Path, saga_id: str) -> dict[str, Any] | None:
    found = query(db, "SELECT * FROM saga_instances WHERE saga_id = ?", (saga_id,))
    return found[0] if found else None


def history(db: Path, saga_id: str) -> list[tuple[str, str | None, str]]:
    """A saga's history as ``(event, from_state, to_state)``, in the order written."""
    found = query(
        db,
        "SELECT event, from_state, to_state FROM saga_history WHERE saga_id = ? ORDER BY id",
        (saga_id,),
    )
    return [(r["event"], r["from_state"], r["to_state"]) for r in found]


def payloads(db: Path) -> dict[str, str]:
    """``pending_vectors``: saga id -> payload."""
    return {r["temp_id"]: r["payload"] for r in query(db, "SELECT * FROM pending_vectors")}


def sync_states(db: Path) -> dict[str, dict[str, Any]]:
    """``vector_sync_state`` by vector id."""
    return {r["vector_id"]: r for r in query(db, "SELECT * FROM vector_sync_state")}


def log_snapshot(db: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table the library writes, plus the application's ``notes``."""
    tables = (
        "saga_instances",
        "saga_history",
        "pending_vectors",
        "vector_sync_state",
        "saga_tracked_tables",
        "notes",
    )
    return {t: query(db, f"SELECT * FROM {t} ORDER BY rowid") for t in tables}


def stored_vectors(chroma_path: Path, collection: str = "notes") -> dict[str, VectorRecord]:
    """Every vector of a collection in an embedded Chroma folder, embeddings included.

    Open it only when no other process has the folder open (the adapter refuses that).
    """
    from stores.chroma import ChromaVectorStore  # noqa: PLC0415 - keep chromadb out of imports

    store = ChromaVectorStore.embedded(
        chroma_path, retry=RetryPolicy.disabled(), timeouts=ChromaTimeouts()
    )
    try:
        ids = [r.id for page in store.iter_records(collection, 1000) for r in page]
        return store.get(collection, ids, embeddings=True)
    finally:
        store.close()


def worker_embedding(key: int) -> list[float]:
    """The embedding the worker writes for ``key`` (``tests.conftest.vec``; the worker
    does not import conftest, and so pytest, to start faster)."""
    return [float(key) + i / 10 for i in range(4)]


def start_worker(db: Path, chroma_path: Path, key: int, failpoints: str) -> subprocess.Popen[str]:
    """Start creating note ``key`` in a child process with ``SAGA_FAILPOINTS=failpoints``.

    The child (``tests._crash_worker``) arms them with ``failpoints.load_from_env()``.
    """
    env = {**os.environ, "SAGA_FAILPOINTS": failpoints}
    return subprocess.Popen(
        [sys.executable, "-m", "tests._crash_worker", str(db), str(chroma_path), str(key)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_worker(worker: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for a worker (killing it if it hangs) and collect what it printed."""
    try:
        out, err = worker.communicate(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
    return subprocess.CompletedProcess(worker.args, worker.returncode, out, err)


def run_worker(
    db: Path, chroma_path: Path, key: int, failpoints: str
) -> subprocess.CompletedProcess[str]:
    """Create note ``key`` in a child process with ``SAGA_FAILPOINTS=failpoints``."""
    return finish_worker(start_worker(db, chroma_path, key, failpoints))
