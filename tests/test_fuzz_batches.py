"""Fuzzing ``create_many``, ``update_many`` and ``delete_many``: refused whole or done whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_strategies import (
    DEEP_LIST,
    bad_columns,
    bad_keys,
    examples,
    fresh_keys,
    good_columns,
    hostile,
    pick,
    table_of,
    vector,
)
from tests.fuzz_world import LIMITS, World, attempt, opened_world, seed_keys


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


# -- the properties: batches ----------------------------------------------------------------

ENTRY_FLAWS = ("row", "key", "embedding", "document", "metadata", "shape", "twice", "taken")
CONTAINER_FLAWS = ("iterator", "empty", "junk", "too many")


def container(draw: st.DrawFn, flaws: frozenset[str], entries: list[Any]) -> Any:
    """The batch argument: a list or tuple of the entries, or (a flaw) something else."""
    if "container" not in flaws:
        return draw(st.sampled_from([list, tuple]))(entries)
    flaw = draw(st.sampled_from(CONTAINER_FLAWS))
    if flaw == "iterator":
        return iter(entries)
    if flaw == "empty":
        return []
    if flaw == "too many":
        return entries * (LIMITS.max_batch_items // len(entries) + 1)
    return draw(st.sampled_from([None, "items", {"row": 1}, 7, DEEP_LIST]))


def batch_flaws(draw: st.DrawFn, count: int) -> tuple[frozenset[str], int, str]:
    """Which part of a batch is bad: the table, the container, or one entry (which)."""
    flaws = draw(hostile("table", "container", "entry"))
    return flaws, draw(st.integers(0, count - 1)), draw(st.sampled_from(ENTRY_FLAWS))


def misshapen(draw: st.DrawFn, entry: dict[str, Any], required: tuple[str, ...]) -> Any:
    """An entry that is not a dict, has an unknown field, or lacks a required one."""
    flaw = draw(st.integers(0, 2))
    if flaw == 0:
        return draw(st.sampled_from([None, "row", [1], DEEP_LIST, ("row", 1)]))
    if flaw == 1:
        return {**entry, draw(st.sampled_from(["rows", "extra", "", "ROW", "KEY"])): 1}
    entry = dict(entry)
    del entry[draw(st.sampled_from(required))]
    return entry


def optional_fields(draw: st.DrawFn, entry: dict[str, Any], fields: dict[str, Any]) -> None:
    """Put each field in ``entry``; a None one only sometimes (absent means None)."""
    for name, value in fields.items():
        if value is not None or draw(st.booleans()):
            entry[name] = value


@examples(100)
@given(data=st.data())
def test_create_many_is_refused_whole_or_written_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    count = data.draw(st.integers(1, LIMITS.max_batch_items), "count")
    flaws, at, entry_flaw = batch_flaws(data.draw, count)
    table, schema = table_of(data.draw, flaws)
    stored = seed_keys(world, schema, fresh, 1) if entry_flaw == "taken" else []
    entries, keys = [], []
    for index in range(count):
        one = frozenset({entry_flaw}) if "entry" in flaws and index == at else frozenset()
        key = pick(data.draw, one, "key", fresh_keys(schema, fresh, index), bad_keys(schema))
        if "twice" in one and keys:
            key = keys[0]
        if "taken" in one:
            key = stored[0]
        keys.append(key)
        row = pick(
            data.draw,
            one,
            "row",
            good_columns(schema, changes=False),
            bad_columns(schema, changes=False),
        )
        if isinstance(row, dict):
            row = {"id": key, **row}
        args = vector(data.draw, one)
        entry = {"row": row, "embedding": args.embedding}
        optional_fields(data.draw, entry, {"document": args.document, "metadata": args.metadata})
        entries.append(
            misshapen(data.draw, entry, ("row", "embedding")) if "shape" in one else entry
        )
    ok = not flaws or (
        "entry" in flaws and flaws == {"entry"} and entry_flaw == "twice" and at == 0
    )
    batch = container(data.draw, flaws, entries)

    result = attempt(world, lambda: world.runner.create_many(table, batch), ok)
    if result is not None:
        for entry in entries:
            world.put(
                schema,
                entry["row"]["id"],
                {k: v for k, v in entry["row"].items() if k != "id"},
                entry["embedding"],
                entry.get("document"),
                entry.get("metadata"),
                result.saga_id,
            )
    world.check()


@examples(100)
@given(data=st.data())
def test_update_many_is_refused_whole_or_written_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    count = data.draw(st.integers(1, LIMITS.max_batch_items), "count")
    flaws, at, entry_flaw = batch_flaws(data.draw, count)
    table, schema = table_of(data.draw, flaws)
    stored = seed_keys(world, schema, fresh, count)
    entries = []
    for index in range(count):
        one = frozenset({entry_flaw}) if "entry" in flaws and index == at else frozenset()
        key = pick(data.draw, one, "key", st.just(stored[index]), bad_keys(schema))
        if "twice" in one and index > 0:
            key = stored[0]
        if "taken" in one:
            key = f"absent#{fresh}" if schema == "docs" else -fresh  # not stored
        changes = pick(
            data.draw,
            one,
            "row",
            st.none() | good_columns(schema, changes=True),
            bad_columns(schema, changes=True),
        )
        args = vector(data.draw, one, embedding_optional=True)
        entry: dict[str, Any] = {"key": key}
        optional_fields(
            data.draw,
            entry,
            {
                "changes": changes,
                "embedding": args.embedding,
                "document": args.document,
                "metadata": args.metadata,
            },
        )
        entries.append(misshapen(data.draw, entry, ("key",)) if "shape" in one else entry)
    ok = not flaws or (flaws == {"entry"} and entry_flaw == "twice" and at == 0)
    batch = container(data.draw, flaws, entries)

    result = attempt(world, lambda: world.runner.update_many(table, batch), ok)
    if result is not None:
        for entry in entries:
            world.change(
                schema,
                entry["key"],
                entry.get("changes") or {},
                entry.get("embedding"),
                entry.get("document"),
                entry.get("metadata"),
                result.saga_id,
            )
    world.check()


@examples(100)
@given(data=st.data())
def test_delete_many_is_refused_whole_or_done_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    count = data.draw(st.integers(1, LIMITS.max_batch_items), "count")
    flaws, at, entry_flaw = batch_flaws(data.draw, count)
    table, schema = table_of(data.draw, flaws)
    keys = seed_keys(world, schema, fresh, count)
    if "entry" in flaws:
        if entry_flaw == "twice" and at > 0:
            keys[at] = keys[0]
        elif entry_flaw in ("taken", "twice"):
            keys[at] = f"absent#{fresh}" if schema == "docs" else -fresh
        else:
            keys[at] = data.draw(bad_keys(schema), "bad key")
    batch = container(data.draw, flaws, keys)

    result = attempt(world, lambda: world.runner.delete_many(table, batch), not flaws)
    if result is not None:
        for key in keys:
            world.drop(schema, key)
    world.check()
