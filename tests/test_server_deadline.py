"""Server mode, exactly: a write Chroma never saw leaves nothing and calls nothing, and a
whole write, compensation included, ends within ``ChromaTimeouts.whole`` (issue 16)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from saga import (
    ChromaTimeouts,
    CompensationError,
    DataIntegrityError,
    RetryPolicy,
    SagaRunner,
    VectorStoreError,
)
from saga._engine import RECHECK_GRACE
from tests._probe import sync_states
from tests.conftest import rewired, rows, vec
from tests.faultproxy import FaultProxy

pytest.register_assert_rewrite("tests.server_fixtures")

from tests import server_fixtures as fx  # noqa: E402

pytest_plugins = ["tests.server_fixtures"]
pytestmark = pytest.mark.chroma_server

MARGIN = 1.5  # thread start-up, SQLite commits, a loaded CI machine
WRITES = 20


class _CountingCalls:
    """The real store, counting every Chroma call made through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in ("upsert", "delete", "get", "query", "iter_records", "count"):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return counted
        return attribute


def _seed(runner: SagaRunner) -> None:
    for key in (1, 2, 3):
        runner.create("notes", {"id": key, "body": "old"}, embedding=vec(key), document="old")


def _write(runner: SagaRunner, kind: str, n: int) -> None:
    if kind == "create":
        runner.create("notes", {"id": 100 + n, "body": "new"}, embedding=vec(n))
    elif kind == "create_many":
        items = [
            {"row": {"id": 200 + 2 * n + i, "body": "new"}, "embedding": vec(i)} for i in range(2)
        ]
        runner.create_many("notes", items)
    elif kind == "update":
        runner.update("notes", 1, {"body": "new"}, document="new")
    else:
        runner.delete("notes", 2)


def test_writes_to_a_server_that_refuses_connections_leave_nothing(
    world: fx.World, proxy: FaultProxy
) -> None:
    """Connection refused means the request never left: the saga ends `failed` without a
    single compensating call, the caller gets a transient DataIntegrityError naming the
    operation, nothing stays in flight, and once the server is back writes succeed."""
    retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.05, timeout=2.0)
    runner = world.open(retry=retry)
    _seed(runner)
    before = (rows(world.db), world.vectors())
    counting = _CountingCalls(runner.stores.vectors)
    down = rewired(runner, vectors=counting)
    fx.switch(proxy, "down")
    bound = fx.bound(retry, fx.TIMEOUTS)
    for n in range(WRITES):
        for kind in ("create", "create_many", "update", "delete"):
            counting.calls.clear()
            began = time.monotonic()
            with pytest.raises(DataIntegrityError) as caught:
                _write(down, kind, n)
            took = time.monotonic() - began
            error = caught.value
            assert error.transient, error
            assert error.operation in ("upsert", "delete", "get", "collection"), error
            assert isinstance(error.cause, VectorStoreError)
            assert not error.cause.sent
            # At most the vector step's own write, and no compensating write after it.
            writes = [c for c in counting.calls if c in ("upsert", "delete")]
            assert len(writes) <= 1, counting.calls
            assert took < bound + MARGIN, took
        assert runner.in_flight() == []
    assert rows(world.db) == before[0]

    fx.switch(proxy, "pass")
    assert world.vectors() == before[1]
    runner.create("notes", {"id": 9, "body": "after"}, embedding=vec(9), document="after")
    runner.update("notes", 1, {"body": "again"}, document="again")
    runner.delete("notes", 2)
    assert runner.reconcile().clean
    assert set(rows(world.db)) == {1, 3, 9}


