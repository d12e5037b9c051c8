"""Hostile input, generated: every call is refused whole or accepted whole.

The Hypothesis profiles and the strategies of the fuzz tests (``tests/test_fuzz_*.py``;
their stores and checks are in ``tests/fuzz_world.py``).

Hypothesis throws injection strings (in table, column and metadata names and in
values), NUL bytes, huge and deeply nested structures, NaN and infinities, wrong types,
wrong dimensions and numpy arrays at every write of the public API and at ``track``.
Each example first draws which of the call's arguments are bad (none, half the time),
draws those from hostile strategies and the others from good ones; then:

- a call with any bad argument (or a key that is taken / absent) raises
  ``ValidationError`` whose ``.field`` is a non-empty str, and neither store changed:
  every SQLite table (``saga_*`` included) and every Chroma collection (ids, documents,
  metadata) is exactly as it was;
- a call with only good arguments succeeds and is fully written: the tables and the
  collections hold exactly what a dict model of the acknowledged writes says (rows,
  embeddings at float32, documents, metadata, the linking metadata), no saga is in
  flight and no payload is left.

One runner per test function and a fresh key space per example. Seeded
(``derandomize``): the same examples on every run. ``SAGA_HYPOTHESIS_PROFILE=long``
runs ten times as many.

Each bug these tests found is also pinned, one example each, by a test in
``tests/test_fuzz_regressions.py`` (strict ``xfail`` while open). Open ones are kept out
of the generated inputs (``KNOWN BUG`` comments); fixed ones are generated as bad input
(surrogates, +-inf, bytes, "$" metadata names, keys of the wrong affinity, numbers
beyond float32...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tests.fuzz_world import DIM, LIMITS, RESERVED, TABLES

# -- profiles -----------------------------------------------------------------------------

_BASE = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "print_blob": False,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}
# No shrinking in CI: every example runs against a store that earlier examples filled,
# so shrinking is slow; a failure still prints its seeded, reproducible draws.
settings.register_profile("ci", max_examples=100, phases=[Phase.explicit, Phase.generate], **_BASE)
settings.register_profile("long", max_examples=1000, **_BASE)
PROFILE = os.environ.get("SAGA_HYPOTHESIS_PROFILE", "ci")
SCALE = 10 if PROFILE == "long" else 1


def examples(count: int) -> settings:
    """The profile's settings with ``count`` examples (times ten in the long profile)."""
    return settings(settings.get_profile(PROFILE), max_examples=count * SCALE)


# -- hostile material ---------------------------------------------------------------------


