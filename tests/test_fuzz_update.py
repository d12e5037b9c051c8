"""Fuzzing ``update``: hostile input is refused whole, good input written whole."""

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
    hostile,
    pick,
    table_of,
    vector,
)
from tests.fuzz_world import World, attempt, opened_world, seed_keys


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


@examples(120)
@given(data=st.data())
def test_update_is_refused_whole_or_written_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    flaws = data.draw(
        hostile("table", "key", "changes", "embedding", "document", "metadata"), "flaws"
    )
    table, schema = table_of(data.draw, flaws)
    stored = seed_keys(world, schema, fresh, 1)
    key = stored[0]
    if "key" in flaws:
        absent = f"absent#{fresh}" if schema == "docs" else -fresh
        key = data.draw(st.just(absent) | bad_keys(schema), "key")
    changes = pick(
        data.draw,
        flaws,
        "changes",
        st.none() | good_columns(schema, changes=True),
        bad_columns(schema, changes=True),
    )
    args = vector(data.draw, flaws, embedding_optional=True)

    result = attempt(
        world,
        lambda: world.runner.update(
            table,
            key,
            changes,
            embedding=args.embedding,
            document=args.document,
            metadata=args.metadata,
        ),
        not flaws,
    )
    if result is not None:
        world.change(
            schema,
            key,
            changes or {},
            args.embedding,
            args.document,
            args.metadata,
            result.saga_id,
        )
    world.check()
