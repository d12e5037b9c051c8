"""Bad input is refused before any write, with an error that names the field.

Each case calls ``create`` (or ``create_many``) with one bad argument and asserts the
exact ``ValidationError.field`` (and batch ``index``), then that neither store changed:
the saga log, the ``notes`` table and the Chroma collection are as they were.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saga import RecordExistsError, RetryPolicy, SagaRunner, ValidationError
from tests._probe import log_snapshot
from tests.conftest import vec, vector_ids

NAN, INF = float("nan"), float("inf")
GOOD_ROW = {"id": 1, "body": "hello"}


def _state(db_path: Path, runner: SagaRunner) -> tuple[dict[str, Any], set[str]]:
    return log_snapshot(db_path), vector_ids(runner)


def _call(runner: SagaRunner, **override: Any) -> None:
    """``create`` with good arguments, some replaced by ``override``."""
    arguments: dict[str, Any] = {
        "table": "notes",
        "row": GOOD_ROW,
        "embedding": vec(1),
        "document": "doc",
        "metadata": {"k": "v"},
    }
    arguments.update(override)
    runner.create(
        arguments.pop("table"),
        arguments.pop("row"),
        embedding=arguments.pop("embedding"),
        **arguments,
    )


def _assert_refused(
    runner: SagaRunner, db_path: Path, field: str, index: int | None = None, **override: Any
) -> ValidationError:
    before = _state(db_path, runner)
    with pytest.raises(ValidationError) as caught:
        _call(runner, **override)
    assert caught.value.field == field
    assert caught.value.index == index
    assert _state(db_path, runner) == before
    return caught.value


@pytest.fixture
def empty_log(runner: SagaRunner, db_path: Path) -> SagaRunner:
    """The fixture runner, with nothing written yet (asserted, so 'no change' means it)."""
    snapshot = log_snapshot(db_path)
    assert snapshot["saga_instances"] == []
    assert snapshot["notes"] == []
    assert vector_ids(runner) == set()
    return runner


# -- the table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        "missing",
        "other",
        "notes; DROP TABLE notes",
        'notes"',
        "notes --",
        "notes' OR '1'='1",
        "",
        "1notes",
        "x" * 65,
        None,
        7,
    ],
    ids=[
        "unknown",
        "untracked",
        "semicolon",
        "quote",
        "comment",
        "or-1",
        "empty",
        "leading-digit",
        "too-long",
        "none",
        "int",
    ],
)
def test_a_bad_table_is_refused(empty_log: SagaRunner, db_path: Path, table: object) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE IF NOT EXISTS other (id INTEGER PRIMARY KEY, vector_id TEXT)")
    conn.close()

    _assert_refused(empty_log, db_path, "table", table=table)
    assert "notes" in {r["name"] for r in _tables(db_path)}


def _tables(db_path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()


# -- the row and its key ----------------------------------------------------------------


def _param(case: Any) -> Any:
    """A case tuple ``(*values, id)`` as a pytest param; a ready param passes through."""
    if hasattr(case, "marks"):  # already a pytest.param (itself a tuple)
        return case
    return pytest.param(*case[:-1], id=case[-1])


BAD_ROWS = [
    ({"id": 1, "body": "x", "nope": 1}, "row.nope", "unknown-column"),
    ({"id": 1, "body": "x", 'body" = 1; --': 1}, 'row.body" = 1; --', "injected-column"),
    ({"id": 1, "body": "x", 3: "x"}, "row", "non-str-column"),
    ({"id": 1, "body": "x", "vector_id": "notes:9"}, "row.vector_id", "vector-id-by-caller"),
    ({"id": 1.5, "body": "x"}, "row.id", "float-key"),
    ({"id": 1.0, "body": "x"}, "row.id", "integral-float-key"),
    pytest.param({"id": True, "body": "x"}, "row.id", id="bool-key"),
    ({"id": None, "body": "x"}, "row.id", "none-key"),
    ({"id": [1], "body": "x"}, "row.id", "list-key"),
    ({"id": 2**63, "body": "x"}, "row.id", "int-key-over-64-bits"),
    ({"id": "", "body": "x"}, "row.id", "empty-str-key"),
    ({"id": "k" * 513, "body": "x"}, "row.id", "overlong-str-key"),
    ({"id": "a\nb", "body": "x"}, "row.id", "control-char-key"),
    ({"id": 1, "body": object()}, "row.body", "unstorable-value"),
    ({"id": 1, "body": "x", "score": NAN}, "row.score", "nan-value"),
    ({"id": 1, "body": "x", "score": 2**64}, "row.score", "int-value-over-64-bits"),
]


@pytest.mark.parametrize(("row", "field"), [_param(c) for c in BAD_ROWS])
def test_a_bad_row_is_refused(
    empty_log: SagaRunner, db_path: Path, row: dict[Any, Any], field: str
) -> None:
    _assert_refused(empty_log, db_path, field, row=row)


@pytest.mark.parametrize("row", [[("id", 1)], "id=1", None], ids=["pairs", "str", "none"])
def test_a_row_that_is_not_a_dict_is_refused(
    empty_log: SagaRunner, db_path: Path, row: object
) -> None:
    _assert_refused(empty_log, db_path, "row", row=row)


# -- the embedding ----------------------------------------------------------------------

BAD_EMBEDDINGS = [
    ([], "empty"),
    ([NAN, 0.1, 0.2, 0.3], "nan"),
    ([0.0, INF, 0.2, 0.3], "inf"),
    ([0.0, 0.1, 0.2, -INF], "minus-inf"),
    (["0.1", 0.1, 0.2, 0.3], "str-inside"),
    ([True, 0.1, 0.2, 0.3], "bool-inside"),
    ([None, 0.1, 0.2, 0.3], "none-inside"),
    ([[0.0], 0.1, 0.2, 0.3], "list-inside"),
    (0.5, "float"),
    (None, "none"),
    ("0.1 0.2 0.3 0.4", "str"),
    (b"\x00\x01\x02\x03", "bytes"),
    ({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, "dict"),
    ({0.1, 0.2, 0.3, 0.4}, "set"),
    (np.array([NAN, 0.1, 0.2, 0.3]), "numpy-nan"),
    (np.zeros((2, 4)), "numpy-2d"),
]


@pytest.mark.parametrize(
    "embedding", [c[0] for c in BAD_EMBEDDINGS], ids=[c[1] for c in BAD_EMBEDDINGS]
)
def test_a_bad_embedding_is_refused(
    empty_log: SagaRunner, db_path: Path, embedding: object
) -> None:
    _assert_refused(empty_log, db_path, "embedding", embedding=embedding)


@pytest.mark.parametrize("dimension", [3, 5], ids=["shorter", "longer"])
def test_an_embedding_of_another_dimension_than_the_first_write_is_refused(
    runner: SagaRunner, db_path: Path, dimension: int
) -> None:
    runner.create("notes", {"id": 1, "body": "first"}, embedding=vec(1))

    error = _assert_refused(
        runner, db_path, "embedding", row={"id": 2, "body": "x"}, embedding=vec(2, dimension)
    )
    assert "4" in str(error)


@pytest.fixture
def runner_dim4(db_path: Path, chroma_path: Path) -> Iterator[SagaRunner]:
    """A runner whose table was tracked with ``dimension=4`` before any write."""
    with SagaRunner.open(db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled()) as r:
        r.track("notes", dimension=4)
        yield r


@pytest.mark.parametrize("dimension", [3, 5], ids=["shorter", "longer"])
def test_an_embedding_of_another_dimension_than_tracked_is_refused(
    runner_dim4: SagaRunner, db_path: Path, dimension: int
) -> None:
    _assert_refused(runner_dim4, db_path, "embedding", embedding=vec(1, dimension))


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int64], ids=["float32", "float64", "int64"]
)
def test_a_numpy_embedding_is_accepted(runner: SagaRunner, dtype: Any) -> None:
    embedding = np.array([1, 2, 3, 4], dtype=dtype)

    runner.create("notes", GOOD_ROW, embedding=embedding)

    stored = runner.stores.vectors.get("notes", ["notes:1"], embeddings=True)["notes:1"]
    assert stored.embedding == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_a_list_of_numpy_scalars_is_accepted(runner: SagaRunner) -> None:
    embedding = list(np.array([1, 2, 3, 4], dtype=np.float32))

    runner.create("notes", GOOD_ROW, embedding=embedding)

    assert vector_ids(runner) == {"notes:1"}


# -- the document -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [5, b"doc", ["doc"], "d" * 1_000_001],
    ids=["int", "bytes", "list", "overlong"],
)
def test_a_bad_document_is_refused(empty_log: SagaRunner, db_path: Path, document: object) -> None:
    _assert_refused(empty_log, db_path, "document", document=document)


# -- the metadata -----------------------------------------------------------------------

BAD_METADATA = [
    ([("k", "v")], "metadata", "pairs"),
    ("k=v", "metadata", "str"),
    (5, "metadata", "int"),
    ({"k": {"a": 1}}, "metadata.k", "nested-dict"),
    ({"k": [1, 2]}, "metadata.k", "nested-list"),
    ({"k": None}, "metadata.k", "none-value"),
    ({"k": NAN}, "metadata.k", "nan-value"),
    ({"k": INF}, "metadata.k", "inf-value"),
    ({"k": b"v"}, "metadata.k", "bytes-value"),
    ({"k": 2**63}, "metadata.k", "int-over-64-bits"),
    ({"sqlite_table": "x"}, "metadata.sqlite_table", "reserved-sqlite-table"),
    ({"sqlite_record_id": 2}, "metadata.sqlite_record_id", "reserved-sqlite-record-id"),
    ({"saga_id": "x"}, "metadata.saga_id", "reserved-saga-id"),
    ({1: "v"}, "metadata", "non-str-key"),
    ({"": "v"}, "metadata", "empty-key"),
    ({f"k{i}": i for i in range(65)}, "metadata", "too-many-keys"),
]


@pytest.mark.parametrize(
    ("metadata", "field"), [c[:2] for c in BAD_METADATA], ids=[c[2] for c in BAD_METADATA]
)
def test_bad_metadata_is_refused(
    empty_log: SagaRunner, db_path: Path, metadata: object, field: str
) -> None:
    _assert_refused(empty_log, db_path, field, metadata=metadata)


# -- create_many ------------------------------------------------------------------------


def _item(key: int, **override: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "row": {"id": key, "body": f"note {key}"},
        "embedding": vec(key),
        "document": f"doc {key}",
        "metadata": {"n": key},
    }
    item.update(override)
    return item


def _assert_batch_refused(
    runner: SagaRunner, db_path: Path, items: object, field: str, index: int | None
) -> ValidationError:
    before = _state(db_path, runner)
    with pytest.raises(ValidationError) as caught:
        runner.create_many("notes", items)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.index) == (field, index)
    assert _state(db_path, runner) == before
    return caught.value


BAD_BATCHES = [
    ([], "items", None, "empty"),
    ({"row": {}}, "items", None, "dict"),
    ("items", "items", None, "str"),
    ([_item(1), "x"], "item", 1, "item-not-a-dict"),
    ([_item(1), {**_item(2), "vector": 1}], "item", 1, "unknown-item-field"),
    ([_item(1), {"row": {"id": 2, "body": "x"}}], "item", 1, "missing-embedding"),
    ([_item(1), _item(2, embedding=[NAN, 0, 0, 0])], "embedding", 1, "nan-embedding"),
    ([_item(1), _item(2, embedding=vec(2, 3))], "embedding", 1, "dimensions-differ"),
    ([_item(1), _item(2, document=7)], "document", 1, "bad-document"),
    ([_item(1), _item(2, metadata={"saga_id": "x"})], "metadata.saga_id", 1, "reserved-metadata"),
    ([_item(1), _item(2, metadata={"k": [1]})], "metadata.k", 1, "nested-metadata"),
    (
        [_item(1), _item(2, row={"id": 2, "body": "x", "vector_id": "v"})],
        "row.vector_id",
        1,
        "vector-id-by-caller",
    ),
    ([_item(1), _item(2, row={"id": 2.5, "body": "x"})], "row.id", 1, "float-key"),
    ([_item(1), _item(2, row={"id": 2, "nope": 1})], "row.nope", 1, "unknown-column"),
    ([_item(1), _item(1)], "id", 1, "repeated-key"),
]


@pytest.mark.parametrize(
    ("items", "field", "index"),
    [c[:3] for c in BAD_BATCHES],
    ids=[c[3] for c in BAD_BATCHES],
)
def test_a_bad_batch_is_refused_naming_the_item(
    empty_log: SagaRunner, db_path: Path, items: object, field: str, index: int | None
) -> None:
    _assert_batch_refused(empty_log, db_path, items, field, index)


def test_a_batch_with_an_existing_key_is_refused_naming_the_item(
    runner: SagaRunner, db_path: Path
) -> None:
    runner.create("notes", {"id": 2, "body": "already"}, embedding=vec(2))

    error = _assert_batch_refused(runner, db_path, [_item(1), _item(2), _item(3)], "row.id", 1)
    assert isinstance(error, RecordExistsError)


BATCH_INDEX_BUGS = [
    (
        [_item(1), _item(2, metadata={3: "v"})],
        "metadata",
        "non-str-metadata-key",
        "saga/_validation.py metadata() raises for a bad key without index",
    ),
    (
        [_item(1), _item(2, row={"id": 2, "body": "x", "bad name": 1})],
        "row.bad name",
        "bad-column-identifier",
        "saga/_validation.py row_values() calls identifier(), which takes no index",
    ),
]


@pytest.mark.parametrize(
    ("items", "field"),
    [pytest.param(*c[:2], id=c[2]) for c in BATCH_INDEX_BUGS],
)
def test_a_bad_batch_item_is_named_by_its_index(
    empty_log: SagaRunner, db_path: Path, items: object, field: str
) -> None:
    _assert_batch_refused(empty_log, db_path, items, field, 1)
