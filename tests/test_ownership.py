"""One owner per key, one owner per saga: conflicts, leases, expiry, renewal, takeover.

Time is frozen with freezegun (the runner reads the wall clock through ``SystemClock``,
which freezegun patches); a runner is held mid-saga with a ``sleep`` failpoint while the
test moves the clock and lets another runner act.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from saga import (
    CompensationError,
    Item,
    LeaseLostError,
    LeasePolicy,
    RetryPolicy,
    SagaConflictError,
    SagaRunner,
    VectorRecord,
    failpoints,
)
from saga._clock import parse_stamp, stamp
from steps import DEFINITIONS
from tests._probe import history, run_worker, saga_row, saga_rows, sync_states
from tests.conftest import rewired, rows, saga_state, vec, vector_ids

T0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
TTL = 30.0


def _wait_for_hit(name: str, since: int, timeout: float = 10.0) -> None:
    """Wait until failpoint ``name`` fires once more than ``since`` (the process-wide
    count taken before the action started)."""
    deadline = time.monotonic() + timeout
    while failpoints.hits(name) <= since:
        assert time.monotonic() < deadline, f"failpoint {name} never reached"
        time.sleep(0.01)


class Call(threading.Thread):
    """Run ``action`` on a thread; keep what it returned or raised."""

    def __init__(self, action: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.action = action
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.action()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def outcome(self, timeout: float = 20.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call never returned"
        return self.error if self.error is not None else self.result


def _open(db_path: Path, chroma_path: Path) -> SagaRunner:
    runner = SagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), lease=LeasePolicy(ttl=TTL)
    )
    runner.track("notes")
    return runner


@pytest.fixture
def leased(db_path: Path, chroma_path: Path) -> Iterator[SagaRunner]:
    """A runner with an explicit 30 s lease."""
    with _open(db_path, chroma_path) as runner:
        yield runner


@pytest.fixture
def other(db_path: Path, chroma_path: Path, leased: SagaRunner) -> Iterator[SagaRunner]:
    """A second runner (its own lease owner) on the same stores, in this process."""
    with _open(db_path, chroma_path) as runner:
        assert runner.stores.log.owner != leased.stores.log.owner
        yield runner


def _create(runner: SagaRunner, key: int = 1) -> str:
    return runner.create(
        "notes", {"id": key, "body": "v0"}, embedding=vec(key), document="v0", metadata={"v": 0}
    ).saga_id


def _update(runner: SagaRunner, body: str, key: int = 1) -> Any:
    return runner.update(
        "notes", key, {"body": body}, embedding=vec(len(body)), document=body, metadata={"v": body}
    )


def _plant(db_path: Path, saga_id: str, **columns: Any) -> None:
    """Write saga_instances columns directly: a remote owner, a lease."""
    conn = sqlite3.connect(db_path)
    try:
        sets = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE saga_instances SET {sets} WHERE saga_id = ?", (*columns.values(), saga_id)
        )
        conn.commit()
    finally:
        conn.close()


# -- one owner per key ------------------------------------------------------------------


def test_two_threads_on_one_key_one_wins_the_other_is_refused(
    runner: SagaRunner, db_path: Path
) -> None:
    _create(runner)
    # The first saga to record `pending` holds the key while it sleeps there.
    with failpoints.armed("after:pending=sleep:0.5*1"):
        since = failpoints.hits("after:pending")
        first = Call(lambda: _update(runner, "first"))
        first.start()
        _wait_for_hit("after:pending", since)
        second = Call(lambda: _update(runner, "second!"))
        second.start()
        refused = second.outcome()
        won = first.outcome()

    assert not isinstance(won, BaseException), won
    assert won.state == "synced"
    assert isinstance(refused, SagaConflictError)
    assert not isinstance(refused, LeaseLostError)
    assert refused.key == 1
    assert refused.holder == won.saga_id
    assert won.saga_id in str(refused)
    # No lost update: both stores hold the winner's write, and the loser left no saga.
    assert rows(db_path)[1]["body"] == "first"
    vector = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
    assert vector.document == "first"
    assert vector.embedding == pytest.approx(vec(len("first")))
    assert vector.metadata == {"v": "first"}
    assert sync_states(db_path)["notes:1"]["saga_id"] == won.saga_id
    assert len(saga_rows(db_path)) == 2  # the create and the winner
    assert runner.reconcile().clean


def test_two_threads_racing_from_a_barrier_one_key_never_lose_an_update(
    runner: SagaRunner, db_path: Path
) -> None:
    _create(runner)
    barrier = threading.Barrier(2)

    def race(body: str) -> Any:
        barrier.wait()
        return _update(runner, body)

    # Distinct content per writer (document, metadata, embedding of vec(len(body))), so
    # that the loser's vector under the winner's row cannot pass for the winner's.
    bodies = ("alpha", "beta")
    calls = [Call(lambda: race(bodies[0])), Call(lambda: race(bodies[1]))]
    with failpoints.armed("after:pending=sleep:0.3"):
        for call in calls:
            call.start()
        outcomes = [call.outcome() for call in calls]

    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    # Both may win if one finished before the other began; one may not lose silently.
    assert all(isinstance(e, SagaConflictError) for e in lost), lost
    assert won
    if lost:
        assert lost[0].holder == won[0].saga_id
    last = max(won, key=lambda r: [h["at"] for h in _history_rows(db_path, r.saga_id)][-1])
    body = bodies[outcomes.index(last)]
    # Both stores hold the last winner's write, and the log names it as the writer.
    assert rows(db_path)[1]["body"] == body
    vector = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
    assert (vector.document, vector.metadata) == (body, {"v": body})
    assert vector.embedding == pytest.approx(vec(len(body)))
    assert sync_states(db_path)["notes:1"]["saga_id"] == last.saga_id


def _history_rows(db_path: Path, saga_id: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r)
            for r in conn.execute(
                "SELECT * FROM saga_history WHERE saga_id = ? ORDER BY id", (saga_id,)
            )
        ]
    finally:
        conn.close()


def test_a_batch_touching_a_held_key_is_refused_whole(runner: SagaRunner, db_path: Path) -> None:
    runner.create_many(
        "notes",
        [{"row": {"id": k, "body": "v0"}, "embedding": vec(k)} for k in (1, 2, 3)],
    )
    with failpoints.armed("after:pending=sleep:0.5*1"):
        since = failpoints.hits("after:pending")
        holder = Call(lambda: _update(runner, "held", key=2))
        holder.start()
        _wait_for_hit("after:pending", since)
        with pytest.raises(SagaConflictError) as caught:
            runner.delete_many("notes", [1, 2, 3])
        held = holder.outcome()

    assert caught.value.key == 2
    assert caught.value.holder == held.saga_id
    assert set(rows(db_path)) == {1, 2, 3}
    assert vector_ids(runner) == {"notes:1", "notes:2", "notes:3"}


# -- leases: expiry ---------------------------------------------------------------------


@pytest.fixture
def dead_saga(db_path: Path, chroma_path: Path) -> dict[str, Any]:
    """A create whose process died right after recording `pending` (a real exit)."""
    died = run_worker(db_path, chroma_path, 7, "after:pending=exit")
    assert died.returncode == 86, died.stderr
    [saga] = saga_rows(db_path)
    assert saga["state"] == "pending"
    return saga


def test_a_remote_owners_live_lease_is_respected_until_it_expires(
    dead_saga: dict[str, Any], leased: SagaRunner, db_path: Path
) -> None:
    saga_id = dead_saga["saga_id"]
    created = parse_stamp(dead_saga["created_at"])
    expires = parse_stamp(dead_saga["lease_expires_at"])
    # The lease is the default 30 s, from the owner's two reads of its clock.
    assert abs((expires - created).total_seconds() - TTL) < 1
    # The owner runs on another host: its pid means nothing here, only the lease counts.
    _plant(db_path, saga_id, lease_owner="otherhost:1:tok")

    for moment in (
        created,
        expires - dt.timedelta(seconds=1),
        expires - dt.timedelta(microseconds=1),
    ):
        with freeze_time(moment):
            report = leased.recover()
        assert report.skipped_ids == (saga_id,), moment
        assert (report.resumed, report.compensated, report.failed) == (0, 0, 0)
        saga = saga_row(db_path, saga_id)
        assert saga is not None
        assert (saga["state"], saga["lease_owner"]) == ("pending", "otherhost:1:tok")
    assert rows(db_path) == {}

    # At the very instant of expiry the lease is over: recovery takes the saga.
    with freeze_time(expires):
        report = leased.recover()
    assert report.resumed_ids == (saga_id,)
    assert saga_state(db_path, saga_id) == "synced"
    assert set(rows(db_path)) == {7}
    assert vector_ids(leased) == {"notes:7"}
    claim = saga_row(db_path, saga_id)
    assert claim is not None
    assert claim["attempts"] == 1
    assert claim["lease_owner"] is None  # released on `synced`


def test_a_lease_already_expired_when_recovery_looked_is_claimed_only_once(
    dead_saga: dict[str, Any], leased: SagaRunner, other: SagaRunner, db_path: Path
) -> None:
    saga_id = dead_saga["saga_id"]
    _plant(db_path, saga_id, lease_owner="otherhost:1:tok")
    expires = parse_stamp(dead_saga["lease_expires_at"])
    [seen] = leased.in_flight()

    with freeze_time(expires + dt.timedelta(seconds=1)):
        first = leased.stores.log.claim(seen)
        second = other.stores.log.claim(seen)  # the same stale view: the CAS refuses it

    assert first is not None
    assert second is None
    saga = saga_row(db_path, saga_id)
    assert saga is not None
    assert saga["lease_owner"] == leased.stores.log.owner
    assert saga["attempts"] == 1


# -- leases: renewal --------------------------------------------------------------------


def test_a_running_saga_renews_its_lease_and_keeps_recovery_away(
    leased: SagaRunner, other: SagaRunner, db_path: Path
) -> None:
    with freeze_time(T0) as clock:
        _create(leased)
        # Held after `pending` (lease to T0+30) and again before the vector step, which
        # renews the lease first when less than half of it is left.
        points = "after:pending=sleep:0.6*1;before:write_vectors=sleep:0.6*1"
        with failpoints.armed(points):
            since = {p: failpoints.hits(p) for p in ("after:pending", "before:write_vectors")}
            call = Call(lambda: _update(leased, "renewed"))
            call.start()
            _wait_for_hit("after:pending", since["after:pending"])
            [saga] = leased.in_flight()
            assert parse_stamp(saga.lease_expires_at or "") == T0 + dt.timedelta(seconds=TTL)
            clock.move_to(T0 + dt.timedelta(seconds=20))
            _wait_for_hit("before:write_vectors", since["before:write_vectors"])
            [renewed] = leased.in_flight()
            assert renewed.lease_expires_at == stamp(T0 + dt.timedelta(seconds=20 + TTL))
            # Past the first expiry, before the renewed one: the lease is live.
            clock.move_to(T0 + dt.timedelta(seconds=35))
            report = other.recover()
            assert report.skipped_ids == (saga.saga_id,)
            assert report.resumed == 0
            outcome = call.outcome()

    assert not isinstance(outcome, BaseException), outcome
    assert outcome.state == "synced"
    assert rows(db_path)[1]["body"] == "renewed"
    assert [e for e, _, _ in history(db_path, saga.saga_id)] == [
        "begin",
        "write_vectors",
        "commit_rows",
        "finish",
    ]


# -- leases: takeover -------------------------------------------------------------------


class CountingWrites:
    """The real vector store, counting the writes made through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[tuple[str, list[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None:
        self.writes.append(("upsert", [r.id for r in records]))
        self.inner.upsert(collection, records)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self.writes.append(("delete", list(ids)))
        self.inner.delete(collection, ids)


@pytest.mark.parametrize(
    ("held_at", "writes_before_loss"),
    [("after:pending", 0), ("after:write_vectors", 1)],
    ids=["before-vector-step", "before-pivot"],
)
def test_a_runner_whose_lease_was_taken_stops_with_lease_lost(
    leased: SagaRunner,
    other: SagaRunner,
    db_path: Path,
    held_at: str,
    writes_before_loss: int,
) -> None:
    with freeze_time(T0) as clock:
        _create(leased)
        counting = CountingWrites(leased.stores.vectors)
        counted = rewired(leased, vectors=counting)
        with failpoints.armed(f"{held_at}=sleep:0.8*1"):
            since = failpoints.hits(held_at)
            call = Call(lambda: _update(counted, "taken over"))
            call.start()
            _wait_for_hit(held_at, since)
            [saga] = leased.in_flight()
            # The lease runs out while the runner is stalled; another runner takes over.
            clock.move_to(T0 + dt.timedelta(seconds=TTL + 1))
            report = other.recover()
            assert report.resumed_ids == (saga.saga_id,)
            lost = call.outcome()

    assert isinstance(lost, LeaseLostError)
    assert lost.saga_id == saga.saga_id
    # The stalled runner stopped: no write after the loss, no compensation of the
    # taken-over saga, and every state was recorded once, by whoever owned it then.
    assert len(counting.writes) == writes_before_loss
    assert [e for e, _, _ in history(db_path, saga.saga_id)] == [
        "begin",
        "write_vectors",
        "commit_rows",
        "finish",
    ]
    assert saga_state(db_path, saga.saga_id) == "synced"
    assert rows(db_path)[1]["body"] == "taken over"
    # Chroma holds the taken-over saga's vector (not the create's), written under it.
    vector = leased.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
    assert (vector.document, vector.metadata) == ("taken over", {"v": "taken over"})
    assert vector.embedding == pytest.approx(vec(len("taken over")))
    assert sync_states(db_path)["notes:1"]["saga_id"] == saga.saga_id
    assert leased.reconcile().clean


def test_a_runner_recovers_its_own_saga_left_compensating(
    leased: SagaRunner, db_path: Path
) -> None:
    with (
        failpoints.armed("chroma.upsert.after=raise;chroma.delete=raise"),
        pytest.raises(CompensationError) as caught,
    ):
        _create(leased)
    saga = saga_row(db_path, caught.value.saga_id)
    assert saga is not None
    assert saga["state"] == "compensating"

    # Nothing drives the saga any more: recovery must take it, at the latest once the
    # lease it was started with has long expired.
    later = parse_stamp(saga["created_at"]) + dt.timedelta(seconds=3 * TTL)
    with freeze_time(later):
        report = leased.recover()

    assert report.compensated_ids == (caught.value.saga_id,)
    assert vector_ids(leased) == set()


class _Bounded:
    """The real vector store, claiming that one call may take ``bound`` seconds (a
    remote store's ``call_bound``); the engine's step budget is twice that."""

    def __init__(self, inner: Any, bound: float | None) -> None:
        self._inner = inner
        self.call_bound = bound

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingRenewals:
    """The real saga log, noting each lease renewal."""

    def __init__(self, inner: Any, renewed: list[str]) -> None:
        self._inner = inner
        self._renewed = renewed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def renew(self, saga: Any) -> Any:
        self._renewed.append(saga.saga_id)
        return self._inner.renew(saga)


@pytest.mark.parametrize(
    ("call_bound", "renewals"),
    [(None, 0), (10.0, 1)],
    ids=["embedded-no-budget", "server-20s-budget"],
)
def test_the_lease_is_renewed_before_a_step_that_could_outlive_it(
    leased: SagaRunner, call_bound: float | None, renewals: int
) -> None:
    """17 s of a 30 s lease are left when the vector step starts: more than half, so
    only a step that may take 20 s (a 10 s call bound, write and read-back) renews."""
    renewed: list[str] = []
    runner = rewired(
        leased,
        vectors=_Bounded(leased.stores.vectors, call_bound),
        log=_CountingRenewals(leased.stores.log, renewed),
    )
    engine = runner._services.engine
    assert engine.step_budget == 2 * (call_bound or 0.0)
    with freeze_time(T0) as clock:
        item = Item(key=5, row={"body": "b"}, embedding=tuple(vec(5)), document="b")
        saga, ctx = engine.begin(DEFINITIONS["create"], runner.spec("notes"), "create", [item])
        clock.move_to(T0 + dt.timedelta(seconds=TTL - 17))
        settled = engine.drive(DEFINITIONS["create"], saga, ctx)

    assert settled.saga.state == "synced"
    assert renewed == [saga.saga_id] * renewals
