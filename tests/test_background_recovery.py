"""Recovery inside the application: ``SagaRunner.open(..., recover_every=SECONDS)``.

Real SQLite files, a real embedded Chroma or a real ``chroma run`` server, and real
application processes (``tests._worker_background``) SIGKILLed mid-saga. Nobody calls
``recover()`` here: the background thread of a runner has to settle what a dead run
left, and must never touch a saga a live writer is driving.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

import saga._background
from saga import (
    CompensationError,
    LeasePolicy,
    RetryPolicy,
    SagaRunner,
    ValidationError,
    failpoints,
)
from tests._recovery_worker import body
from tests.chroma_server import ChromaServer
from tests.conftest import make_db, rows, sql, vec

ROOT = Path(__file__).resolve().parent.parent
LOCK_NAME = ".saga-embedded.lock"  # stores._chroma_lock: held while a runner has the folder


def wait_for(done: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def in_flight(db: Path) -> list[tuple[Any, ...]]:
    """(saga_id, state, lease_owner) of every saga not settled, read with sqlite3."""
    try:
        return sql(
            db,
            "SELECT saga_id, state, lease_owner FROM saga_instances "
            "WHERE state NOT IN ('synced', 'failed')",
        )
    except sqlite3.OperationalError:  # no saga log yet: a worker is still opening
        return []


def worker(
    db: Path, journal: Path, first_key: int, *, chroma: list[str], until: Path | None = None
) -> list[str]:
    argv = [sys.executable, "-m", "tests._worker_background", str(db), *chroma]
    argv += ["--every", "0.2", "--first-key", str(first_key), "--journal", str(journal)]
    return argv + (["--until", str(until)] if until is not None else [])


def acknowledged(journal: Path) -> int:
    """How many writes a worker's journal says were acknowledged so far."""
    return journal.read_text().count("ok ") if journal.exists() else 0


def journaled(journal: Path) -> tuple[dict[int, str | None], dict[int, str | None]]:
    """From a worker's journal: key -> the body its acknowledged writes left (None: the
    row is deleted), and key -> the body of a write begun but never acknowledged (the
    one a kill interrupted: either outcome is allowed there, all or nothing)."""
    acked: dict[int, str | None] = {}
    begun: dict[int, str | None] = {}
    for line in journal.read_text().splitlines():
        kind, op, key_text, tag = line.split()[:4]
        key = int(key_text)
        assert kind != "error", line  # a live writer of its own keys is never refused
        after = None if op == "delete" else body(tag, key)
        if kind == "begin":
            begun[key] = after
        else:
            del begun[key]
            acked[key] = after
    return acked, begun


def assert_nothing_acknowledged_lost(runner: SagaRunner, db: Path, *journals: Path) -> None:
    """Rows and vectors agree with every acknowledged write; an interrupted one is
    either done in both stores or in neither."""
    stored = {k: r["body"] for k, r in rows(db).items()}
    for journal in journals:
        acked, begun = journaled(journal)
        keys = sorted(acked.keys() | begun.keys())
        docs = {k: v.document for k, v in runner.vectors_of("notes", keys).items()}
        for key in keys:
            seen = (stored.get(key), docs.get(key))
            allowed = {(acked.get(key),) * 2}
            if key in begun:
                allowed.add((begun[key],) * 2)
            assert seen in allowed, (key, seen, allowed)


# -- 1. embedded: a restarted application settles its dead run's saga ---------------------


def test_a_restarted_embedded_app_settles_what_its_killed_run_left(tmp_path: Path) -> None:
    db, chroma, journal = make_db(tmp_path / "app.db"), tmp_path / "chroma", tmp_path / "j"
    env = {**os.environ, "SAGA_FAILPOINTS": "chroma.upsert.after=kill@5"}
    argv = worker(db, journal, 1, chroma=["--chroma-path", str(chroma)])
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    ((stranded, state, _owner),) = in_flight(db)  # its vector written, its row not yet
    assert state == "pending"

    with SagaRunner.open(
        db, chroma_path=chroma, retry=RetryPolicy.disabled(), recover_every=0.2
    ) as runner:
        # open() does not wait for the pass; the application writes at once.
        for key in range(100, 106):
            runner.create("notes", {"id": key, "body": f"new-{key}"}, embedding=vec(key))
        background = runner._background
        assert background is not None
        wait_for(lambda: background.settled == 1, "the dead run's saga settled")
        assert in_flight(db) == []
        assert sql(db, "SELECT state FROM saga_instances WHERE saga_id = ?", (stranded,)) == [
            ("synced",)
        ]
        assert runner.reconcile().clean
        assert_nothing_acknowledged_lost(runner, db, journal)
        assert {k: r["body"] for k, r in rows(db).items() if k in range(100, 106)} == {
            k: f"new-{k}" for k in range(100, 106)
        }


