"""Fuzzing ``create``: hostile input is refused whole, good input written whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_strategies import (
    bad_columns,
    bad_keys,
    examples,
    good_columns,
    good_keys,
    hostile,
    pick,
    table_of,
    vector,
)
from tests.fuzz_world import World, attempt, opened_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


@examples(150)
@given(data=st.data())
def test_create_is_refused_whole_or_written_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    flaws = data.draw(hostile("table", "key", "row", "embedding", "document", "metadata"), "flaws")
    table, schema = table_of(data.draw, flaws)
    key = pick(data.draw, flaws, "key", good_keys(schema, fresh), bad_keys(schema))
    row = pick(
        data.draw,
        flaws,
        "row",
        good_columns(schema, changes=False),
        bad_columns(schema, changes=False),
    )
    if isinstance(row, dict):
        row = {"id": key, **row}
        if "key" in flaws and data.draw(st.booleans(), "no key column"):
            del row["id"]
    args = vector(data.draw, flaws)
    ok = not flaws and not world.exists(schema, key)

    result = attempt(
        world,
        lambda: world.runner.create(
            table,
            row,
            embedding=args.embedding,
            document=args.document,
            metadata=args.metadata,
        ),
        ok,
    )
    if result is not None:
        world.put(
            schema,
            key,
            {k: v for k, v in row.items() if k != "id"},
            args.embedding,
            args.document,
            args.metadata,
            result.saga_id,
        )
    world.check()