def nested(depth: int, make: Callable[[Any], Any], leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = make(value)
    return value


class Deep(list):  # type: ignore[type-arg]
    """A list nested 5,000 deep. Its own repr is short: Hypothesis prints what it draws,
    and repr() of the nesting itself exceeds the recursion limit."""

    def __repr__(self) -> str:
        return "<list nested 5000 deep>"


class DeepDict(dict):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return "<dict nested 5000 deep>"


class Huge(list):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return f"<list of {len(self)} numbers>"


DEEP_LIST = Deep([nested(4_999, lambda v: [v], 1)])
DEEP_DICT = DeepDict(a=nested(4_999, lambda v: {"a": v}, 1))
HUGE_LIST = Huge([0.5] * 100_000)
HUGE_TEXT = "x" * 1_000_001
HUGE_DICT = {f"k{i}": i for i in range(10_000)}
NAN, INF = float("nan"), float("inf")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

INJECTIONS = (
    "notes; DROP TABLE notes",
    "'; DROP TABLE notes; --",
    'notes" --',
    "x' OR '1'='1",
    "Robert'); DROP TABLE docs;--",
    "1; ATTACH DATABASE '/tmp/x' AS x",
    "saga_instances",
    "sqlite_master",
    "${jndi:ldap://example/x}",
    "../../etc/passwd",
    "%s%s%n",
    "{0.__class__}",
    "\u202enotes",
    "notes\n",
    " notes",
    "NOTES",
    "nul\x00byte",
    "\x00",
    "\ufeffBOM",
    "🙂" * 10,
    "a" * 300,
)
# Any valid UTF-8 text (a lone surrogate is not: it is in the bad values, B3/B4).
TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(INJECTIONS)
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc80" * 3])


class DeepTuple(tuple):  # type: ignore[type-arg]
    """A tuple nested 5,000 deep (hashable: a dict key, a name); short repr (B12)."""

    def __repr__(self) -> str:
        return "<tuple nested 5000 deep>"


DEEP_TUPLE = DeepTuple((nested(4_999, lambda v: (v,), ()),))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
BAD_INTS = st.integers(min_value=2**63, max_value=2**80) | st.integers(
    min_value=-(2**80), max_value=-(2**63) - 1
)


@st.composite
def hostile(draw: st.DrawFn, *fields: str) -> frozenset[str]:
    """Which arguments of one call are bad: none (half the time), or one or two."""
    if draw(st.integers(0, 9)) < 5:
        return frozenset()
    return frozenset(draw(st.sets(st.sampled_from(fields), min_size=1, max_size=2)))


# Tables.
GOOD_TABLES = st.sampled_from(TABLES)
BAD_TABLES = st.sampled_from(
    [*INJECTIONS, "plain", "saga_instances", "NOTES", "", None, 1, b"notes", ["notes"]]
) | st.sampled_from(["notes\ud800", DEEP_TUPLE, DEEP_LIST])


def good_keys(table: str, fresh: int) -> st.SearchStrategy[Any]:
    """Keys of the fresh key space of one example (a few extremes may repeat)."""
    if table == "docs":
        printable = st.text(st.characters(codec="utf-8", min_codepoint=32), min_size=1, max_size=40)
        injected = st.sampled_from([s for s in INJECTIONS if all(ord(c) >= 32 for c in s)])
        return (printable | injected).map(lambda p: f"{p[:40]}#{fresh}") | injected.map(
            lambda p: p[:64]
        )
    return st.integers(0, 14).map(lambda i: fresh * 16 + i) | st.sampled_from(
        [INT64_MIN, INT64_MAX, 0, -1]
    )


def fresh_keys(table: str, fresh: int, index: int) -> st.SearchStrategy[Any]:
    """Item ``index``'s key in the fresh key space of one example: never stored yet."""
    if table == "docs":
        injected = st.sampled_from([s for s in INJECTIONS if all(ord(c) >= 32 for c in s)])
        printable = st.text(st.characters(codec="utf-8", min_codepoint=32), min_size=1, max_size=40)
        return (printable | injected).map(lambda p: f"{p[:40]}#{fresh}.{index}")
    return st.just(fresh * 16 + index + 1)


def bad_keys(table: str) -> st.SearchStrategy[Any]:
    junk = st.sampled_from([None, b"1", [1], DEEP_LIST, DEEP_TUPLE, np.int64(1), 1.0, True])
    if table == "docs":  # TEXT key column: an int is stored as text, apart from its vector id
        texts = st.sampled_from(["", "a" * 65, "tab\there", "nl\n", "nul\x00", "\x1f"])
        return junk | texts | SURROGATES | st.integers(-5, 5) | BAD_INTS
    return junk | st.booleans() | FLOATS | TEXT | BAD_INTS


# Column values (+-inf and bytes are refused: the payload is JSON, B5/B8).
GOOD_VALUES = (
    st.none()
    | st.integers(INT64_MIN, INT64_MAX)
    | FLOATS
    | TEXT
    | st.booleans()
    | st.just(np.float64(2.5))
)
BAD_VALUES = (
    st.sampled_from([NAN, INF, -INF, b"\x00\xff", b""])
    | SURROGATES
    | BAD_INTS
    | st.sampled_from([DEEP_LIST, DEEP_DICT, Decimal("1.5"), 1 + 2j, object(), HUGE_LIST])
    | st.sampled_from([bytearray(b"x"), np.int64(3), {1, 2}, [1, 2], {"a": 1}, (1,)])
)
# Column names no call may write.
BAD_COLUMNS = st.sampled_from(
    [
        *INJECTIONS,
        "vector_id",
        "rowid",
        "oid",
        "_rowid_",
        "BODY",
        "Body",
        "missing",
        "",
        "body\x00",
        "a" * 65,
        1,
        None,
        ("a",),
        b"body",
        "body\ud800",
        DEEP_TUPLE,
    ]
)
# Not a row at all (falsy ones too: only None means "no changes", B6).
NOT_A_ROW = st.sampled_from(
    [[("id", 1)], "id=1", 1, b"row", DEEP_LIST, ("id", 1), [], "", 0, (), False]
)


@st.composite
def good_columns(draw: st.DrawFn, table: str, *, changes: bool) -> dict[str, Any]:
    """Values for the non-key columns (a NOT NULL ``body`` is never None)."""
    values = {}
    for name in draw(st.lists(st.sampled_from(["body", "extra"]), unique=True)):
        values[name] = draw(GOOD_VALUES)
    if table == "notes" and (not changes or "body" in values) and values.get("body") is None:
        values["body"] = draw(TEXT)
    return values


@st.composite
def bad_columns(draw: st.DrawFn, table: str, *, changes: bool) -> Any:
    values = draw(good_columns(table, changes=changes))
    flaw = draw(st.sampled_from(["value", "name", "not a dict", "null body", "key", "link"]))
    if flaw == "value":
        values[draw(st.sampled_from(["body", "extra"]))] = draw(BAD_VALUES)
    elif flaw == "name":
        values[draw(BAD_COLUMNS)] = 1
    elif flaw == "not a dict":
        return draw(NOT_A_ROW)
    elif flaw == "null body" and table == "notes":
        values["body"] = None  # NOT NULL without a default
    elif flaw == "key" and changes:
        values["id"] = 1  # a key cannot be changed
    else:
        values["vector_id"] = "x"  # written by the library only
    return values


# Embeddings: Chroma keeps float32, so numbers beyond its range are bad (B1, B2).
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
NUMBERS = st.lists(FLOAT32 | st.integers(-(2**24), 2**24), min_size=DIM, max_size=DIM)
GOOD_EMBEDDINGS = (
    NUMBERS
    | NUMBERS.map(tuple)
    | NUMBERS.map(lambda v: np.array(v, dtype=np.float32))
    | NUMBERS.map(lambda v: np.array(v, dtype=np.float64))
    | st.lists(st.integers(-1000, 1000), min_size=DIM, max_size=DIM).map(np.array)
)


def _poisoned(values: list[Any], position: int, poison: Any) -> list[Any]:
    values = list(values)
    values[position] = poison
    return values


BAD_EMBEDDINGS = (
    st.lists(FLOAT32, max_size=DIM - 1)
    | st.lists(FLOAT32, min_size=DIM + 1, max_size=9)
    | st.builds(
        _poisoned,
        NUMBERS,
        st.integers(0, DIM - 1),
        st.sampled_from(
            [
                *(NAN, INF, -INF, "1", None, True, [1.0], Decimal(1), 1 + 0j, b"1", DEEP_LIST),
                *(1e39, -3.5e38, 1e308, 10**400, -(10**39), np.float64(1e39)),  # > float32
            ]
        ),
    )
    | st.sampled_from(
        [
            None,
            HUGE_LIST,
            "1,2,3,4",
            b"\x00\x01\x02\x03",
            1.0,
            {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0},
            {1.0, 2.0, 3.0, 4.0},
            np.ones((1, DIM)),
            np.array([True] * DIM),
            np.array([NAN] * DIM),
            np.array(["a"] * DIM),
            DEEP_LIST,
        ]
    )
    | NUMBERS.map(iter)
)

# Documents.
GOOD_DOCUMENTS = st.none() | TEXT | st.just("d" * LIMITS.max_document_chars)
BAD_DOCUMENTS = (
    st.sampled_from(
        ["d" * (LIMITS.max_document_chars + 1), HUGE_TEXT, b"doc", 1, ["doc"], {"d": 1}, DEEP_LIST]
    )
    | SURROGATES
)

# Metadata: names starting with "$" are Chroma's operators (bad, B11).
META_NAMES = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30
).filter(lambda n: n not in RESERVED and not n.startswith(("chroma:", "#", "$")))
META_VALUES = st.integers(INT64_MIN, INT64_MAX) | FLOATS | TEXT | st.booleans()
GOOD_METADATA = st.none() | st.dictionaries(
    META_NAMES
    | st.sampled_from([s for s in INJECTIONS if s[:1] != "$" and "\x00" not in s and len(s) < 256]),
    META_VALUES,
    max_size=LIMITS.max_metadata_keys,
)
BAD_META_ENTRIES = st.sampled_from(
    [
        ("sqlite_table", "x"),
        ("sqlite_record_id", 1),
        ("saga_id", "x"),
        ("#x", 1),
        ("chroma:document", "x"),
        ("", 1),
        ("nul\x00", 1),
        ("k" * 257, 1),
        (1, 1),
        (None, 1),
        (("k",), 1),
        ("v", None),
        ("v", NAN),
        ("v", INF),
        ("v", 2**63),
        ("v", [1]),
        ("v", {"a": 1}),
        ("v", b"x"),
        ("v", Decimal(1)),
        ("v", np.int64(1)),
        ("v", DEEP_LIST),
        ("$x", 1),
        ("$and", "x"),
        ("${jndi:ldap://example/x}", 1),
        ("k\ud800", 1),
        ("v", "\udfff"),
        (DEEP_TUPLE, 1),
    ]
)


