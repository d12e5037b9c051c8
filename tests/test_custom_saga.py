"""The extension API end to end: a custom saga (``examples/audited_create.py``) run with
``runner.run``, SIGKILLed at every point before its pivot, settled by ``saga recover``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from examples.audited_create import AUDIT_SCHEMA, audited_create
from saga import ConfigurationError, SagaRunner, ValidationError
from saga.extend import Item, SagaDefinition
from steps import CommitRows, WriteVectors
from tests.conftest import make_db, rows, run_saga, vec

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import sys
from saga import SagaRunner, failpoints
from saga.extend import Item
from examples.audited_create import audited_create

failpoints.load_from_env()
db, chroma, key = sys.argv[1], sys.argv[2], int(sys.argv[3])
with SagaRunner.open(db, chroma_path=chroma) as runner:
    runner.track("notes")
    item = Item(key=key, row={"body": f"note {key}"}, embedding=(0.1, 0.2, 0.3, float(key)),
                document=f"note {key}", metadata={"kind": "audited"})
    runner.run(audited_create(db), "notes", [item])
"""

# Every moment before the pivot where a SIGKILL leaves the saga in flight.
CRASH_POINTS = ["after:pending", "after:write_vectors", "during:audit", "after:audited"]


@pytest.fixture
def app(tmp_path: Path) -> tuple[Path, Path]:
    db = make_db(tmp_path / "app.db")
    conn = sqlite3.connect(db)
    conn.executescript(AUDIT_SCHEMA)
    conn.close()
    return db, tmp_path / "chroma"


def _audit_rows(db: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT saga_id, record_key FROM audit_log")]
    finally:
        conn.close()


def _history(db: Path, saga_id: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows_ = conn.execute(
            "SELECT event FROM saga_history WHERE saga_id = ? ORDER BY id", (saga_id,)
        )
        return [r[0] for r in rows_]
    finally:
        conn.close()


def _item(key: int) -> Item:
    return Item(key=key, row={"body": f"note {key}"}, embedding=tuple(vec(key)), document="d")


def test_a_custom_saga_runs_like_a_built_in_write(app: tuple[Path, Path]) -> None:
    db, chroma = app
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        runner.track("notes")
        result = runner.run(audited_create(db), "notes", [_item(1)])

        assert result.state == "synced"
        assert result.vector_ids == ("notes:1",)
        assert runner.vectors_of("notes", [1])[1].document == "d"
        assert runner.reconcile().clean
    assert rows(db)[1]["vector_id"] == "notes:1"
    assert _audit_rows(db) == [(result.saga_id, 1)]
    assert _history(db, result.saga_id) == [
        "begin",
        "write_vectors",
        "audit",
        "commit_rows",
        "finish",
    ]


def test_run_refuses_bad_items_before_any_write(app: tuple[Path, Path]) -> None:
    db, chroma = app
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        runner.track("notes", dimension=4)
        bad = Item(key=1, row={"body": "b"}, embedding=(0.1, float("nan"), 0.3, 0.4))
        with pytest.raises(ValidationError) as caught:
            runner.run(audited_create(db), "notes", [bad])
        assert caught.value.field == "embedding"
        with pytest.raises(ValidationError) as unknown:
            runner.run(audited_create(db), "notes", [Item(key=2, row={"nope": 1})])
        assert unknown.value.field == "row.nope"
        assert runner.in_flight() == []
        assert runner.count("notes").vectors == 0
    assert rows(db) == {}
    assert _audit_rows(db) == []


def test_run_refuses_a_second_definition_under_a_registered_name(
    app: tuple[Path, Path],
) -> None:
    db, chroma = app
    other = SagaDefinition(
        name="create",  # the built-in create's name, with other steps
        steps=(WriteVectors("create"), CommitRows("create")),
        pivot="write_vectors",
    )
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        runner.track("notes")
        with pytest.raises(ConfigurationError) as caught:
            runner.run(other, "notes", [_item(1)])
        assert caught.value.field == "definition"
    assert rows(db) == {}


def _crash(db: Path, chroma: Path, point: str, key: int) -> None:
    env = {**os.environ, "SAGA_FAILPOINTS": f"{point}=kill"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(db), str(chroma), str(key)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def _recover(db: Path, chroma: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_saga(
        "recover",
        "--db",
        str(db),
        "--chroma-path",
        str(chroma),
        "--json",
        *extra,
    )


@pytest.mark.parametrize("policy", ["resume", "compensate"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_custom_saga_killed_before_its_pivot_is_settled_by_saga_recover(
    app: tuple[Path, Path], point: str, policy: str
) -> None:
    db, chroma = app
    _crash(db, chroma, point, 7)

    done = _recover(db, chroma, "--definitions", "examples.audited_create", "--policy", policy)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    [saga_id] = report["resumed_ids"] or report["compensated_ids"]
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        assert runner.in_flight() == []
        assert runner.reconcile().clean
        stored = runner.vectors_of("notes", [7])
    if policy == "resume":  # all of it: row, audit row, vector
        assert report["resumed"] == 1
        assert rows(db)[7]["body"] == "note 7"
        assert _audit_rows(db) == [(saga_id, 7)]
        assert stored[7].document == "note 7"
        assert _history(db, saga_id)[-2:] == ["commit_rows", "finish"]
    else:  # none of it
        assert report["compensated"] == 1
        assert rows(db) == {}
        assert _audit_rows(db) == []
        assert stored == {}
        assert _history(db, saga_id)[-2:] == ["compensate", "compensated"]


def test_saga_recover_without_the_definition_says_how_to_give_it(
    app: tuple[Path, Path],
) -> None:
    db, chroma = app
    _crash(db, chroma, "after:audited", 3)

    done = _recover(db, chroma)

    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["unsettled"] == 1
    [error] = report["errors"].values()
    assert "audited_create" in error
    assert "--definitions" in error


def test_saga_recover_refuses_definitions_it_cannot_load(app: tuple[Path, Path]) -> None:
    db, chroma = app
    for spec in ("no_such_module_here", "examples.audited_create:AUDIT_SCHEMA"):
        done = _recover(db, chroma, "--definitions", spec)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "--definitions" in done.stderr
