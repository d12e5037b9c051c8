"""Reconcile and sagas in flight: never "stores agree" while a saga is left alone; a
saga whose owner is dead is stuck at once, whatever its age, and ``--fix`` settles it
first; a saga a live owner holds is reported, never taken.

Real SQLite, real embedded Chroma, real processes SIGKILLed by failpoints.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from saga import SagaRunner, VectorRecord
from tests._probe import saga_rows, stored_vectors
from tests._recovery_worker import body
from tests.conftest import rewired, rows
from tests.test_reconcile import write
from tests.test_recovery import NEW_KEYS, OLD_KEYS, ROOT, crash_once

# The CLI arms no failpoint by itself: this child opts in, as the test workers do.
FAILING_CLI = (
    "import sys; from saga import failpoints; failpoints.load_from_env(); "
    "from saga.cli import main; sys.argv[0] = 'saga'; main()"
)


def saga_cli(
    folder: Path, *args: str, failpoints: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m saga ARGS --db ... --chroma-path ...`` in a child process; with
    ``failpoints``, the same CLI in a child that arms them first."""
    stores = ["--db", str(folder / "app.db"), "--chroma-path", str(folder / "chroma")]
    entry = ["-c", FAILING_CLI] if failpoints else ["-m", "saga"]
    env = {k: v for k, v in os.environ.items() if k != "SAGA_FAILPOINTS"}
    if failpoints:
        env["SAGA_FAILPOINTS"] = failpoints
    return subprocess.run(
        [sys.executable, *entry, *args, *stores],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def in_flight_ids(folder: Path) -> list[str]:
    terminal = ("synced", "failed")
    return [r["saga_id"] for r in saga_rows(folder / "app.db") if r["state"] not in terminal]


def test_a_killed_batch_is_stuck_at_once_and_fix_settles_it(tmp_path: Path) -> None:
    folder = crash_once(tmp_path, "create_many", "after:write_vectors=kill")
    [dead] = in_flight_ids(folder)

    done = saga_cli(folder, "reconcile", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["in_flight"] == [dead]
    assert report["stuck_sagas"] == [dead]  # seconds old, but its owner is dead
    assert report["clean"] is False

    done = saga_cli(folder, "reconcile")
    assert done.returncode == 1
    assert "stores agree" not in done.stdout
    assert f"1 saga in flight, its vectors not checked: {dead}" in done.stdout

    done = saga_cli(folder, "reconcile", "--fix", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["in_flight"], report["stuck_sagas"], report["clean"]) == ([], [], True)
    assert in_flight_ids(folder) == []
    assert set(rows(folder / "app.db")) == {*OLD_KEYS, *NEW_KEYS}  # resumed, not undone


class PausingVectors:
    """The real vector store, but an upsert waits on ``release`` once it has written:
    the saga stays in flight, its owner (this process) alive and its lease held."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.written = threading.Event()
        self.release = threading.Event()

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None:
        self._inner.upsert(collection, records)
        self.written.set()
        assert self.release.wait(timeout=60), "the test never released the writer"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_saga_a_live_owner_holds_is_in_flight_and_never_taken(runner: SagaRunner) -> None:
    for key in (1, 2):
        write(runner, key)
    pausing = PausingVectors(runner.stores.vectors)
    writer = threading.Thread(target=write, args=(rewired(runner, vectors=pausing), 3))
    writer.start()
    try:
        assert pausing.written.wait(timeout=60)
        [saga] = runner.in_flight()

        report = runner.reconcile()
        assert report.in_flight == (saga.saga_id,)
        assert report.stuck_sagas == ()  # young, and its owner is alive
        assert report.orphan_vectors == ()  # notes:3 is being written
        assert not report.clean
        assert report.to_dict()["in_flight"] == (saga.saga_id,)
        old = runner.reconcile(stuck_after=dt.timedelta(0))
        assert (old.in_flight, old.stuck_sagas) == ((saga.saga_id,), (saga.saga_id,))

        fixed = runner.reconcile(fix=True)
        assert fixed.in_flight == (saga.saga_id,)
        assert fixed.fixed == ()
        assert not fixed.clean
        [still] = runner.in_flight()
        assert (still.state, still.lease_owner) == (saga.state, saga.lease_owner)
        assert still.attempts == saga.attempts
    finally:
        pausing.release.set()
        writer.join(timeout=60)
    assert runner.in_flight() == []
    assert runner.reconcile().clean


def test_a_killed_fix_is_settled_by_the_next_fix_at_once(runner: SagaRunner, db_path: Path) -> None:
    folder = db_path.parent
    for key in range(1, 5):
        write(runner, key)
    synced = runner.stores.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    drifted = {**(synced.metadata or {}), "tag": "tampered"}
    runner.stores.vectors.upsert("notes", [VectorRecord("notes:3", synced.embedding, "x", drifted)])
    runner.close()  # an embedded Chroma folder admits one process at a time
    # A vector the log does not keep (synced before schema 5) is repaired through an
    # update saga, not written back from the log: that saga is the one killed here.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE vector_sync_state SET embedding = NULL, record = NULL "
            "WHERE vector_id = 'notes:3'"
        )
    conn.close()

    # The repair's update saga dies before it writes the vector: the drift stays.
    died = saga_cli(folder, "reconcile", "--fix", failpoints="before:write_vectors=kill")
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    [dead] = in_flight_ids(folder)

    done = saga_cli(folder, "reconcile", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["in_flight"], report["stuck_sagas"]) == ([dead], [dead])

    done = saga_cli(folder, "reconcile", "--fix", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["in_flight"], report["drift"], report["clean"]) == ([], [], True)
    assert in_flight_ids(folder) == []
    assert [r["state"] for r in saga_rows(folder / "app.db") if r["saga_id"] == dead] == ["synced"]
    repaired = stored_vectors(folder / "chroma")["notes:3"]
    assert repaired.document == body("t", 3)
    assert repaired.metadata == {"tag": "t"}


@pytest.mark.parametrize("fix", [False, True])
def test_nothing_in_flight_is_clean_and_says_so(runner: SagaRunner, fix: bool) -> None:
    write(runner, 1)
    report = runner.reconcile(fix=fix)
    assert (report.in_flight, report.clean) == ((), True)
    assert (report.to_dict()["in_flight"], report.to_dict()["clean"]) == ((), True)
