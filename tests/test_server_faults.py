"""Whole sagas against a real ``chroma run`` server while the network misbehaves.

The fault matrix: for create, update, delete and create_many, a fault starts at the very
moment the saga writes its vectors (``FaultAtWrite``), and the saga must end loud and
clean: success means both stores hold the new state; a raise means, once recovery has
run, both hold the old one. Then a mixed workload while the proxy cycles its modes, in
one process and in four.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from saga import (
    ChromaTimeouts,
    CompensationError,
    DataIntegrityError,
    RetryPolicy,
    SagaError,
    SagaRunner,
    SqliteOptions,
    VectorStoreTimeout,
)
from tests._probe import saga_rows
from tests.conftest import rows, vec
from tests.faultproxy import FaultProxy

pytest.register_assert_rewrite("tests.server_fixtures")  # its checks assert; before import

from tests import server_fixtures as fx  # noqa: E402

pytest_plugins = ["tests.server_fixtures"]
pytestmark = pytest.mark.chroma_server

# Thread start, SQLite commits and the scheduler's slack on a loaded CI machine.
MARGIN = 1.0
OPS = ("create", "update", "delete", "create_many")
BEFORE = {1: "old"}
AFTER = {
    "create": {1: "old", 2: "new"},
    "update": {1: "new"},
    "delete": {},
    "create_many": {1: "old", 2: "new", 3: "new", 4: "new"},
}


@attrs.frozen
class Scenario:
    schedule: tuple[fx.Step, ...]  # (seconds after the write starts, mode, latency)
    retry: RetryPolicy
    timeouts: ChromaTimeouts
    expect: str  # "ok", "raises" or "either"


SCENARIOS = {
    # Slower than usual, faster than the bound.
    "latency": Scenario(((0, "latency", 0.2),), fx.RETRY, fx.TIMEOUTS, "ok"),
    # Accepted, never answered, for good: every call runs into its bound.
    "hang": Scenario(((0, "hang", None),), fx.FAST_RETRY, fx.FAST_TIMEOUTS, "raises"),
    # The connection is cut while the request sits in the network, then the network
    # heals: the retried (idempotent) write succeeds.
    "reset-then-heal": Scenario(
        ((0, "latency", 0.3), (0.15, "reset", None), (0.5, "pass", None)),
        fx.PATIENT_RETRY,
        fx.TIMEOUTS,
        "ok",
    ),
    # Cut mid-request, and every retry cut too.
    "reset": Scenario(
        ((0, "latency", 0.3), (0.15, "reset", None)), fx.FAST_RETRY, fx.FAST_TIMEOUTS, "either"
    ),
    # The server is stopped, then back before the retries run out.
    "down-then-up": Scenario(
        ((0, "down", None), (0.5, "pass", None)), fx.PATIENT_RETRY, fx.TIMEOUTS, "ok"
    ),
    # Applied, answer lost, no retry: the read-back alone finds the write was applied.
    "drop-response-then-heal": Scenario(
        ((0, "drop_response", None), (0.25, "pass", None)), fx.ONE_TRY, fx.TIMEOUTS, "ok"
    ),
    # Applied, answers lost for good (compensation's too): recovery settles it.
    "drop-response": Scenario(
        ((0, "drop_response", None),), fx.FAST_RETRY, fx.FAST_TIMEOUTS, "raises"
    ),
}


def _seed(runner: SagaRunner) -> None:
    runner.create("notes", {"id": 1, "body": "old"}, embedding=vec(1), document="old")


def _run(runner: SagaRunner, op: str) -> None:
    if op == "create":
        runner.create("notes", {"id": 2, "body": "new"}, embedding=vec(2), document="new")
    elif op == "update":
        runner.update("notes", 1, {"body": "new"}, embedding=vec(3), document="new")
    elif op == "delete":
        runner.delete("notes", 1)
    else:
        items = [
            {"row": {"id": k, "body": "new"}, "embedding": vec(k), "document": "new"}
            for k in (2, 3, 4)
        ]
        runner.create_many("notes", items)


def _saga_bound(scenario: Scenario) -> float:
    """A failing saga makes at most two writes (forward, compensation), each of which
    may be followed by a read-back: four retried calls."""
    return 4 * fx.bound(scenario.retry, scenario.timeouts)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_fault_at_the_vector_write_leaves_both_stores_agreeing(
    world: fx.World,
    proxy: FaultProxy,
    name: str,
    op: str,
) -> None:
    scenario = SCENARIOS[name]
    runner = world.open(retry=scenario.retry, timeouts=scenario.timeouts)
    _seed(runner)
    faulty = fx.FaultAtWrite(runner.stores.vectors, proxy, scenario.schedule)
    runner = fx.swap_vectors(runner, faulty)

    error: Exception | None = None
    began = time.monotonic()
    try:
        _run(runner, op)
    except (DataIntegrityError, CompensationError) as exc:
        error = exc
    took = time.monotonic() - began
    faulty.stop()
    outcome = type(error).__name__ if error else "ok"
    print(f"{name}/{op}: {outcome} in {took:.2f}s, slowest port call {faulty.worst():.2f}s")

    if scenario.expect == "ok":
        assert error is None, error
    elif scenario.expect == "raises":
        assert error is not None
    assert took < _saga_bound(scenario) + MARGIN
    assert faulty.worst() < 2 * fx.bound(scenario.retry, scenario.timeouts) + MARGIN

    world.settle()
    assert world.assert_consistent() == (BEFORE if error else AFTER[op])
    if name == "drop-response-then-heal":
        write = "delete" if op == "delete" else "upsert"
        assert faulty.store.read_backs[f"{write}:applied"] == 1


def _forget_kept_vectors(db: Path) -> None:
    """The log as a database upgraded from schema 4 holds it: synced vectors not kept,
    so an update reads its before-image from Chroma (the read these tests stall)."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE vector_sync_state SET embedding = NULL, record = NULL")
    conn.close()


