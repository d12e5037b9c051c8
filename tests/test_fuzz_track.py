"""Fuzzing ``track``: a hostile configuration is refused whole, a good one recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from saga import ValidationError
from tests.fuzz_strategies import (
    BAD_COLUMNS,
    DEEP_TUPLE,
    INJECTIONS,
    examples,
    hostile,
)
from tests.fuzz_world import World, assert_refused, opened_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with opened_world(tmp_path) as opened:
        yield opened


# -- the properties: track() ----------------------------------------------------------------

SHAPES = {
    "notes": ("id", "body", "extra", "vector_id"),
    "docs": ("id", "body", "extra", "vector_id"),
    "plain": ("id", "body", "vector_id"),
}
UNIQUE_KEY = "id"
NOT_COLUMNS = BAD_COLUMNS.filter(lambda name: name != "vector_id")
# Another spelling of a tracked table's name is the same SQLite table (B16).
BAD_TRACK_TABLES = st.sampled_from(
    [
        *INJECTIONS,
        "Notes",
        "DOCS",
        "PLAIN",
        "notes\ud800",
        DEEP_TUPLE,
        "missing",
        "saga_meta",
        "",
        None,
        1,
        ["notes"],
    ]
)
# Not "": a falsy collection reads as "the default" (like update()'s changes, B6).
BAD_COLLECTIONS = st.sampled_from(
    ["ab", "-notes", "notes-", "no tes", "x" * 513, "notes/", 1, "n\x00tes", "né", b"notes"]
) | st.sampled_from(INJECTIONS[:6])
BAD_DIMENSIONS = st.sampled_from([0, -1, True, "4", 4.0, [4], 2.5, -(2**70), 2**70, 10**6])


@examples(100)
@given(data=st.data())
def test_track_is_refused_whole_or_recorded(world: World, data: st.DataObject) -> None:
    flaws = data.draw(
        hostile("table", "collection", "key", "link", "dimension", "reconfigure", "shared"),
        "flaws",
    )
    table = data.draw(st.sampled_from(sorted(SHAPES)), "table")
    names = SHAPES[table]
    # Draw the same things whatever the model holds (Hypothesis replays draws), then
    # pick: a tracked table gets its configuration again (a no-op), an untracked one any.
    again = data.draw(st.booleans(), "same collection given")
    fresh_collection = data.draw(st.sampled_from([None, "plain", "Other-1.x", "Other.2"]))
    key, link = data.draw(st.permutations(names), "columns")[:2]
    dimension = data.draw(st.none() | st.integers(1, 8), "dimension")
    dimension_again = data.draw(st.booleans(), "same dimension given")
    current = world.tracked.get(table)
    collection = fresh_collection
    if current is not None:
        # None stands for the table's name: the same only if that is the collection.
        collection = current[0] if again or current[0] != table else None
        key, link = current[1], current[2]
        dimension = current[3] if dimension_again else None
    if "reconfigure" in flaws:
        if current is None:
            flaws = flaws - {"reconfigure"}  # an untracked table has nothing to change
        else:
            changes = ["collection", "key", "link", "dimension"]
            change = changes[len(fresh_collection or "") % 4]
            if change == "dimension" and current[3] is None:
                change = "collection"  # a first dimension is learnt, not a change
            spare = next(n for n in names if n not in (key, link))
            if change == "collection":
                collection = "Other-2.x" if current[0] == "Other-1.x" else "Other-1.x"
            elif change == "key":
                key = spare
            elif change == "link":
                link = spare
            if change == "dimension":
                dimension = (current[3] or 1) + 1
    if "shared" in flaws:  # the collection of another tracked table (B14)
        collection = next(c[0] for t, c in sorted(world.tracked.items()) if t != table)
    if "table" in flaws:
        table = data.draw(BAD_TRACK_TABLES, "bad table")
    if "collection" in flaws:
        collection = data.draw(BAD_COLLECTIONS, "bad collection")
    if "key" in flaws:
        key = data.draw(NOT_COLUMNS | st.just(link), "bad key")
    if "link" in flaws:
        link = data.draw(NOT_COLUMNS | st.just(key), "bad link")
    if "dimension" in flaws:
        dimension = data.draw(BAD_DIMENSIONS, "bad dimension")
    # The key must be unique on its own: in these tables only `id` (the PRIMARY KEY) is;
    # any other column is refused like a bad key (issue 14).
    ok = not flaws and key == UNIQUE_KEY
    wanted = (collection or table, key, link)

    before = world.snapshot()
    refused: ValidationError | None = None
    try:
        result = world.runner.track(
            table, collection=collection, key=key, vector_id_column=link, dimension=dimension
        )
    except ValidationError as exc:
        refused = exc
    if refused is not None:
        assert_refused(world, before, refused, ok)
    else:
        config = (table, collection, key, link, dimension)
        assert ok, f"bad configuration accepted: {config}, {current}, {result}"
        event("accepted")
        stored = world.runner.stores.catalog.tracked(table)
        assert stored == result
        assert stored is not None
        assert (stored.collection, stored.key, stored.vector_id_column) == wanted
        world.tracked[table] = (*wanted, stored.dimension)  # a dimension may be learnt
    world.check()
