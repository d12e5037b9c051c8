"""Keys SQLite assigns: ``create(table, row)`` without the key of an ``INTEGER PRIMARY
KEY`` table reserves it inside ``pending``, writes the vector under it, returns it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import DataIntegrityError, RetryPolicy, SagaRunner
from tests.conftest import rewired, sql, vec

ROOT = Path(__file__).resolve().parent.parent
PLAIN = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, vector_id TEXT)"
AUTO = (
    "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "body TEXT NOT NULL CHECK (body <> 'refused'), vector_id TEXT)"
)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    opened: list[SagaRunner] = []

    def open_with(schema: str) -> tuple[SagaRunner, Path]:
        db = tmp_path / "app.db"
        sql(db, schema)
        runner = SagaRunner.open(db, chroma_path=tmp_path / "chroma", retry=RetryPolicy.disabled())
        runner.track("notes")
        opened.append(runner)
        return runner, db

    yield open_with
    for runner in opened:
        runner.close()


def _create(runner: SagaRunner, body: str) -> Any:
    return runner.create("notes", {"body": body}, embedding=vec(len(body)), document=body)


@pytest.mark.parametrize("schema", [PLAIN, AUTO], ids=["integer-primary-key", "autoincrement"])
def test_a_create_without_its_key_gets_the_next_one(make: Any, schema: str) -> None:
    runner, db = make(schema)
    sql(db, "INSERT INTO notes (id, body) VALUES (7, 'by the application')")

    result = _create(runner, "hello")

    assert result.keys == (8,)
    assert result.vector_ids == ("notes:8",)
    assert sql(db, "SELECT id, body, vector_id FROM notes WHERE id = 8") == [
        (8, "hello", "notes:8")
    ]
    assert runner.vectors_of("notes", [8])[8].document == "hello"
    assert runner.reconcile().missing_vectors == ("notes:7",)  # the app's own row only


def test_create_many_assigns_keys_above_the_ones_it_was_given(make: Any) -> None:
    runner, db = make(PLAIN)
    result = runner.create_many(
        "notes",
        [
            {"row": {"body": "a"}, "embedding": vec(1)},
            {"row": {"id": 10, "body": "b"}, "embedding": vec(2)},
            {"row": {"body": "c"}, "embedding": vec(3)},
        ],
    )
    assert result.keys == (11, 10, 12)
    assert sql(db, "SELECT id, body FROM notes ORDER BY id") == [(10, "b"), (11, "a"), (12, "c")]
    assert runner.reconcile().clean


def test_autoincrement_never_hands_out_a_key_twice_even_after_a_compensation(
    make: Any,
) -> None:
    runner, db = make(AUTO)
    assert _create(runner, "one").keys == (1,)
    with pytest.raises(DataIntegrityError):  # the CHECK refuses it at the pivot
        _create(runner, "refused")
    assert _create(runner, "three").keys == (3,)
    sql(db, "INSERT INTO notes (body) VALUES ('plain sql')")  # SQLite's own next key
    assert sql(db, "SELECT id, body FROM notes ORDER BY id") == [
        (1, "one"),
        (3, "three"),
        (4, "plain sql"),
    ]
    assert runner.vectors_of("notes", [1, 2, 3]).keys() == {1, 3}


def test_without_autoincrement_a_compensated_key_may_be_used_again(make: Any) -> None:
    """As SQLite itself does: the largest key + 1."""
    runner, _db = make(PLAIN.replace("NOT NULL", "NOT NULL CHECK (body <> 'refused')"))
    assert _create(runner, "one").keys == (1,)
    with pytest.raises(DataIntegrityError):
        _create(runner, "refused")
    assert _create(runner, "again").keys == (2,)


class _Held:
    """The real vector store; the first upsert waits for ``release`` once done."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.upserted = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upsert(self, collection: str, records: Any) -> None:
        self._inner.upsert(collection, records)
        if not self.upserted.is_set():
            self.upserted.set()
            assert self.release.wait(30)


def test_a_key_held_by_a_saga_in_flight_is_not_handed_out_again(make: Any) -> None:
    runner, db = make(PLAIN)
    held = _Held(runner.stores.vectors)
    slow = rewired(runner, vectors=held)
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(_create(slow, "first")))
    thread.start()
    assert held.upserted.wait(30)  # key 1 reserved, its row not committed yet

    second = _create(runner, "second")
    held.release.set()
    thread.join(30)

    assert (first[0].keys, second.keys) == ((1,), (2,))
    assert sql(db, "SELECT id, body FROM notes ORDER BY id") == [(1, "first"), (2, "second")]


def test_a_plain_insert_racing_for_the_key_is_refused_at_the_pivot(make: Any) -> None:
    runner, db = make(PLAIN)
    held = _Held(runner.stores.vectors)
    slow = rewired(runner, vectors=held)
    outcome: list[BaseException] = []

    def create() -> None:
        try:
            _create(slow, "mine")
        except DataIntegrityError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    assert held.upserted.wait(30)
    sql(db, "INSERT INTO notes (id, body) VALUES (1, 'the application was first')")
    held.release.set()
    thread.join(30)

    assert len(outcome) == 1  # refused and compensated
    assert sql(db, "SELECT id, body, vector_id FROM notes") == [
        (1, "the application was first", None)
    ]
    assert runner.vectors_of("notes", [1]) == {}
    assert runner.in_flight() == []


def test_threads_creating_without_keys_get_distinct_keys(make: Any) -> None:
    runner, db = make(AUTO)
    results: list[Any] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        for n in range(15):
            result = _create(runner, f"w{worker}-{n}")
            with lock:
                results.append(result)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    keys = sorted(key for r in results for key in r.keys)
    assert keys == list(range(1, 61))
    assert sql(db, "SELECT COUNT(*) FROM notes") == [(60,)]
    assert runner.reconcile().clean


WORKER = """
import sys
from saga import SagaRunner, failpoints
failpoints.load_from_env()
with SagaRunner.open(sys.argv[1], chroma_path=sys.argv[2]) as runner:
    runner.track("notes")
    runner.create("notes", {"body": "killed"}, embedding=[0.1, 0.2, 0.3, 0.4], document="k")
"""


@pytest.mark.parametrize("point", ["after:pending", "after:write_vectors"])
def test_a_killed_create_resumes_under_the_key_it_reserved(
    make: Any, tmp_path: Path, point: str
) -> None:
    runner, db = make(AUTO)
    runner.close()
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(db), str(tmp_path / "chroma")],
        cwd=ROOT,
        env={**os.environ, "SAGA_FAILPOINTS": f"{point}=kill"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    [(payload,)] = sql(db, "SELECT payload FROM pending_vectors")
    assert [item["key"] for item in json.loads(payload)["items"]] == [1]

    with SagaRunner.open(db, chroma_path=tmp_path / "chroma") as again:
        report = again.recover()
        assert report.resumed == 1
        assert again.reconcile().clean
    assert sql(db, "SELECT id, body, vector_id FROM notes") == [(1, "killed", "notes:1")]
