"""Float metadata and drift: chromadb 1.5.9 hands back about one float in nine of 16-17
significant digits one ulp off. The log keeps floats to 15 digits, so a value one ulp
from a 15-digit rounding boundary hashes differently from its neighbour: that is not
drift. A float that really moved is."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping

from saga import SagaRunner, VectorRecord
from tests.conftest import vec

SEVENTEEN_DIGITS = {"sum": 0.1 + 0.2, "third": 1 / 3, "coin": 2.675, "tiny": 1e-310}


def rounded(value: float) -> str:
    """What the log keeps of a float: 15 significant digits."""
    return f"{value:.15g}"


def boundary_floats(count: int) -> list[float]:
    """Floats whose next float up rounds to other 15 digits (brute force, seeded)."""
    rng = random.Random(16)
    found: list[float] = []
    while len(found) < count:
        value = rng.uniform(0.5, 2.0) * 10.0 ** rng.randint(-8, 8)
        if rounded(value) != rounded(math.nextafter(value, math.inf)):
            found.append(value)
    return found


def create(runner: SagaRunner, key: int, metadata: Mapping[str, float | str]) -> None:
    runner.create(
        "notes",
        {"id": key, "body": f"b{key}"},
        embedding=vec(key),
        document=f"d{key}",
        metadata=metadata,
    )


def plant(runner: SagaRunner, key: int, name: str, value: float) -> None:
    """Put ``value`` under ``name`` in the stored vector of ``key``, behind the library."""
    vector_id = f"notes:{key}"
    stored = runner.stores.vectors.get("notes", [vector_id], embeddings=True)[vector_id]
    metadata = {**(stored.metadata or {}), name: value}
    runner.stores.vectors.upsert(
        "notes", [VectorRecord(vector_id, stored.embedding, stored.document, metadata)]
    )


def stored_float(runner: SagaRunner, key: int, name: str) -> float:
    vector_id = f"notes:{key}"
    value = (runner.stores.vectors.get("notes", [vector_id])[vector_id].metadata or {})[name]
    assert isinstance(value, float)
    return value


def moves() -> Iterator[tuple[str, float]]:
    """(name, direction) of each float of ``SEVENTEEN_DIGITS`` plus ``edge``, both ways."""
    for name in [*SEVENTEEN_DIGITS, "edge"]:
        for direction in (math.inf, -math.inf):
            yield name, direction


def test_a_float_one_ulp_off_is_not_drift_and_one_a_billionth_off_is(
    runner: SagaRunner,
) -> None:
    metadata = {**SEVENTEEN_DIGITS, "edge": boundary_floats(1)[0]}
    planted = list(enumerate(moves(), start=1))
    for key, _ in planted:
        create(runner, key, metadata)
    assert runner.reconcile().clean
    for key, (name, direction) in planted:
        plant(runner, key, name, math.nextafter(metadata[name], direction))
    report = runner.reconcile()
    assert report.drift == ()
    assert report.clean
    for key, (name, direction) in planted:
        plant(runner, key, name, metadata[name] * (1 + math.copysign(1e-9, direction)))
    report = runner.reconcile()
    assert sorted(report.drift) == sorted(f"notes:{key}" for key, _ in planted)
    assert not report.clean
    assert runner.reconcile(fix=True).clean
    assert runner.reconcile().clean


def test_the_neighbour_across_a_15_digit_boundary_is_not_drift(runner: SagaRunner) -> None:
    edges = boundary_floats(12)
    for key, value in enumerate(edges, start=1):
        create(runner, key, {"f": value, "tag": "t"})
    for key, value in enumerate(edges, start=1):
        plant(runner, key, "f", math.nextafter(value, math.inf))
    crossed = [
        key
        for key, value in enumerate(edges, start=1)
        if rounded(stored_float(runner, key, "f")) != rounded(value)
    ]
    assert crossed, "no planted float crossed a boundary: the test would prove nothing"
    report = runner.reconcile()
    assert report.drift == ()
    assert report.clean


def test_a_changed_type_or_an_added_key_is_drift(runner: SagaRunner) -> None:
    create(runner, 1, {"f": 2.0, "n": 1.5})
    create(runner, 2, {"f": 2.0, "n": 1.5})
    create(runner, 3, {"f": 2.0, "n": 1.5})
    plant(runner, 1, "f", 2)  # an int where a float was
    plant(runner, 2, "extra", 1.5)
    plant(runner, 3, "n", math.nextafter(1.5, 2))  # one ulp off: not drift
    report = runner.reconcile()
    assert sorted(report.drift) == ["notes:1", "notes:2"]
