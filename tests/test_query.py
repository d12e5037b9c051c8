"""Consistent reads: ``query`` answers only with committed rows, joined with distances.

An in-flight saga is held after its vector step, before its pivot commits, by a
``sleep`` failpoint on a thread of this process (an embedded Chroma folder cannot be
shared with a second process) while the main thread queries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from saga import (
    CompensationError,
    QueryResult,
    SagaRunner,
    ValidationError,
    VectorRecord,
    failpoints,
)
from tests.conftest import vec

Q = [1.0, 1.0, 1.0, 1.0]


def _at(*offset: float) -> list[float]:
    """A point at ``offset`` from the query point ``Q``."""
    return [q + o for q, o in zip(Q, (*offset, 0, 0, 0, 0), strict=False)][:4]


def _create(runner: SagaRunner, key: int, embedding: list[float], **extra: Any) -> str:
    return runner.create(
        "notes",
        {"id": key, "body": f"note {key}"},
        embedding=embedding,
        document=f"document {key}",
        metadata=extra.pop("metadata", {"n": key}),
        **extra,
    ).saga_id


def _keys(found: list[QueryResult]) -> list[Any]:
    return [r.key for r in found]


class Held:
    """A write run on a thread and held at the failpoint ``point`` (``sleep``) until
    the main thread is done looking."""

    def __init__(self, point: str, seconds: float, write: Callable[[], Any]) -> None:
        self.point = point
        self.spec = f"{point}=sleep:{seconds}*1"
        self.write = write
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.write()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def __enter__(self) -> Held:
        since = failpoints.hits(self.point)
        self._armed = failpoints.armed(self.spec)
        self._armed.__enter__()
        self.thread.start()
        deadline = time.monotonic() + 10
        while failpoints.hits(self.point) <= since:
            assert self.thread.is_alive() or self.error is None, self.error
            assert time.monotonic() < deadline, f"{self.point} never reached"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(20)
        self._armed.__exit__(None, None, None)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


# -- in flight --------------------------------------------------------------------------


def test_an_in_flight_create_is_never_returned(runner: SagaRunner) -> None:
    _create(runner, 1, _at(2))
    write = lambda: _create(runner, 2, _at(0))  # noqa: E731 - the nearest of all

    with Held("after:write_vectors", 1.0, write):
        # Its vector is in Chroma, nearest to the query; its row is not committed.
        assert "notes:2" in runner.stores.vectors.get("notes", ["notes:2"])
        assert _keys(runner.query("notes", embedding=Q, n_results=5)) == [1]
        assert _keys(runner.query("notes", embedding=Q, n_results=1)) == [1]
        assert _keys(runner.query("notes", embedding=Q, where={"n": 2})) == []

    assert _keys(runner.query("notes", embedding=Q, n_results=5)) == [2, 1]


def test_an_in_flight_update_returns_the_committed_row(runner: SagaRunner) -> None:
    _create(runner, 1, _at(0))

    def write() -> Any:
        return runner.update("notes", 1, {"body": "uncommitted"}, document="uncommitted")

    with Held("after:write_vectors", 1.0, write):
        assert runner.stores.vectors.get("notes", ["notes:1"])["notes:1"].document == "uncommitted"
        [found] = runner.query("notes", embedding=Q, n_results=3)
        assert found.key == 1
        assert found.row == {"id": 1, "body": "note 1", "score": None, "vector_id": "notes:1"}

    [found] = runner.query("notes", embedding=Q, n_results=3)
    assert found.row["body"] == "uncommitted"


def test_a_vector_left_by_a_stuck_compensation_is_not_returned(runner: SagaRunner) -> None:
    _create(runner, 1, _at(3))
    with (
        failpoints.armed("chroma.upsert.after=raise;chroma.delete=raise"),
        pytest.raises(CompensationError),
    ):
        _create(runner, 2, _at(0))
    assert "notes:2" in runner.stores.vectors.get("notes", ["notes:2"])

    assert _keys(runner.query("notes", embedding=Q, n_results=5)) == [1]
    assert _keys(runner.query("notes", embedding=Q, where={"n": 2})) == []


# -- order ------------------------------------------------------------------------------


def test_results_are_ordered_by_distance_ties_by_key(runner: SagaRunner) -> None:
    layout = {  # key -> offset from Q; squared L2 distance in the comment
        1: (0, 0, 0, 3),  # 9
        2: (0, 1),  # 1
        3: (2,),  # 4
        4: (0,),  # 0
        5: (1,),  # 1, a tie with 2
        6: (0, 0, 1),  # 1, a tie with 2 and 5
    }
    for key, offset in sorted(layout.items(), reverse=True):  # insertion order != key order
        _create(runner, key, _at(*offset))

    found = runner.query("notes", embedding=Q, n_results=6)

    assert _keys(found) == [4, 2, 5, 6, 3, 1]
    assert [r.distance for r in found] == pytest.approx([0, 1, 1, 1, 4, 9])
    for result in found:
        assert result.row["id"] == result.key
        assert result.row["vector_id"] == f"notes:{result.key}"
    assert _keys(runner.query("notes", embedding=Q, n_results=2)) == [4, 2]


def test_ties_follow_the_keys_order_for_integer_keys(runner: SagaRunner) -> None:
    for key in (10, 9, 100):
        _create(runner, key, _at(1))

    assert _keys(runner.query("notes", embedding=Q, n_results=3)) == [9, 10, 100]


# -- filters and orphans ----------------------------------------------------------------


def test_where_filters_on_the_callers_metadata(runner: SagaRunner) -> None:
    for key, lang in ((1, "en"), (2, "fr"), (3, "fr"), (4, "en")):
        _create(runner, key, _at(key), metadata={"lang": lang, "n": key})

    assert _keys(runner.query("notes", embedding=Q, where={"lang": "fr"})) == [2, 3]
    assert _keys(runner.query("notes", embedding=Q, where={"lang": "de"})) == []
    both = {"$and": [{"lang": "en"}, {"n": {"$gte": 2}}]}
    assert _keys(runner.query("notes", embedding=Q, where=both)) == [4]
    assert _keys(runner.query("notes", embedding=Q, where={"lang": "en"}, n_results=1)) == [1]


def test_orphan_vectors_are_never_returned_even_when_nearest(runner: SagaRunner) -> None:
    _create(runner, 1, _at(5), metadata={"lang": "en"})
    _create(runner, 2, _at(6), metadata={"lang": "en"})
    # Vectors with no row behind them, nearer to the query than any real one.
    orphans = [
        VectorRecord(
            id=f"notes:{k}",
            embedding=tuple(_at(0.01 * k)),
            document="orphan",
            metadata={"lang": "en", "sqlite_table": "notes", "sqlite_record_id": k},
        )
        for k in range(100, 112)
    ]
    orphans.append(
        VectorRecord(id="stray", embedding=tuple(Q), document=None, metadata={"lang": "en"})
    )
    runner.stores.vectors.upsert("notes", orphans)

    assert _keys(runner.query("notes", embedding=Q, n_results=2)) == [1, 2]
    assert _keys(runner.query("notes", embedding=Q, n_results=1)) == [1]
    assert _keys(runner.query("notes", embedding=Q, n_results=50)) == [1, 2]
    assert _keys(runner.query("notes", embedding=Q, where={"lang": "en"}, n_results=1)) == [1]


def test_a_row_whose_vector_was_deleted_is_not_returned(runner: SagaRunner) -> None:
    _create(runner, 1, _at(1))
    _create(runner, 2, _at(2))
    runner.delete("notes", 1)

    assert _keys(runner.query("notes", embedding=Q)) == [2]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"embedding": [1.0, 2.0]}, "embedding"),
        ({"embedding": Q, "n_results": 0}, "n_results"),
        ({"embedding": Q, "n_results": True}, "n_results"),
        ({"embedding": Q, "where": "lang = 'en'"}, "where"),
    ],
    ids=["dimension", "zero-results", "bool-results", "where-str"],
)
def test_bad_query_arguments_are_refused(
    runner: SagaRunner, arguments: dict[str, Any], field: str
) -> None:
    _create(runner, 1, vec(1))
    with pytest.raises(ValidationError) as caught:
        runner.query("notes", **arguments)
    assert caught.value.field == field