def test_a_hang_while_reading_before_images_refuses_the_write(
    world: fx.World, proxy: FaultProxy
) -> None:
    runner = world.open(retry=fx.FAST_RETRY, timeouts=fx.FAST_TIMEOUTS)
    _seed(runner)
    _forget_kept_vectors(world.db)  # so the before-image is read from Chroma
    sagas = len(saga_rows(world.db))
    fx.switch(proxy, "hang")

    with fx.timed() as took, pytest.raises(VectorStoreTimeout):
        runner.update("notes", 1, {"body": "new"}, document="new")

    assert took[0] < fx.bound(fx.FAST_RETRY, fx.FAST_TIMEOUTS) + MARGIN
    assert len(saga_rows(world.db)) == sagas  # refused in `pending`: no saga recorded
    world.settle()
    assert world.assert_consistent() == BEFORE


def test_a_hung_before_image_read_does_not_lock_other_writers_out(
    world: fx.World, proxy: FaultProxy
) -> None:
    # The before-image read may take the whole retried-call bound (0.5 s here); other
    # writers wait busy_timeout (0.2 s here) for SQLite's lock.
    runner = world.open(retry=fx.FAST_RETRY, timeouts=fx.FAST_TIMEOUTS)
    _seed(runner)
    _forget_kept_vectors(world.db)  # so the before-image is read from Chroma
    other = SagaRunner.open(
        world.db,
        chroma_host=fx.HOST,
        chroma_port=world.server.port,  # straight to the server: healthy
        sqlite=SqliteOptions(busy_timeout=0.2),
    )
    fx.switch(proxy, "hang")
    hung = threading.Thread(target=_swallow, args=(lambda: runner.delete("notes", 1),))
    hung.start()
    time.sleep(0.1)  # the delete is reading its before-image from the hung Chroma
    try:
        # Before-images are read outside SQLite's write lock: no wait for the lock.
        other.create("notes", {"id": 9, "body": "b"}, embedding=vec(9), document="b")
    finally:
        hung.join()
        other.close()
    assert 9 in rows(world.db)


def _swallow(action: Any) -> None:
    with contextlib.suppress(SagaError):
        action()


# -- workloads while the faults cycle ----------------------------------------------------------

CYCLE_SECONDS = 8.0


def test_a_mixed_workload_while_faults_cycle_keeps_every_promise(
    world: fx.World, proxy: FaultProxy
) -> None:
    profile = {
        "timeouts": fx.WORKLOAD_TIMEOUTS,
        "retry": fx.WORKLOAD_RETRY,
        "lease": fx.WORKLOAD_LEASE,
    }
    runner, recoverer = world.open(**profile), world.open(**profile)  # two owners
    log: list[dict[str, Any]] = []
    with fx.FaultCycler(proxy, seed=5, hold=(0.2, 0.8)) as cycler:
        ends = time.monotonic() + CYCLE_SECONDS
        fx.workload(
            runner,
            recoverer,
            random.Random(5),
            range(1, 21),
            "w",
            lambda: time.monotonic() > ends,
            log,
        )

    world.settle()
    print(fx.summary(log), "modes:", cycler.seen)
    fx.assert_model(world, log)
    outcomes = {entry["outcome"] for entry in log}
    assert fx.OK in outcomes
    assert outcomes - {fx.OK, fx.REFUSED}, "no fault ever reached a saga"
    assert len(set(cycler.seen)) >= 4


def test_four_processes_through_one_server_while_faults_cycle(
    world: fx.World, proxy: FaultProxy, tmp_path: Path
) -> None:
    world.open()  # tracks the table once, before the workers race to
    spawn = multiprocessing.get_context("spawn")
    go, stop = spawn.Event(), spawn.Event()
    outs = [tmp_path / f"worker-{n}.json" for n in range(4)]
    workers = [
        spawn.Process(
            target=fx.process_workload,
            args=(
                str(world.db),
                proxy.port,
                world.collection,
                list(range(100 * n + 1, 100 * n + 13)),  # disjoint keys: one order per key
                n,
                str(out),
                go,
                stop,
            ),
        )
        for n, out in enumerate(outs)
    ]
    for worker in workers:
        worker.start()
    try:
        _wait_for(lambda: all(Path(f"{out}.ready").exists() for out in outs), workers, 60)
        go.set()
        with fx.FaultCycler(proxy, seed=7, hold=(0.2, 0.8)) as cycler:
            time.sleep(CYCLE_SECONDS)
        stop.set()
        for worker in workers:
            worker.join(60)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    log = [entry for out in outs for entry in json.loads(out.read_text())]
    world.settle()  # the workers are gone: recovery takes their sagas at once
    print(fx.summary(log), "modes:", cycler.seen)
    fx.assert_model(world, log)
    assert fx.OK in {entry["outcome"] for entry in log}


def _wait_for(condition: Any, workers: list[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the workers did not start"
        assert all(w.exitcode is None for w in workers), "a worker died while starting"
        time.sleep(0.05)
