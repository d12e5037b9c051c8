"""`saga rebuild` / `runner.rebuild()`: Chroma re-created from the saga log (issue 13)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from chromadb.api.client import SharedSystemClient

from saga import DataIntegrityError, SagaRunner, VectorStoreUnreadable
from tests.conftest import run_saga, stored_vectors, vec

ROOT = Path(__file__).resolve().parent.parent


def _workload(runner: SagaRunner) -> None:
    """Creates, updates, deletes, batches, and a compensated update."""
    runner.create_many(
        "notes",
        [
            {
                "row": {"id": k, "body": f"n{k}"},
                "embedding": [k / 7, 1 / 3, 0.1, 1e-7],
                "document": f"d{k}",
                "metadata": {"k": k, "f": k / 3},
            }
            for k in range(1, 40)
        ],
    )
    runner.create("notes", {"body": "assigned"}, embedding=vec(50), document=None)
    runner.update("notes", 3, {"body": "u"}, embedding=vec(33), metadata={"new": True})
    runner.update("notes", 4, {"body": "only the row"})
    runner.delete("notes", 5)
    runner.delete_many("notes", [6, 7])
    with contextlib.suppress(DataIntegrityError):  # the CHECK fails: compensated
        runner.update("notes", 8, {"score": -1.0}, embedding=vec(88))


def test_a_deleted_chroma_folder_is_rebuilt_exactly(
    runner: SagaRunner, db_path: Path, chroma_path: Path
) -> None:
    _workload(runner)
    before = stored_vectors(runner)
    runner.close()
    shutil.rmtree(chroma_path)

    with SagaRunner.open(db_path, chroma_path=chroma_path) as again:
        assert again.reconcile().missing_vectors  # everything is missing now
        report = again.rebuild()
        assert report.complete
        assert report.rebuilt == len(before)
        assert stored_vectors(again) == before  # ids, float32 embeddings, documents, metadata
        assert again.reconcile().clean
        # Search finds each vector by its own embedding again (an HNSW index is
        # approximate: the order of farther neighbours may differ from before).
        for vector_id, (embedding, _document, _metadata) in sorted(before.items())[::5]:
            probe = array("f")
            probe.frombytes(embedding)
            [hit] = again.query("notes", embedding=probe.tolist(), n_results=1)
            assert (f"notes:{hit.key}", hit.distance) == (vector_id, pytest.approx(0, abs=1e-6))


def test_rebuild_into_a_new_folder_with_the_cli(
    runner: SagaRunner, db_path: Path, tmp_path: Path
) -> None:
    _workload(runner)
    before = stored_vectors(runner)
    runner.close()
    fresh = tmp_path / "moved-to"
    fresh.mkdir()
    done = run_saga(
        "rebuild",
        "--db",
        str(db_path),
        "--chroma-path",
        str(fresh),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rebuilt"] == len(before)
    with SagaRunner.open(db_path, chroma_path=fresh) as moved:
        assert stored_vectors(moved) == before
        assert moved.reconcile().clean


KILLER = """
import sys
from saga import SagaRunner, failpoints
failpoints.load_from_env()
with SagaRunner.open(sys.argv[1], chroma_path=sys.argv[2]) as runner:
    runner.rebuild(page_size=100)
"""


def test_a_rebuild_killed_midway_is_completed_by_the_next(
    db_path: Path, chroma_path: Path, tmp_path: Path
) -> None:
    with SagaRunner.open(db_path, chroma_path=chroma_path) as runner:
        runner.track("notes")
        runner.create_many(
            "notes",
            [{"row": {"id": k, "body": "b"}, "embedding": vec(k)} for k in range(1, 301)],
        )
        before = stored_vectors(runner)
    target = tmp_path / "rebuilt"
    target.mkdir()
    # Pages of 100: the second page's write kills the process.
    env = {**os.environ, "SAGA_FAILPOINTS": "rebuild:page=kill@2"}
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(db_path), str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    with SagaRunner.open(db_path, chroma_path=target) as again:
        assert len(stored_vectors(again)) == 100  # the first page landed, no more
        report = again.rebuild()
        assert report.complete
        assert stored_vectors(again) == before
        assert again.reconcile().clean


def test_rows_whose_vector_the_log_does_not_keep_are_reported(
    runner: SagaRunner, db_path: Path, chroma_path: Path
) -> None:
    """As a database upgraded from schema 4 holds them, before they are written again."""
    _workload(runner)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE vector_sync_state SET embedding = NULL, record = NULL "
            "WHERE vector_id IN ('notes:1', 'notes:2')"
        )
    conn.close()
    runner.close()
    shutil.rmtree(chroma_path)
    with SagaRunner.open(db_path, chroma_path=chroma_path) as again:
        report = again.rebuild()
        assert not report.complete
        assert set(report.not_rebuildable) == {"notes:1", "notes:2"}
        assert set(again.reconcile().missing_vectors) == {"notes:1", "notes:2"}


def test_rebuild_refuses_while_a_live_owner_holds_a_saga(runner: SagaRunner) -> None:
    from saga import SagaError  # noqa: PLC0415
    from saga.extend import Item  # noqa: PLC0415

    item = Item(key=1, row={"body": "b"}, embedding=tuple(vec(1)))
    runner._services.engine.begin(
        runner.definition("create"), runner.spec("notes"), "create", [item]
    )  # held by this live runner
    with pytest.raises(SagaError, match="in flight under a live owner"):
        runner.rebuild()


def test_a_folder_chroma_cannot_read_is_refused_naming_rebuild_then_rebuilt(
    runner: SagaRunner, db_path: Path, chroma_path: Path, tmp_path: Path
) -> None:
    """A damaged index segment (as a SIGKILL during a large upsert can leave one):
    opening says what to do; the folder moved aside, `saga rebuild` re-creates it."""
    # Enough vectors for Chroma to persist its HNSW index files (it syncs per 1,000).
    runner.create_many(
        "notes",
        [
            {"row": {"id": k, "body": "b"}, "embedding": [k / 3, 1 / k, 0.5, 1e-3]}
            for k in range(1, 1501)
        ],
    )
    before = stored_vectors(runner)
    runner.close()
    headers = list(chroma_path.glob("*/header.bin"))
    assert headers, "no HNSW segment was persisted"
    for header in headers:
        header.write_bytes(b"\xff" * 64)

    with pytest.raises(VectorStoreUnreadable, match="saga rebuild"):
        SagaRunner.open(db_path, chroma_path=chroma_path)
    refused = run_saga(
        "recover",
        "--db",
        str(db_path),
        "--chroma-path",
        str(chroma_path),
    )
    assert refused.returncode == 3, refused.stderr
    assert "saga rebuild" in refused.stderr

    chroma_path.rename(tmp_path / "broken-aside")
    chroma_path.mkdir()
    done = run_saga(
        "rebuild",
        "--db",
        str(db_path),
        "--chroma-path",
        str(chroma_path),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    # chromadb caches one client per folder path in this process, which still holds the
    # broken folder's state: the rebuild ran in another process, as an operator's would.
    SharedSystemClient.clear_system_cache()
    with SagaRunner.open(db_path, chroma_path=chroma_path) as again:
        assert stored_vectors(again) == before
        assert again.reconcile().clean
