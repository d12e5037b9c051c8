"""The bugs the fuzz tests found: one pinned example each."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import SagaError, ValidationError
from tests.fuzz_strategies import INF, nested
from tests.fuzz_world import (
    DIM,
    World,
    good_create,
    opened_world,
    rewrite_payload,
    stored_rows,
    strand,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


# -- known bugs: one pinned example each ------------------------------------------------
#
# Each asserts what the contract says. They fail today (strict xfail, with the exception
# they fail with today where there is one); the report names root cause and patch.

SURROGATE = "\ud800"  # a lone surrogate: a str Python holds but UTF-8 cannot encode


def refused_cleanly(world: World, call: Callable[[], Any], field: str) -> ValidationError:
    """``call`` is refused with a ValidationError naming ``field`` and changes nothing."""
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        call()
    assert caught.value.field.startswith(field), caught.value
    assert world.snapshot() == before
    return caught.value


def test_an_int_too_large_for_a_float_in_an_embedding_is_refused(world: World) -> None:
    refused_cleanly(world, lambda: good_create(world, 1, embedding=[10**400, 0, 0, 0]), "embedding")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_number_beyond_the_float32_range_in_an_embedding_is_refused(world: World) -> None:
    refused_cleanly(world, lambda: good_create(world, 1, embedding=[1e39, 0, 0, 0]), "embedding")


@pytest.mark.parametrize(
    "override",
    [
        {"row": {"id": 1, "body": f"a{SURROGATE}"}},
        {"document": SURROGATE},
        {"metadata": {"k": SURROGATE}},
        {"metadata": {SURROGATE: "v"}},
    ],
    ids=["row value", "document", "metadata value", "metadata name"],
)
def test_a_lone_surrogate_in_a_value_is_refused(world: World, override: dict[str, Any]) -> None:
    field = next(iter(override))
    refused_cleanly(world, lambda: good_create(world, 1, **override), field)


@pytest.mark.parametrize("op", ["create", "update", "delete"])
def test_a_lone_surrogate_in_a_key_is_refused(world: World, op: str) -> None:
    key = f"k{SURROGATE}"
    calls = {
        "create": lambda: good_create(world, key, "docs"),
        "update": lambda: world.runner.update("docs", key, {"body": "x"}),
        "delete": lambda: world.runner.delete("docs", key),
    }
    refused_cleanly(world, calls[op], "row.id" if op == "create" else "key")


def refused_or_stored(world: World, value: Any) -> None:
    """A create with ``value`` in a column is refused cleanly or stores it exactly."""
    before = world.snapshot()
    refused: ValidationError | None = None
    try:
        good_create(world, 1, row={"id": 1, "body": value})
    except ValidationError as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "row.body"
        assert world.snapshot() == before
    else:
        assert stored_rows(world.db, "notes")[1]["body"] == value


def test_an_infinite_column_value_is_refused_or_stored(world: World) -> None:
    refused_or_stored(world, INF)


def test_a_bytes_column_value_is_stored_or_refused(world: World) -> None:
    refused_or_stored(world, b"\x00\xff")


@pytest.mark.parametrize("value", [b"\x00\xff", INF], ids=["blob", "inf"])
@pytest.mark.parametrize("op", ["update", "delete"])
def test_a_row_holding_a_blob_or_inf_can_be_changed(world: World, value: Any, op: str) -> None:
    good_create(world, 1)
    conn = sqlite3.connect(world.db)
    conn.execute("UPDATE notes SET extra = ? WHERE id = 1", (value,))
    conn.commit()
    conn.close()

    if op == "update":
        world.runner.update("notes", 1, {"body": "changed"})
        assert stored_rows(world.db, "notes")[1]["body"] == "changed"
    else:
        world.runner.delete("notes", 1)
        assert stored_rows(world.db, "notes") == {}


@pytest.mark.parametrize("changes", ["", [], 0], ids=["str", "list", "int"])
def test_update_refuses_falsy_changes_that_are_not_a_dict(world: World, changes: Any) -> None:
    good_create(world, 1)
    refused_cleanly(world, lambda: world.runner.update("notes", 1, changes), "changes")


def test_a_create_on_a_key_stored_under_another_type_is_refused(world: World) -> None:
    good_create(world, "1", "docs")
    refused_cleanly(world, lambda: good_create(world, 1, "docs"), "row.id")


def test_a_failed_create_never_deletes_another_rows_vector(world: World) -> None:
    good_create(world, "1", "docs")
    with contextlib.suppress(SagaError):
        good_create(world, 1, "docs", document="intruder")

    stored = world.runner.stores.vectors.get("docs", ["docs:1"])
    assert "docs:1" in stored, "the stored row's vector was deleted"
    assert stored["docs:1"].document == "doc"
    assert world.runner.reconcile().clean


def test_a_digit_string_key_on_an_int_key_column_keeps_row_and_vector_linked(
    world: World,
) -> None:
    with world.runner.stores.log.db.write() as conn:
        conn.execute("CREATE TABLE items (id INT PRIMARY KEY, body, vector_id TEXT)")
    world.runner.track("items", dimension=DIM)
    try:
        good_create(world, "02", "items")
    except ValidationError:
        return  # refusing a str key on an INT key column is fine too
    assert world.runner.reconcile().clean


def test_a_refused_track_creates_no_collection(world: World) -> None:
    refused_cleanly(world, lambda: world.runner.track("notes", collection="brand-new"), "table")


def test_a_dollar_metadata_name_is_refused_before_any_write(world: World) -> None:
    good_create(world, 1)
    refused_cleanly(
        world, lambda: world.runner.update("notes", 1, {}, metadata={"$x": 1}), "metadata.$x"
    )


@pytest.mark.parametrize("where", ["table", "column", "metadata name", "track"])
def test_a_deeply_nested_name_is_refused(world: World, where: str) -> None:
    deep = nested(50_000, lambda v: (v,), ())
    calls = {
        "table": lambda: world.runner.delete(deep, 1),
        "column": lambda: good_create(world, 1, row={"id": 1, "body": "b", deep: 1}),
        "metadata name": lambda: good_create(world, 1, metadata={deep: 1}),
        "track": lambda: world.runner.track(deep),
    }
    refused_cleanly(world, calls[where], "")


def test_reconcile_sees_no_drift_in_a_float_metadata_value(world: World) -> None:
    good_create(world, 1, metadata={"price": 123456789.123456789})

    assert world.runner.reconcile().drift == ()
    assert world.runner.reconcile(fix=True).clean
    assert world.runner.reconcile().clean


def test_two_tables_never_share_a_collection(world: World) -> None:
    good_create(world, 1)
    with contextlib.suppress(ValidationError):  # refusing it is the simplest fix
        world.runner.track("plain", collection="notes")

    world.runner.reconcile(fix=True)

    assert "notes:1" in world.runner.stores.vectors.get("notes", ["notes:1"])
    assert world.runner.reconcile().clean


def test_recovery_reports_a_payload_nested_too_deeply(world: World) -> None:
    tampered = strand(world, 1)
    untouched = strand(world, 2)
    deep = '{"op": "create", "items": ' + "[" * 100_000 + "]" * 100_000 + "}"
    rewrite_payload(world.db, tampered, lambda _payload: deep)

    report = world.runner.recover()

    assert report.failed_ids == (tampered,)
    assert report.resumed_ids == (untouched,)


def test_a_table_cannot_be_tracked_twice_under_another_spelling(world: World) -> None:
    good_create(world, 1)
    with contextlib.suppress(ValidationError):  # refusing is fine; so is the same spec
        world.runner.track("NOTES")
    with contextlib.suppress(SagaError):
        good_create(world, 2, "NOTES")

    assert world.runner.reconcile().clean


def test_recovery_refuses_a_payload_that_names_another_key(world: World) -> None:
    saga_id = strand(world, 1)

    def null_key(payload: str) -> str:
        data = json.loads(payload)
        data["items"][0]["key"] = None
        return json.dumps(data)

    rewrite_payload(world.db, saga_id, null_key)

    report = world.runner.recover()

    assert report.failed_ids == (saga_id,)  # unreadable: left for an operator
    assert stored_rows(world.db, "notes") == {}


@pytest.mark.parametrize("dimension", [2**70, 10**6], ids=["beyond 64 bits", "beyond the limit"])
def test_a_dimension_out_of_range_is_refused(world: World, dimension: int) -> None:
    with world.runner.stores.log.db.write() as conn:
        conn.execute("CREATE TABLE wide (id INTEGER PRIMARY KEY, vector_id TEXT)")
    refused_cleanly(world, lambda: world.runner.track("wide", dimension=dimension), "dimension")