# -- 2. server mode: the survivor settles the dead process's saga -------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as running:
        yield running


def state_of(db: Path, saga_id: str) -> str | None:
    found = sql(db, "SELECT state FROM saga_instances WHERE saga_id = ?", (saga_id,))
    return str(found[0][0]) if found else None


@pytest.mark.chroma_server
def test_in_server_mode_the_surviving_process_settles_the_dead_ones_saga(
    tmp_path: Path, server: ChromaServer
) -> None:
    db = make_db(tmp_path / "app.db")
    stop, logs = tmp_path / "stop", tmp_path / "workers.log"
    port = ["--chroma-port", str(server.port)]
    victim_journal, survivor_journal = tmp_path / "victim", tmp_path / "survivor"
    paused = {**os.environ, "SAGA_FAILPOINTS": "after:write_vectors=sleep:60@4"}
    with logs.open("ab") as stderr:
        survivor = subprocess.Popen(
            worker(db, survivor_journal, 1000, chroma=port, until=stop),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "SAGA_FAILPOINTS": ""},
        )
        victim = subprocess.Popen(
            worker(db, victim_journal, 1, chroma=port), cwd=ROOT, stderr=stderr, env=paused
        )
    stranded: list[str] = []

    def victim_mid_saga() -> bool:
        mine = f":{victim.pid}:"
        stranded[:] = [saga_id for saga_id, _, o in in_flight(db) if o and mine in o]
        return acknowledged(victim_journal) == 3 and len(stranded) == 1  # its 4th write

    try:
        wait_for(victim_mid_saga, "the victim paused mid-saga", timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # Its pid is gone: the survivor's next pass (every 0.2 s) takes the saga.
        wait_for(
            lambda: state_of(db, stranded[0]) in ("synced", "failed"),
            f"the survivor settled the victim's saga: {logs.read_text()[-3000:]}",
        )
        wait_for(lambda: acknowledged(survivor_journal) > 3, "the survivor writing meanwhile")
        stop.touch()
        out, _ = survivor.communicate(timeout=30)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert survivor.returncode == 0, logs.read_text()[-3000:]
    # Paused after its vector write, before its row: resumed (forward where it can).
    assert state_of(db, stranded[0]) == "synced", logs.read_text()[-3000:]
    counts = json.loads(out)
    assert counts["settled"] >= 1
    assert counts["alive"] is False
    assert in_flight(db) == []
    with SagaRunner.open(db, chroma_host=server.host, chroma_port=server.port) as checker:
        assert checker.reconcile().clean
        assert_nothing_acknowledged_lost(checker, db, victim_journal, survivor_journal)


# -- 3. live sagas are never touched; close() stops the thread -----------------------------


def test_live_sagas_of_the_runner_are_never_taken_and_close_stops_the_thread(
    db_path: Path, chroma_path: Path
) -> None:
    # A lease far shorter than a saga (each pauses 0.1 s after its vector write, in
    # `pending`): the leases run out mid-saga, and still the runner's own pass, every
    # 0.05 s, must leave them to the threads driving them.
    runner = SagaRunner.open(
        db_path,
        chroma_path=chroma_path,
        retry=RetryPolicy.disabled(),
        lease=LeasePolicy(ttl=0.05),
        recover_every=0.05,
    )
    runner.track("notes")
    background = runner._background
    assert background is not None
    outcomes: list[str] = []

    def writes(start: int) -> None:
        for key in range(start, start + 6):
            runner.create("notes", {"id": key, "body": f"b{key}"}, embedding=vec(key))
            runner.update("notes", key, {"body": f"u{key}"}, embedding=vec(key + 1))
            outcomes.append("ok")

    with failpoints.armed("after:write_vectors=sleep:0.1"):
        threads = [threading.Thread(target=writes, args=(100 * n,)) for n in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert outcomes == ["ok"] * 24  # every write acknowledged
    assert background.skipped > 0  # the passes did see live sagas, and left them
    assert background.settled == 0
    assert background.failures == 0
    sagas = sql(db_path, "SELECT saga_id, state, attempts FROM saga_instances")
    assert len(sagas) == 48
    assert {(state, attempts) for _, state, attempts in sagas} == {("synced", 0)}  # no claim
    for saga_id, _, _ in sagas:
        moves = runner.stores.log.history(saga_id)
        assert [m["to_state"] for m in moves][-1] == "synced"
        assert all(m["event"] != "compensate" and m["error"] is None for m in moves)

    assert background.thread.is_alive()
    runner.close()
    assert not background.thread.is_alive()  # stopped promptly: it waits on an Event
    passes = background.passes
    time.sleep(0.3)  # six intervals
    assert background.passes == passes  # a closed runner's thread does nothing more


# -- close() during a pass ------------------------------------------------------------------


def leave_a_saga_in_compensating(db: Path, chroma: Path) -> str:
    """A create whose pivot fails and whose compensation fails too: persisted in
    `compensating` with its lease let go, for recovery to finish."""
    with SagaRunner.open(db, chroma_path=chroma, retry=RetryPolicy.disabled()) as runner:
        runner.track("notes")
        spec = "sqlite.commit_rows=raise:sqlite-ioerror;compensate:write_vectors=raise*1"
        with failpoints.armed(spec), pytest.raises(CompensationError) as caught:
            runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
    assert caught.value.saga_id is not None
    return caught.value.saga_id


def folder_held(chroma: Path) -> bool:
    """Whether a runner still holds the embedded folder's lock (flock conflicts between
    open file descriptions, even within one process)."""
    fd = os.open(chroma / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_close_lets_a_running_pass_finish(db_path: Path, chroma_path: Path) -> None:
    saga_id = leave_a_saga_in_compensating(db_path, chroma_path)
    claims = failpoints.hits("after:claim")
    with failpoints.armed("after:claim=sleep:0.5"):
        runner = SagaRunner.open(db_path, chroma_path=chroma_path, recover_every=30)
        wait_for(lambda: failpoints.hits("after:claim") > claims, "the first pass claimed it")
        runner.close()  # waits for the pass (well within CLOSE_WAIT)
    background = runner._background
    assert background is not None
    assert not background.thread.is_alive()
    assert sql(db_path, "SELECT state FROM saga_instances WHERE saga_id = ?", (saga_id,)) == [
        ("failed",)
    ]
    assert not folder_held(chroma_path)


def test_close_does_not_wait_past_its_bound_and_the_pass_closes_the_stores(
    db_path: Path, chroma_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saga._background, "CLOSE_WAIT", 0.1)
    saga_id = leave_a_saga_in_compensating(db_path, chroma_path)
    claims = failpoints.hits("after:claim")
    with failpoints.armed("after:claim=sleep:2.5"):
        runner = SagaRunner.open(db_path, chroma_path=chroma_path, recover_every=30)
        wait_for(lambda: failpoints.hits("after:claim") > claims, "the first pass claimed it")
        runner.close()
    background = runner._background
    assert background is not None
    assert background.thread.is_alive()  # still in its pass: close() did not wait for it
    assert folder_held(chroma_path)  # and did not close the stores under it
    wait_for(lambda: not background.thread.is_alive(), "the pass ended")
    assert sql(db_path, "SELECT state FROM saga_instances WHERE saga_id = ?", (saga_id,)) == [
        ("failed",)
    ]
    assert not folder_held(chroma_path)  # the thread closed them when its pass ended


# -- errors are logged, bound with the saga id, and the thread carries on ------------------


def test_a_failing_pass_is_logged_with_the_saga_id_and_the_thread_carries_on(
    db_path: Path, chroma_path: Path
) -> None:
    saga_id = leave_a_saga_in_compensating(db_path, chroma_path)
    lines: list[tuple[str, Any]] = []
    logger.enable("saga")
    sink = logger.add(
        lambda m: lines.append((m.record["message"], m.record["extra"].get("saga_id"))),
        level="WARNING",
    )
    try:
        with (
            failpoints.armed("compensate:write_vectors=raise*1"),  # the first pass fails
            SagaRunner.open(db_path, chroma_path=chroma_path, recover_every=0.05) as runner,
        ):
            background = runner._background
            assert background is not None
            wait_for(lambda: background.settled == 1, "a later pass settled the saga")
            assert background.thread.is_alive()
            assert background.failures == 1
            assert in_flight(db_path) == []
    finally:
        logger.remove(sink)
        logger.disable("saga")
    left = [(text, sid) for text, sid in lines if "background recovery left saga" in text]
    assert len(left) == 1, lines
    assert "compensate:write_vectors" in left[0][0]
    assert left[0][1] == saga_id


# -- the argument ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), True, "5", [1]])
def test_recover_every_must_be_a_positive_number_of_seconds(tmp_path: Path, bad: Any) -> None:
    db = tmp_path / "app.db"
    with pytest.raises(ValidationError) as caught:
        SagaRunner.open(db, chroma_path=tmp_path / "chroma", recover_every=bad)
    assert caught.value.field == "recover_every"
    assert not db.exists()  # refused before anything was opened


def test_without_recover_every_there_is_no_thread(db_path: Path, chroma_path: Path) -> None:
    before = {t for t in threading.enumerate() if t.name == "saga-recover"}
    with SagaRunner.open(db_path, chroma_path=chroma_path) as runner:
        assert runner._background is None
        assert {t for t in threading.enumerate() if t.name == "saga-recover"} == before
    with SagaRunner.open(db_path, chroma_path=chroma_path, recover_every=1) as runner:
        assert runner._background is not None
        assert runner._background.every == 1.0
