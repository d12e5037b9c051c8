"""A process that dies at any point of a create leaves a truthful, persisted saga.

Each case runs a real child process (``tests._crash_worker``) that creates note 1 with
``SAGA_FAILPOINTS="<point>=exit"`` (or ``kill``: SIGKILL) and dies there. The parent
then reads the SQLite file with plain ``sqlite3`` and opens the Chroma folder only once
the child is dead. The children run in parallel, once per module, to keep this fast.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import attrs
import pytest

from saga import failpoints
from tests._probe import (
    finish_worker,
    history,
    payloads,
    saga_rows,
    start_worker,
    stored_vectors,
    sync_states,
    worker_embedding,
)
from tests.conftest import make_db, rows, vec

KEY = 1
CHROMA_FAILS = "chroma.upsert.after=raise"  # applied, then raised: compensation follows


@attrs.frozen
class Case:
    """Where the child dies, and what must be on disk afterwards."""

    point: str
    state: str
    row: bool = False
    vector: bool = False
    payload: bool = True
    action: str = "exit"
    fault: str = ""

    @property
    def failpoints(self) -> str:
        armed = f"{self.point}={self.action}"
        return f"{self.fault};{armed}" if self.fault else armed

    @property
    def id(self) -> str:
        label = f"{self.point}={self.action}"
        return f"chroma-fault+{label}" if self.fault else label


CASES = [
    Case("after:pending", "pending"),
    Case("before:write_vectors", "pending"),
    Case("chroma.upsert.after", "pending", vector=True),
    Case("after:write_vectors", "pending", vector=True),
    # The vector step's move rides on the pivot's transaction: until that commits the
    # saga is `pending` with its vector possibly applied; then `vector_written`,
    # `sqlite_committed` and `synced` are committed at once.
    Case("during:commit_rows", "pending", vector=True),
    Case("after:vector_written", "synced", row=True, vector=True, payload=False),
    Case("after:sqlite_committed", "synced", row=True, vector=True, payload=False),
    Case("after:synced", "synced", row=True, vector=True, payload=False),
    Case("after:compensating", "compensating", vector=True, fault=CHROMA_FAILS),
    Case("compensate:write_vectors", "compensating", vector=True, fault=CHROMA_FAILS),
    Case("chroma.delete.after", "compensating", fault=CHROMA_FAILS),
    Case("after:failed", "failed", payload=False, fault=CHROMA_FAILS),
    # SIGKILL: no atexit, no finally, no flush.
    Case("after:write_vectors", "pending", vector=True, action="kill"),
    Case("during:commit_rows", "pending", vector=True, action="kill"),
    Case("after:compensating", "compensating", vector=True, action="kill", fault=CHROMA_FAILS),
]


@attrs.frozen
class Crash:
    db: Path
    chroma: Path
    pid: int
    process: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Crash]:
    """Every case's child, started together and waited for."""
    started = {}
    for case in CASES:
        folder = tmp_path_factory.mktemp("crash")
        db, chroma = make_db(folder / "app.db"), folder / "chroma"
        started[case.id] = (db, chroma, start_worker(db, chroma, KEY, case.failpoints))
    return {
        name: Crash(db, chroma, worker.pid, finish_worker(worker))
        for name, (db, chroma, worker) in started.items()
    }


EXPECTED_EXIT = {"exit": failpoints.EXIT_CODE, "kill": -signal.SIGKILL}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_crash_leaves_the_truthful_state(case: Case, crashes: dict[str, Crash]) -> None:
    crash = crashes[case.id]
    assert crash.process.returncode == EXPECTED_EXIT[case.action], crash.process.stderr

    [saga] = saga_rows(crash.db)
    assert saga["state"] == case.state
    assert history(crash.db, saga["saga_id"])[-1][2] == case.state
    assert sync_states(crash.db)[f"notes:{KEY}"]["sync_status"] == case.state
    assert (KEY in rows(crash.db)) is case.row
    assert (saga["saga_id"] in payloads(crash.db)) is case.payload


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_crash_leaves_chroma_as_the_state_says(case: Case, crashes: dict[str, Crash]) -> None:
    crash = crashes[case.id]
    assert crash.process.returncode == EXPECTED_EXIT[case.action], crash.process.stderr
    [saga] = saga_rows(crash.db)

    vectors = stored_vectors(crash.chroma)

    assert (f"notes:{KEY}" in vectors) is case.vector
    if case.vector:
        vector = vectors[f"notes:{KEY}"]
        assert vector.embedding == pytest.approx(vec(KEY)) == worker_embedding(KEY)
        # The crashed saga's vector, whole (Chroma held nothing before it), with
        # exactly the caller's metadata; the log names that saga as its writer.
        assert (vector.document, vector.metadata) == (f"document {KEY}", {"n": KEY})
        assert sync_states(crash.db)[f"notes:{KEY}"]["saga_id"] == saga["saga_id"]


IN_FLIGHT = [c for c in CASES if c.state not in {"synced", "failed"}]


@pytest.mark.parametrize("case", IN_FLIGHT, ids=[c.id for c in IN_FLIGHT])
def test_a_saga_left_in_flight_names_its_dead_owner(case: Case, crashes: dict[str, Crash]) -> None:
    """The lease names the dead child's pid, so recovery can see at once it is gone."""
    crash = crashes[case.id]
    [saga] = saga_rows(crash.db)

    assert saga["lease_owner"] is not None
    assert f":{crash.pid}:" in saga["lease_owner"]


TERMINAL = [c for c in CASES if c.state in {"synced", "failed"}]


@pytest.mark.parametrize("case", TERMINAL, ids=[c.id for c in TERMINAL])
def test_a_saga_that_ended_before_the_crash_holds_no_lease(
    case: Case, crashes: dict[str, Crash]
) -> None:
    [saga] = saga_rows(crashes[case.id].db)

    assert saga["lease_owner"] is None
    assert saga["lease_expires_at"] is None
