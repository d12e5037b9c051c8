"""Threads and processes: every acknowledged write is in both stores, and nothing else.

- 4 threads x 200 mixed writes on ONE runner (embedded Chroma);
- 3 processes x 200 mixed writes on one SQLite file through one real ``chroma run``
  server;
- a second process opening the same embedded Chroma folder is refused.

Writes on shared keys are serialised by the one-saga-per-key rule, so the acknowledged
writes of a key form one sequence, ordered by their `commit_rows` transitions in
``saga_history``: the last of them is what both stores must hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import RetryPolicy, SagaRunner, SqliteOptions
from tests import _worker_mixed as workload
from tests._probe import REPO, payloads, query
from tests.chroma_server import ChromaServer
from tests.conftest import make_db, rows, vector_ids

WRITES = 200
SEED = 20240


def _verify(db_path: Path, runner: SagaRunner, outcomes: list[dict[str, Any]]) -> None:
    unexpected = [line for outcome in outcomes for line in outcome["unexpected"]]
    assert unexpected == []
    acked = [write for outcome in outcomes for write in outcome["acked"]]
    assert all(write["state"] == "synced" for write in acked)
    # Sanity: the workload really overlapped on the shared keys.
    assert sum(sum(outcome["refused"].values()) for outcome in outcomes) > 0

    committed = {
        r["saga_id"]: r["id"]
        for r in query(db_path, "SELECT saga_id, id FROM saga_history WHERE event = 'commit_rows'")
    }
    expected = _final_writes(acked, committed)

    # The saga log: one synced saga per acknowledged write, nothing in flight.
    sagas = query(db_path, "SELECT saga_id, state FROM saga_instances")
    assert {s["saga_id"] for s in sagas} == {w["saga_id"] for w in acked}
    assert {s["state"] for s in sagas} == {"synced"}
    assert payloads(db_path) == {}
    sync = {r["vector_id"]: r for r in query(db_path, "SELECT * FROM vector_sync_state")}
    assert set(sync) == {f"notes:{k}" for k in expected}
    for key, write in expected.items():
        assert (sync[f"notes:{key}"]["saga_id"], sync[f"notes:{key}"]["sync_status"]) == (
            write["saga_id"],
            "synced",
        )

    # SQLite: exactly the rows whose last acknowledged write left them, as written.
    stored = rows(db_path)
    assert set(stored) == set(expected)
    for key, write in expected.items():
        assert stored[key]["body"] == write["body"], key
        assert stored[key]["vector_id"] == f"notes:{key}", key

    # Chroma: exactly their vectors, as written by that same saga.
    assert vector_ids(runner) == {f"notes:{k}" for k in expected}
    vectors = runner.stores.vectors.get("notes", [f"notes:{k}" for k in expected], embeddings=True)
    for key, write in expected.items():
        vector = vectors[f"notes:{key}"]
        assert vector.embedding == pytest.approx(write["embedding"]), key
        assert vector.document == write["body"], key
        # Exactly the caller's metadata; the document (unique to each write) and the
        # sync state above name the saga that wrote it.
        assert vector.metadata == {"worker": write["worker"]}, key

    report = runner.reconcile()
    assert report.clean, report


def _final_writes(
    acked: list[dict[str, Any]], committed: dict[str, int]
) -> dict[int, dict[str, Any]]:
    """The last acknowledged write of every key that still exists, after checking that
    each key's writes, in commit order, form a possible history (create only when
    absent, update and delete only when present)."""
    by_key: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for write in acked:
        assert write["saga_id"] in committed, write
        by_key[write["key"]].append(write)
    expected: dict[int, dict[str, Any]] = {}
    for key, writes in by_key.items():
        writes.sort(key=lambda w: committed[w["saga_id"]])
        present = False
        for write in writes:
            assert (write["op"] == "create") == (not present), (key, writes)
            present = write["op"] != "delete"
        if present:
            expected[key] = writes[-1]
    return expected


# -- threads ----------------------------------------------------------------------------


def _run_threads(runner: SagaRunner, threads: int, writes: int) -> list[dict[str, Any]]:
    """``threads`` workers of the mixed workload on one runner, started together."""
    outcomes: list[dict[str, Any]] = [{} for _ in range(threads)]
    crashed: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(worker: int) -> None:
        try:
            start.wait()
            outcomes[worker] = workload.run(runner, worker, writes, SEED + worker)
        except BaseException as exc:  # reported below, on the test's thread
            crashed.append(exc)

    running = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(180)
    assert not any(t.is_alive() for t in running)
    assert crashed == []
    return outcomes


def test_four_threads_on_one_runner_lose_and_invent_nothing(
    runner: SagaRunner, db_path: Path
) -> None:
    outcomes = _run_threads(runner, 4, WRITES)

    assert sum(len(o["acked"]) for o in outcomes) > WRITES * 2
    _verify(db_path, runner, outcomes)


def test_threads_of_one_runner_never_see_database_is_locked(
    db_path: Path, chroma_path: Path
) -> None:
    # Each write transaction holds the lock for milliseconds: with 4 writers a fair
    # wait is well under 0.1 s, so a 0.5 s busy timeout is ample.
    options = SqliteOptions(busy_timeout=0.5)
    with SagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), sqlite=options
    ) as runner:
        runner.track("notes")
        outcomes = _run_threads(runner, 4, 60)
    assert [line for o in outcomes for line in o["unexpected"]] == []


# -- processes --------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path / "server") as running:
        yield running


@pytest.mark.chroma_server
def test_three_processes_through_one_chroma_server_lose_and_invent_nothing(
    tmp_path: Path, server: ChromaServer
) -> None:
    db_path = make_db(tmp_path / "shared.db")
    with SagaRunner.open(db_path, chroma_host=server.host, chroma_port=server.port) as runner:
        runner.track("notes")
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests._worker_mixed",
                    str(db_path),
                    server.host,
                    str(server.port),
                    str(worker),
                    str(WRITES),
                    str(SEED + worker),
                ],
                cwd=REPO,
                env={**os.environ, "SAGA_FAILPOINTS": ""},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for worker in range(3)
        ]
        outcomes = []
        for worker in workers:
            try:
                out, err = worker.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                worker.kill()
                out, err = worker.communicate()
            assert worker.returncode == 0, err[-3000:]
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        assert sum(len(o["acked"]) for o in outcomes) > WRITES
        _verify(db_path, runner, outcomes)


# -- one embedded folder, one process ---------------------------------------------------


def _open_in_child(db_path: Path, chroma_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests._worker_embedded", str(db_path), str(chroma_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_process_on_the_same_embedded_folder_is_refused(
    runner: SagaRunner, db_path: Path, chroma_path: Path
) -> None:
    runner.create("notes", {"id": 1, "body": "one"}, embedding=[1.0, 2.0, 3.0, 4.0])

    refused = _open_in_child(db_path, chroma_path)

    assert refused.returncode == 3, refused.stderr[-3000:]
    assert refused.stdout.startswith("ConcurrentClientError: ")
    message = refused.stdout
    assert str(chroma_path) in message
    assert "chroma run" in message  # points to server mode
    assert "HttpClient" in message
    # This process's runner is unharmed, and once it is closed the folder is free.
    assert vector_ids(runner) == {"notes:1"}
    runner.close()
    opened = _open_in_child(db_path, chroma_path)
    assert (opened.returncode, opened.stdout.strip()) == (0, "opened"), opened.stderr[-3000:]
