"""Recovery after real crashes: a writer subprocess is killed at every transition point
of every saga kind, then recovery settles what it left, under both policies.

Invariants checked after every recovery: no saga in flight, no orphan vector, no row
without its vector, no drift (reconcile clean), every write acknowledged before the
kill present, and the saga's own outcome all-or-nothing (new state or old state).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from saga import CompensationError, Item, RetryPolicy, SagaRunner, failpoints
from steps import DEFINITIONS
from tests._recovery_worker import body, embedding_for
from tests.conftest import make_db, rewired, stored_vectors

ROOT = Path(__file__).resolve().parent.parent
OPS = ["create", "update", "delete", "create_many", "update_many", "delete_many"]
OLD_KEYS = [1, 2, 3]
NEW_KEYS = [11, 12, 13]

# point -> (failpoint spec, whether the saga is past its pivot when the process dies)
FORWARD_POINTS = {
    "after:pending": ("after:pending=kill", False),
    "before:write_vectors": ("before:write_vectors=kill", False),
    "vector_applied": ("chroma.upsert.after=kill;chroma.delete.after=kill", False),
    "second_sub_batch": ("chroma.upsert.after=kill@2;chroma.delete.after=kill@2", False),
    "after:write_vectors": ("after:write_vectors=kill", False),
    "during:commit_rows": ("during:commit_rows=kill", False),
    "after:synced": ("after:synced=kill", True),
}
# A failure first (the pivot's SQLite write fails), then death while compensating.
BACKWARD_POINTS = {
    "after:compensating": "sqlite.commit_rows=raise:sqlite-ioerror;after:compensating=kill",
    "compensate:write_vectors": (
        "sqlite.commit_rows=raise:sqlite-ioerror;compensate:write_vectors=kill"
    ),
}


def worker(args: list[str], failpoints: str = "", timeout: float = 60) -> int:
    env = {**os.environ, "SAGA_FAILPOINTS": failpoints}
    done = subprocess.run(
        [sys.executable, "-m", "tests._recovery_worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode


def open_runner(folder: Path) -> SagaRunner:
    runner = SagaRunner.open(
        folder / "app.db", chroma_path=folder / "chroma", retry=RetryPolicy.disabled()
    )
    runner.track("notes")
    return runner


SEEDED: dict[Path, dict[str, Any]] = {}  # crashed folder -> its vectors once seeded


def seed_old_rows(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    make_db(folder / "app.db")
    with open_runner(folder) as runner:
        for key in OLD_KEYS:
            text = body("old", key)
            runner.create(
                "notes",
                {"id": key, "body": text},
                embedding=embedding_for(text),
                document=text,
                metadata={"seed": key, "f": key / 3},
            )
        SEEDED[folder] = stored_vectors(runner)


def assert_old_vectors_exact(runner: SagaRunner, crashed: Path, op: str, keys: list[int]) -> None:
    """A compensated update or delete put back the seeded vectors bit for bit (from the
    log's copy): embedding, document, and metadata with no key of the new write left."""
    if op.startswith("create"):
        return
    wanted = {f"notes:{k}" for k in keys}
    now = {v: c for v, c in stored_vectors(runner).items() if v in wanted}
    assert now == {v: c for v, c in SEEDED[crashed].items() if v in wanted}


def keys_for(op: str) -> list[int]:
    pool = NEW_KEYS if op.startswith("create") else OLD_KEYS
    return pool if op.endswith("_many") else pool[:1]


def observed(runner: SagaRunner, keys: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """key -> (row body, vector document), None where absent."""
    with runner.stores.log.db.read() as conn:
        bodies = {r[0]: r[1] for r in conn.execute("SELECT id, body FROM notes")}
    vectors = runner.stores.vectors.get("notes", [f"notes:{k}" for k in keys])
    return {
        k: (bodies.get(k), vectors[f"notes:{k}"].document if f"notes:{k}" in vectors else None)
        for k in keys
    }


def expected(op: str, keys: list[int], applied: bool) -> dict[int, tuple[str | None, ...]]:
    if op.startswith("create"):
        return {k: (body("new", k),) * 2 if applied else (None, None) for k in keys}
    if op.startswith("update"):
        return {k: (body("new" if applied else "old", k),) * 2 for k in keys}
    return {k: (None, None) if applied else (body("old", k),) * 2 for k in keys}


def assert_consistent(runner: SagaRunner) -> None:
    assert runner.in_flight() == []
    report = runner.reconcile()
    assert report.clean, report
    assert not report.orphan_vectors
    assert not report.missing_vectors
    assert not report.drift


def assert_old_rows_acknowledged(runner: SagaRunner, op: str, keys: list[int]) -> None:
    """The rows written (and acknowledged) before the crash are all still there."""
    untouched = [k for k in OLD_KEYS if k not in keys or op.startswith("create")]
    for key, (row, doc) in observed(runner, untouched).items():
        assert (row, doc) == (body("old", key), body("old", key))


def crash_once(tmp_path: Path, op: str, spec: str) -> Path:
    """Seed, then run one saga of ``op`` in a subprocess that dies at ``spec``."""
    seed_old_rows(tmp_path)
    args = ["op", "app.db", "chroma", "--op", op, "--tag", "new"]
    args += ["--keys", ",".join(map(str, keys_for(op)))]
    if op.endswith("_many"):
        args += ["--small-batches", "2"]
    code = worker([a if a not in ("app.db", "chroma") else str(tmp_path / a) for a in args], spec)
    assert code == -signal.SIGKILL, "the failpoint should have killed the writer"
    return tmp_path


def recover_copy(source: Path, target: Path, policy: str, in_flight: int = 1) -> SagaRunner:
    """Recovery on a copy of the crashed stores (so both policies see the same crash)."""
    shutil.copytree(source, target)
    runner = open_runner(target)
    assert len(runner.in_flight()) == in_flight
    report = runner.recover(policy=policy)
    assert report.failed == 0, report
    assert report.resumed + report.compensated == in_flight, report
    return runner


@pytest.mark.parametrize(
    ("point", "op"),
    [
        (point, op)
        for point in sorted(FORWARD_POINTS)
        for op in OPS
        if point != "second_sub_batch" or op.endswith("_many")  # only batches have one
    ],
)
def test_kill_at_forward_point_then_recover_both_policies(
    tmp_path: Path, op: str, point: str
) -> None:
    spec, past_pivot = FORWARD_POINTS[point]
    crashed = crash_once(tmp_path / "crashed", op, spec)
    keys = keys_for(op)
    for policy in ("resume", "compensate"):
        settled = 0 if past_pivot else 1
        with recover_copy(crashed, tmp_path / policy, policy, settled) as runner:
            assert_consistent(runner)
            applied = past_pivot or policy == "resume"
            assert observed(runner, keys) == expected(op, keys, applied), policy
            assert_old_rows_acknowledged(runner, op, keys)
            if not applied:
                assert_old_vectors_exact(runner, crashed, op, keys)
            again = runner.recover(policy=policy)
            assert (again.resumed, again.compensated, again.failed) == (0, 0, 0)


def commit_vector_written_alone(db: Path) -> str:
    """What an earlier build committed after the vector step: ``vector_written`` on its
    own, before the row's transaction (this build folds it into that transaction)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        [(saga_id,)] = conn.execute("SELECT saga_id FROM saga_instances WHERE state = 'pending'")
        conn.execute(
            "UPDATE saga_instances SET state = 'vector_written' WHERE saga_id = ?", (saga_id,)
        )
        conn.execute(
            "UPDATE vector_sync_state SET sync_status = 'vector_written' WHERE saga_id = ?",
            (saga_id,),
        )
        conn.execute(
            "INSERT INTO saga_history (saga_id, from_state, to_state, event, at) "
            "VALUES (?, 'pending', 'vector_written', 'write_vectors', '2026-11-26T00:00:00Z')",
            (saga_id,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return str(saga_id)


@pytest.mark.parametrize("op", OPS)
def test_a_saga_left_in_vector_written_by_an_earlier_build_is_recovered(
    tmp_path: Path, op: str
) -> None:
    crashed = crash_once(tmp_path / "crashed", op, "after:write_vectors=kill")
    saga_id = commit_vector_written_alone(crashed / "app.db")
    keys = keys_for(op)
    for policy, path in (
        ("resume", ["commit_rows", "finish"]),
        ("compensate", ["compensate", "compensated"]),
    ):
        with recover_copy(crashed, tmp_path / policy, policy) as runner:
            assert_consistent(runner)
            assert observed(runner, keys) == expected(op, keys, policy == "resume"), policy
            assert_old_rows_acknowledged(runner, op, keys)
            if policy == "compensate":
                assert_old_vectors_exact(runner, crashed, op, keys)
            events = [h["event"] for h in runner.stores.log.history(saga_id)]
            assert events == ["begin", "write_vectors", *path], policy


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("point", sorted(BACKWARD_POINTS))
def test_kill_while_compensating_then_recover(tmp_path: Path, op: str, point: str) -> None:
    crashed = crash_once(tmp_path / "crashed", op, BACKWARD_POINTS[point])
    keys = keys_for(op)
    # Once compensation has begun, both policies must finish it: never roll forward.
    for policy in ("resume", "compensate"):
        with recover_copy(crashed, tmp_path / policy, policy) as runner:
            assert_consistent(runner)
            assert observed(runner, keys) == expected(op, keys, applied=False)
            assert_old_vectors_exact(runner, crashed, op, keys)


def test_crash_during_recovery_is_itself_recoverable(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "create_many", "after:write_vectors=kill")
    db, chroma = str(crashed / "app.db"), str(crashed / "chroma")
    # Recovery claims the saga, then dies right after re-applying the rows' commit.
    assert worker(["recover", db, chroma], "during:commit_rows=kill") == -signal.SIGKILL
    assert worker(["recover", db, chroma], "after:claim=kill") == -signal.SIGKILL
    with open_runner(crashed) as runner:
        stuck = runner.in_flight()
        assert len(stuck) == 1
        assert stuck[0].attempts == 2  # both claims were counted
        report = runner.recover()
        assert report.resumed == 1
        assert_consistent(runner)
        assert observed(runner, NEW_KEYS) == expected("create", NEW_KEYS, applied=True)


def test_recovery_gives_up_forward_after_max_attempts(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "create", "after:pending=kill")
    with open_runner(crashed) as runner:
        with failpoints.armed("chroma.upsert=raise:chroma-unavailable"):
            first = runner.recover(max_attempts=2)
            assert first.failed == 1
            saga = runner.in_flight()[0]
            assert (saga.state, saga.attempts) == ("pending", 1)
            assert saga.last_error
            second = runner.recover(max_attempts=2)
        assert second.compensated == 1, second
        assert_consistent(runner)
        assert observed(runner, [11]) == {11: (None, None)}


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "update", "after:write_vectors=kill")
    with open_runner(crashed) as runner:
        report = runner.recover(dry_run=True)
        assert (report.resumed, report.dry_run) == (1, True)
        assert [s.state for s in runner.in_flight()] == ["pending"]
        assert runner.recover(policy="compensate", dry_run=True).compensated == 1
        assert runner.recover().resumed == 1


def test_older_than_leaves_young_sagas(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "create", "after:pending=kill")
    with open_runner(crashed) as runner:
        young = runner.recover(older_than=dt.timedelta(hours=1))
        assert (young.resumed, young.skipped) == (0, 0)
        assert len(runner.in_flight()) == 1
        assert runner.recover(older_than=dt.timedelta(0)).resumed == 1


@pytest.mark.slow
def test_random_moment_sigkill_loop(tmp_path: Path) -> None:
    """A mixed workload killed at random moments, recovered between rounds."""
    rounds = int(os.environ.get("SAGA_CRASH_ROUNDS", "8"))
    print(f"crash loop: {rounds} rounds")
    rng = random.Random(20261126)
    seed_old_rows(tmp_path)
    db, chroma = str(tmp_path / "app.db"), str(tmp_path / "chroma")
    acknowledged = 0
    for round_no in range(rounds):
        journal = tmp_path / f"journal-{round_no}.txt"
        env = {**os.environ, "SAGA_FAILPOINTS": ""}
        args = ["workload", db, chroma, "--seed", str(round_no), "--journal", str(journal)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests._recovery_worker", *args], cwd=ROOT, env=env
        )
        time.sleep(rng.uniform(2.0, 4.0))  # chromadb's import takes ~1.5 s of this
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with open_runner(tmp_path) as runner:
            report = runner.recover()
            assert report.failed == 0, (round_no, report)
            assert_consistent(runner)
            acknowledged += check_journal(runner, journal)
    # The kills must land mid-workload, not before it starts: writes were acknowledged.
    print(f"crash loop: {acknowledged} acknowledged writes checked")
    assert acknowledged >= rounds, acknowledged


def check_journal(runner: SagaRunner, journal: Path) -> int:
    """Every acknowledged write of the round is in both stores; returns how many."""
    if not journal.exists():
        return 0
    lines = journal.read_text().splitlines()
    for line in lines:
        status, op, key_text, tag, *_ = line.split()
        keys = [int(k) for k in key_text.split(",")]
        if status != "ok":
            continue
        state = observed(runner, keys)
        for key in keys:
            if op.startswith("delete"):
                assert state[key] == (None, None), line
            else:
                assert state[key] == (body(tag, key), body(tag, key)), line
    return sum(line.startswith("ok ") for line in lines)


def test_the_same_runner_recovers_a_saga_its_call_could_not_settle(tmp_path: Path) -> None:
    seed_old_rows(tmp_path)
    with open_runner(tmp_path) as runner:
        text = body("new", 11)
        with (
            failpoints.armed("chroma.upsert.after=raise;chroma.delete=raise"),
            pytest.raises(CompensationError) as caught,
        ):
            runner.create("notes", {"id": 11, "body": text}, embedding=embedding_for(text))
        stuck = runner.in_flight()
        assert [(s.saga_id, s.state) for s in stuck] == [(caught.value.saga_id, "compensating")]
        assert stuck[0].lease_owner is None  # let go at once: no lease to wait out
        report = runner.recover()
        assert report.compensated_ids == (caught.value.saga_id,)
        assert_consistent(runner)
        assert observed(runner, [11]) == {11: (None, None)}


class CountingVectors:
    """Wraps the real Chroma store and counts its write requests."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.writes = 0

    def upsert(self, *args: object, **kwargs: object) -> None:
        self.writes += 1
        self._inner.upsert(*args, **kwargs)  # type: ignore[attr-defined]

    def delete(self, *args: object, **kwargs: object) -> None:
        self.writes += 1
        self._inner.delete(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def plant_pending(runner: SagaRunner, op: str, key: int) -> None:
    """Exactly what a writer killed right after `pending` leaves, minus the process."""
    text = body("new", key)
    row = {"body": text}
    item = Item(key=key, row=row, embedding=tuple(embedding_for(text)), document=text)
    if op == "delete":
        item = Item(key=key)
    saga, _ctx = runner._services.engine.begin(DEFINITIONS[op], runner.spec("notes"), op, [item])
    runner.stores.log.release(saga)


def test_recovery_shares_chroma_requests_across_a_group(tmp_path: Path) -> None:
    seed_old_rows(tmp_path)
    with open_runner(tmp_path) as runner:
        for key in range(100, 140):
            plant_pending(runner, "create", key)
        plant_pending(runner, "update", 1)
        plant_pending(runner, "delete", 2)
        counting = CountingVectors(runner.stores.vectors)
        report = rewired(runner, vectors=counting).recover()
        assert (report.resumed, report.failed) == (42, 0)
        # One request per step kind (create, update, delete), not one per saga.
        assert counting.writes == 3
        assert_consistent(runner)
        assert observed(runner, [100, 139, 1, 2]) == {
            100: (body("new", 100),) * 2,
            139: (body("new", 139),) * 2,
            1: (body("new", 1),) * 2,
            2: (None, None),
        }


class RecordingVectors(CountingVectors):
    """Also keeps the ids of every vector upserted."""

    def __init__(self, inner: object) -> None:
        super().__init__(inner)
        self.upserted: list[str] = []

    def upsert(self, collection: str, records: list[Any]) -> None:
        self.upserted.extend(record.id for record in records)
        super().upsert(collection, records)


def test_recovery_does_not_rewrite_a_vector_already_stored_exactly(tmp_path: Path) -> None:
    """Writers killed after their vector step: recovery reads the group's vectors and
    upserts only those not stored exactly as the saga would write them."""
    seed_old_rows(tmp_path)
    with open_runner(tmp_path) as runner:
        spec = runner.spec("notes")
        for key in range(100, 105):
            text = body("new", key)
            item = Item(
                key=key, row={"body": text}, embedding=tuple(embedding_for(text)), document=text
            )
            saga, ctx = runner._services.engine.begin(DEFINITIONS["create"], spec, "create", [item])
            written = ctx.new_vector(item)
            if key == 102:  # changed behind the saga's back after its vector step
                written = attrs.evolve(written, document="tampered")
            if key != 104:  # 104's writer died before its vector step
                runner.stores.vectors.upsert("notes", [written])
            runner.stores.log.release(saga)
        recording = RecordingVectors(runner.stores.vectors)
        report = rewired(runner, vectors=recording).recover()
        assert (report.resumed, report.failed) == (5, 0)
        assert sorted(recording.upserted) == ["notes:102", "notes:104"]
        assert_consistent(runner)
        assert observed(runner, list(range(100, 105))) == {
            key: (body("new", key),) * 2 for key in range(100, 105)
        }
