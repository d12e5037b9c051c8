"""Fuzzing ``delete``: a hostile call is refused whole, a good one done whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_strategies import bad_keys, examples, hostile, table_of
from tests.fuzz_world import World, attempt, opened_world, seed_keys


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


@examples(100)
@given(data=st.data())
def test_delete_is_refused_whole_or_done_whole(world: World, data: st.DataObject) -> None:
    fresh = world.fresh()
    flaws = data.draw(hostile("table", "key"), "flaws")
    table, schema = table_of(data.draw, flaws)
    stored = seed_keys(world, schema, fresh, 1)
    key = stored[0]
    if "key" in flaws:
        absent = f"absent#{fresh}" if schema == "docs" else -fresh
        key = data.draw(st.just(absent) | bad_keys(schema), "key")

    result = attempt(world, lambda: world.runner.delete(table, key), not flaws)
    if result is not None:
        world.drop(schema, key)
    world.check()