@st.composite
def bad_metadata(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(
            st.sampled_from(
                [{f"k{i}": i for i in range(9)}, HUGE_DICT, [("k", "v")], "k=v", 1, DEEP_DICT]
            )
        )
    metadata = draw(st.dictionaries(META_NAMES, META_VALUES, max_size=4))
    name, value = draw(BAD_META_ENTRIES)
    metadata[name] = value
    return metadata


def pick(draw: st.DrawFn, flaws: frozenset[str], field: str, good: Any, bad: Any) -> Any:
    return draw(bad if field in flaws else good)


class Vector(NamedTuple):
    embedding: Any
    document: Any
    metadata: Any


def vector(draw: st.DrawFn, flaws: frozenset[str], *, embedding_optional: bool = False) -> Vector:
    good_embedding, bad_embedding = GOOD_EMBEDDINGS, BAD_EMBEDDINGS
    if embedding_optional:  # an update: None keeps the stored embedding
        good_embedding = st.none() | GOOD_EMBEDDINGS
        bad_embedding = BAD_EMBEDDINGS.filter(lambda embedding: embedding is not None)
    return Vector(
        pick(draw, flaws, "embedding", good_embedding, bad_embedding),
        pick(draw, flaws, "document", GOOD_DOCUMENTS, BAD_DOCUMENTS),
        pick(draw, flaws, "metadata", GOOD_METADATA, bad_metadata()),
    )


def table_of(draw: st.DrawFn, flaws: frozenset[str]) -> tuple[Any, str]:
    """The table argument, and the schema the other arguments are drawn for."""
    if "table" in flaws:
        return draw(BAD_TABLES), draw(GOOD_TABLES)
    table = draw(GOOD_TABLES)
    return table, table
