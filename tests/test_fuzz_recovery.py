"""Fuzzing ``recover``: the saga log itself as hostile input (a tampered payload)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz_strategies import FLOATS, examples
from tests.fuzz_world import (
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


# -- the saga log itself as hostile input: a tampered payload ------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
PAYLOAD_FIELDS = (
    "op",
    "items",
    "key",
    "row",
    "embedding",
    "document",
    "metadata",
    "before_row",
    "before_vector",
)
# Whole texts, from nothing to JSON nested 100,000 deep (B15).
BROKEN_PAYLOADS = (
    st.sampled_from(
        [
            "",
            "null",
            "hello",
            '{"op": "create", "items": [NaN]}',
            '{"op": "create", "items": [Infinity]}',
            '{"op": "create", "op": "delete", "items": []}',
            '{"op": "create", "items": [{"key": 1e999}]}',
            '{"op": "create", "items": ' + "[" * 500 + "]" * 500 + "}",
            '{"op": "create", "items": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "[" * 40 + "]" * 40,
            '{"op": "create", "items": [' + '{"key": 1},' * 1000 + '{"key": 1}]}',
        ]
    )
    | JSON_VALUES.map(json.dumps)
    | st.text(max_size=40)
)


@st.composite
def tampering(draw: st.DrawFn) -> Callable[[str], str]:
    """A change to a payload: a whole new text, or one field replaced or removed."""
    if draw(st.booleans()):
        text = draw(BROKEN_PAYLOADS)
        return lambda _payload: text
    field = draw(st.sampled_from(PAYLOAD_FIELDS))
    remove = draw(st.booleans())
    value = draw(JSON_VALUES)

    def tamper(payload: str) -> str:
        data = json.loads(payload)
        target = data if field in ("op", "items") else data["items"][0]
        if remove:
            del target[field]
        else:
            target[field] = value
        return json.dumps(data)

    return tamper


@examples(60)
@given(data=st.data())
def test_recovery_survives_a_tampered_payload(world: World, data: st.DataObject) -> None:
    """Recovery reads payloads back from the database, a file anyone may have edited:
    whatever one holds, recover() reports (never raises), still settles the others and
    leaves the rows and vectors of other keys alone.

    (What it makes of the tampered saga's own keys is not asserted: see B17.)
    """
    fresh = world.fresh()
    # Negative: a tampered key of None makes SQLite pick max(rowid) + 1 (B17), which
    # must not be a key a later example uses.
    bystander, tampered_key, good_key = -(10**12) - fresh, fresh * 16, fresh * 16 + 1
    good_create(world, bystander)
    tampered = strand(world, tampered_key)
    untouched = strand(world, good_key)
    rewrite_payload(world.db, tampered, data.draw(tampering(), "tampering"))
    bystander_id = f"notes:{bystander}"
    before = world.runner.stores.vectors.get("notes", [bystander_id], embeddings=True)

    report = world.runner.recover()

    settled = {*report.resumed_ids, *report.compensated_ids, *report.failed_ids}
    assert {tampered, untouched} <= settled
    assert untouched in report.resumed_ids, report.errors.get(untouched)
    rows = stored_rows(world.db, "notes")
    assert rows[good_key]["vector_id"] == f"notes:{good_key}"
    assert f"notes:{good_key}" in world.runner.stores.vectors.get("notes", [f"notes:{good_key}"])
    assert rows[bystander] == {
        "id": bystander,
        "body": "b",
        "extra": None,
        "vector_id": bystander_id,
    }
    assert world.runner.stores.vectors.get("notes", [bystander_id], embeddings=True) == before
    event(f"tampered saga: {'failed' if tampered in report.failed_ids else 'settled'}")
