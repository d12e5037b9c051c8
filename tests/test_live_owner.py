"""Recovery and a live owner in another process; the picture of a recovered saga.

The writer is a real subprocess paused mid-saga by a failpoint, sharing the SQLite
file and a real Chroma server with the test (an embedded Chroma folder admits one
process only).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from saga import RetryPolicy, SagaRunner
from saga.cli import cli
from tests.chroma_server import ChromaServer
from tests.conftest import make_db

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys
from saga import SagaRunner, failpoints
failpoints.load_from_env()
runner = SagaRunner.open(sys.argv[1], chroma_host="127.0.0.1", chroma_port=int(sys.argv[2]))
runner.track("notes")
runner.create("notes", {"id": 7, "body": "paused"}, embedding=[0.1, 0.2, 0.3, 0.4])
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as running:
        yield running


def open_runner(db: Path, server: ChromaServer) -> SagaRunner:
    runner = SagaRunner.open(
        db, chroma_host=server.host, chroma_port=server.port, retry=RetryPolicy.disabled()
    )
    runner.track("notes")
    return runner


def wait_for_state(db: Path, state: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            row = conn.execute(
                "SELECT saga_id FROM saga_instances WHERE state = ?", (state,)
            ).fetchone()
        except sqlite3.OperationalError:
            row = None  # the saga tables are not there yet
        finally:
            conn.close()
        if row is not None:
            return str(row[0])
        time.sleep(0.1)
    raise AssertionError(f"no saga reached {state!r}")


@pytest.mark.chroma_server
def test_recovery_never_takes_a_saga_from_a_live_owner(
    tmp_path: Path, server: ChromaServer
) -> None:
    db = make_db(tmp_path / "app.db")
    env = {**os.environ, "SAGA_FAILPOINTS": "after:write_vectors=sleep:60"}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(server.port)], cwd=ROOT, env=env
    )
    try:
        saga_id = wait_for_state(db, "pending")
        with open_runner(db, server) as runner:
            report = runner.recover()
            assert report.skipped_ids == (saga_id,)
            assert (report.resumed, report.compensated) == (0, 0)
            assert [s.state for s in runner.in_flight()] == ["pending"]
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            # Its pid is gone: taken at once, without waiting out the 30 s lease.
            report = runner.recover()
            assert report.resumed_ids == (saga_id,)
            assert runner.reconcile().clean
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


@pytest.mark.chroma_server
def test_show_draws_the_path_a_recovered_saga_took(tmp_path: Path, server: ChromaServer) -> None:
    db = make_db(tmp_path / "app.db")
    env = {**os.environ, "SAGA_FAILPOINTS": "after:write_vectors=kill"}
    subprocess.run(
        [sys.executable, "-c", WRITER, str(db), str(server.port)], cwd=ROOT, env=env, check=False
    )
    with open_runner(db, server) as runner:
        (saga_id,) = runner.recover().resumed_ids
    picture = tmp_path / "saga.mmd"
    result = CliRunner().invoke(cli, ["show", saga_id, "--db", str(db), "--diagram", str(picture)])
    assert result.exit_code == 0, result.output
    text = picture.read_text()
    # Every state it passed through is marked, the one it ended in is the active one,
    # and the states it never entered are not.
    for state in ("pending", "vector_written", "sqlite_committed"):
        assert f"class {state} s_previous" in text
    assert "class synced s_active" in text
    for state in ("compensating", "failed"):
        assert f"class {state} s_default" in text