MODES: dict[str, tuple[fx.Step, ...]] = {
    "hang": ((0, "hang", None),),
    "drop-response": ((0, "drop_response", None),),
    "slow": ((0, "latency", 3.0),),
    # One byte of the answer every 0.4 s: never silent for a read timeout (1 s).
    "drip": ((0, "drip", 0.4),),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("op", ["create", "update", "delete", "create_many"])
def test_a_whole_write_ends_within_its_deadline(
    world: fx.World, proxy: FaultProxy, mode: str, op: str
) -> None:
    """The fault starts at the very moment the saga writes its vectors. With `whole` =
    2.5 s and retried calls of up to 3 s (a write, its read-back, a compensation and its
    read-back would take 12 s), every call returns or raises within the deadline; what
    could not be settled in time is left to recovery, persisted; after healing and
    recovery both stores agree and nothing acknowledged is lost."""
    timeouts = ChromaTimeouts(connect=0.5, read=1.0, call=2.0, whole=2.5)
    runner = world.open(timeouts=timeouts, retry=fx.RETRY)
    _seed(runner)
    faulty = fx.FaultAtWrite(runner.stores.vectors, proxy, MODES[mode])
    faulted = fx.swap_vectors(runner, faulty)
    began = time.monotonic()
    outcome = "ok"
    try:
        if op == "create":
            faulted.create("notes", {"id": 5, "body": "new"}, embedding=vec(5), document="new")
        elif op == "update":
            faulted.update("notes", 1, {"body": "new"}, embedding=vec(6), document="new")
        elif op == "delete":
            faulted.delete("notes", 1)
        else:
            items = [
                {"row": {"id": k, "body": "new"}, "embedding": vec(k), "document": "new"}
                for k in (5, 6)
            ]
            faulted.create_many("notes", items)
    except (DataIntegrityError, CompensationError) as exc:
        outcome = type(exc).__name__
    took = time.monotonic() - began
    faulty.stop()
    print(f"{mode}/{op}: {outcome} in {took:.2f}s")
    assert outcome != "ok", "every mode keeps the write from being answered in time"
    assert took < timeouts.whole + MARGIN, (outcome, took)

    world.settle()
    table = rows(world.db)
    if outcome == "ok":  # acknowledged: in both stores (settle checked they agree)
        expected = {
            "create": {1, 2, 3, 5},
            "update": {1, 2, 3},
            "delete": {2, 3},
            "create_many": {1, 2, 3, 5, 6},
        }[op]
        assert set(table) == expected


class _Later:
    """The system clock, ``seconds`` ahead: recovery run as if that much later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.seconds)


def test_a_write_that_lands_after_its_compensation_is_undone_by_the_recheck(
    world: fx.World, proxy: FaultProxy
) -> None:
    """The upsert gets no answer in time (held in the network); the call reads back (not
    there), compensates and raises. The held request then lands: replayed here exactly as
    it was sent, since the proxy cannot hold one past its client's hang-up. Recovery
    leaves the orphan until the grace period is over, then undoes it, once."""
    timeouts = ChromaTimeouts(connect=0.5, read=1.0, call=1.0, whole=10.0)
    runner = world.open(timeouts=timeouts, retry=fx.ONE_TRY)
    _seed(runner)
    faulty = fx.FaultAtWrite(
        runner.stores.vectors, proxy, ((0, "latency", 3.0), (0.3, "pass", None))
    )
    sent: list[Any] = []

    class _Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(faulty, name)

        def upsert(self, collection: str, records: Any) -> None:
            sent.append((collection, list(records)))
            faulty.upsert(collection, records)

    with pytest.raises(DataIntegrityError) as caught:
        fx.swap_vectors(runner, _Recording()).create(
            "notes", {"id": 5, "body": "late"}, embedding=vec(5), document="late"
        )
    faulty.stop()
    error = caught.value
    assert error.transient
    assert error.operation == "upsert"
    assert "notes:5" not in world.vectors()  # compensated
    collection, records = sent[0]
    runner.stores.vectors.upsert(collection, records)  # the late arrival
    # What landed is that saga's write (its document; no metadata, as sent), and the
    # log still names that saga, failed, as the last writer of notes:5.
    assert world.vectors()["notes:5"] == {"document": "late", "metadata": None}
    state = sync_states(world.db)["notes:5"]
    assert (state["saga_id"], state["sync_status"]) == (error.saga_id, "failed")

    assert runner.recover().rechecked_ids == ()  # not due yet
    assert "notes:5" in world.vectors()

    later = SagaRunner.open(
        world.db,
        chroma_host=fx.HOST,
        chroma_port=proxy.port,
        chroma_timeouts=timeouts,
        clock=_Later(RECHECK_GRACE + 1),
    )
    try:
        report = later.recover()
        assert report.rechecked_ids == (error.saga_id,)
        assert "notes:5" not in world.vectors()
        assert 5 not in rows(world.db)
        assert later.reconcile().clean
        assert later.recover().rechecked_ids == ()  # done once
    finally:
        later.close()


def test_no_recheck_when_the_write_was_answered(world: fx.World) -> None:
    """A write Chroma answered cannot land later: its compensation schedules nothing."""
    runner = world.open()
    _seed(runner)
    with pytest.raises(DataIntegrityError):  # the row's CHECK fails at the pivot
        runner.create("notes", {"id": 6, "body": "b", "score": -1.0}, embedding=vec(6))
    later = SagaRunner.open(
        world.db, chroma_host=fx.HOST, chroma_port=world.proxy.port, clock=_Later(3600)
    )
    try:
        assert later.recover().rechecked_ids == ()
    finally:
        later.close()
