"""An atomic unit over two tables and two collections, SIGKILLed at every transition
point, then recovered under both policies: all or nothing across both tables.

The unit (``tests/_unit_worker.py``): a new summary and a constraint of it (keys SQLite
assigns), summary 1 updated, constraint 1 deleted. Each case copies one seeded folder,
runs the unit in a child process that a failpoint SIGKILLs, and recovers a copy of the
wreck under each policy. Both stores must then hold exactly the state before the unit
or exactly the state a uncrashed run leaves (rows, and vectors bit for bit but for
the ``saga_id`` each vector names), the first unless recovery may roll forward.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from saga import RetryPolicy, SagaRunner
from saga._engine import RECHECK_GRACE
from tests._unit_worker import open_runner
from tests.conftest import rewired

ROOT = Path(__file__).resolve().parent.parent
FAILS_PIVOT = "sqlite.commit_rows=raise:sqlite-ioerror"

# name -> (failpoints, how recovery may settle it: "either" by policy, "new", or "old")
POINTS = {
    "after:reserve": ("after:reserve=kill", "old"),  # the block never ended
    "after:pending": ("after:pending=kill", "either"),
    "before:write_vectors": ("before:write_vectors=kill", "either"),
    "first-part-applied": ("chroma.upsert.after=kill", "either"),
    "second-part-applied": ("chroma.upsert.after=kill@2", "either"),
    "third-part-applied": ("chroma.upsert.after=kill@3", "either"),
    "delete-applied": ("chroma.delete.after=kill", "either"),
    "after:write_vectors": ("after:write_vectors=kill", "either"),
    "during:commit_rows": ("during:commit_rows=kill", "either"),
    "after:synced": ("after:synced=kill", "new"),
    "after:compensating": (f"{FAILS_PIVOT};after:compensating=kill", "old"),
    "compensate:write_vectors": (f"{FAILS_PIVOT};compensate:write_vectors=kill", "old"),
}


def worker(mode: str, folder: Path, failpoints: str = "") -> int:
    env = {**os.environ, "SAGA_FAILPOINTS": failpoints}
    done = subprocess.run(
        [sys.executable, "-m", "tests._unit_worker", mode, str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode


def snapshot(folder: Path) -> dict[str, Any]:
    """Both tables and both collections, exactly (``saga_id`` aside)."""
    conn = sqlite3.connect(folder / "app.db")
    try:
        rows = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("summaries", "constraints")
        }
    finally:
        conn.close()
    with SagaRunner.open(folder / "app.db", chroma_path=folder / "chroma") as runner:
        vectors = {}
        for table in ("summaries", "constraints"):
            ids = [r.id for page in runner.stores.vectors.iter_records(table, 100) for r in page]
            for vid, r in runner.stores.vectors.get(table, ids, embeddings=True).items():
                metadata = dict(r.metadata or {})  # exactly the caller's: compared whole
                vectors[vid] = (array("f", r.embedding or ()).tobytes(), r.document, metadata)
    return {"rows": rows, "vectors": vectors}


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("unit")
    (base / "seeded").mkdir()
    assert worker("seed", base / "seeded") == 0
    shutil.copytree(base / "seeded", base / "clean")
    assert worker("unit", base / "clean") == 0
    return {"base": base, "old": snapshot(base / "seeded"), "new": snapshot(base / "clean")}


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_unit_killed_at_any_point_is_all_or_nothing_after_recovery(
    point: str, states: dict[str, Any], tmp_path: Path
) -> None:
    spec, settles = POINTS[point]
    crashed = tmp_path / "crashed"
    shutil.copytree(states["base"] / "seeded", crashed)
    assert worker("unit", crashed, spec) == -signal.SIGKILL, "the failpoint should kill"
    for policy in ("resume", "compensate"):
        copy = tmp_path / policy
        shutil.copytree(crashed, copy)
        with open_runner(copy) as runner:
            in_flight = runner.in_flight()
            assert [s.definition for s in in_flight] == ([] if settles == "new" else ["atomic"])
            report = runner.recover(policy=policy)
            assert report.unsettled == 0, report
            assert runner.in_flight() == []
            assert runner.reconcile().clean
            again = runner.recover(policy=policy)
            assert (again.resumed, again.compensated, again.unsettled) == (0, 0, 0)
        forward = settles == "new" or (settles == "either" and policy == "resume")
        assert snapshot(copy) == states["new" if forward else "old"], policy


def test_the_clean_run_changed_both_tables(states: dict[str, Any]) -> None:
    """The two states the cases compare against differ in both tables (else the
    all-or-nothing check could not fail)."""
    old, new = states["old"], states["new"]
    for table in ("summaries", "constraints"):
        assert old["rows"][table] != new["rows"][table]
    assert {v.partition(":")[0] for v in set(old["vectors"]) ^ set(new["vectors"])} == {
        "summaries",
        "constraints",
    }
    with SagaRunner.open(
        states["base"] / "clean" / "app.db",
        chroma_path=states["base"] / "clean" / "chroma",
        retry=RetryPolicy.disabled(),
    ) as runner:
        assert runner.reconcile().clean


class _AsIfRemote:
    """The real embedded store, reporting itself remote: a write sent may land late."""

    remote = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Later:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.seconds)


def test_a_unit_compensated_by_recovery_is_rechecked_for_late_writes(
    states: dict[str, Any], tmp_path: Path
) -> None:
    """Recovery cannot know whether a dead unit's requests are still on their way, so
    with a remote store its compensation schedules a re-check over every part; a write
    landing meanwhile is undone once the grace period is over."""
    crashed = tmp_path / "crashed"
    shutil.copytree(states["base"] / "seeded", crashed)
    assert worker("unit", crashed, "after:write_vectors=kill") == -signal.SIGKILL
    with open_runner(crashed) as runner:
        landed = {
            table: runner.stores.vectors.get(table, [f"{table}:2"], embeddings=True)
            for table in ("summaries", "constraints")
        }
        assert all(len(records) == 1 for records in landed.values())
        remote = rewired(runner, vectors=_AsIfRemote(runner.stores.vectors))
        report = remote.recover(policy="compensate")
        assert len(report.compensated_ids) == 1
        for table, records in landed.items():  # the late arrivals
            runner.stores.vectors.upsert(table, list(records.values()))
        assert remote.recover().rechecked_ids == ()  # not due yet
    later = SagaRunner.open(
        crashed / "app.db",
        chroma_path=crashed / "chroma",
        clock=_Later(RECHECK_GRACE + 1),
        retry=RetryPolicy.disabled(),
    )
    with later:
        late = rewired(later, vectors=_AsIfRemote(later.stores.vectors))
        assert late.recover().rechecked_ids == report.compensated_ids
        assert late.reconcile().clean
    assert snapshot(crashed) == states["old"]
