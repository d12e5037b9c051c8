"""What the demo counts: a ledger while it runs, a frozen summary when it is done.

The unit is the *record write*: one row change and its vector (a batch saga counts each
of its records). Every attempted write ends in exactly one bucket, so
``written + refused + compensated + recovered + unresolved == attempted`` is a check
on the run, not a definition: ``attempted`` comes from the plan, the buckets from what
the stores and the runner reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs

Bucket = Literal["written", "refused", "compensated", "recovered", "unresolved"]

_ROW_DELTA = {"create": 1, "update": 0, "delete": -1}


def row_delta(op: str) -> int:
    """How many rows one record write of ``op`` (``create_many`` too) adds."""
    return _ROW_DELTA[op.removesuffix("_many")]


@attrs.define
class Tally:
    """The running ledger (mutable; only the demo's phases write to it)."""

    written: int = 0
    refused: int = 0
    compensated: int = 0
    recovered: int = 0
    unresolved: int = 0
    leftovers: int = 0
    """Writes that failed yet left a row or a vector behind (must stay 0)."""
    expected_rows: int = 0
    """Rows the stores should hold, from the writes that took effect."""
    accounted: set[str] = attrs.field(factory=set)
    """Saga ids already in a bucket, so recovery does not count them twice."""
    pictures: dict[str, str] = attrs.field(factory=dict)
    """Saga ids worth drawing, by what happened to them ("compensated", "recovered")."""

    def settle(self, bucket: Bucket, op: str, count: int, saga_id: str | None = None) -> None:
        """Put ``count`` record writes of ``op`` in ``bucket``."""
        setattr(self, bucket, getattr(self, bucket) + count)
        if bucket in ("written", "recovered"):
            self.expected_rows += row_delta(op) * count
        if saga_id is not None:
            self.accounted.add(saga_id)


@attrs.frozen
class DemoSummary:
    """The outcome of ``run_demo``; ``ok`` decides the exit code."""

    workdir: Path
    attempted: int
    """Record writes the plan attempted; the five buckets below must add up to it."""
    written: int
    refused: int
    compensated: int
    recovered: int
    unresolved: int
    leftovers: int
    """Failed writes that left a row or a vector behind."""
    expected_rows: int
    recovery_failed: int
    orphan_vectors: int
    missing_vectors: int
    drift: int
    stuck_sagas: int
    in_flight_before_recovery: int = 0
    """Sagas ``saga status`` showed in flight after the workers died."""
    rows: int = 0
    vectors: int = 0
    diagrams: tuple[Path, ...] = ()
    saga_pictures: tuple[Path, ...] = ()
    seconds: float = 0.0

    @property
    def adds_up(self) -> bool:
        """Every attempted write is in exactly one bucket."""
        settled = self.written + self.refused + self.compensated + self.recovered
        return settled + self.unresolved == self.attempted

    @property
    def reconcile_clean(self) -> bool:
        """The final reconcile found no orphan, no missing vector, no drift, no stuck saga."""
        return not (self.orphan_vectors or self.missing_vectors or self.drift or self.stuck_sagas)

    @property
    def ok(self) -> bool:
        """Exit 0 only if the stores agree, recovery left nothing, and the counts add up."""
        return (
            self.adds_up
            and self.reconcile_clean
            and self.unresolved == 0
            and self.leftovers == 0
            and self.recovery_failed == 0
            and self.rows == self.vectors == self.expected_rows
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, the derived verdicts included."""
        data = attrs.asdict(self, value_serializer=_plain)
        data.update(adds_up=self.adds_up, reconcile_clean=self.reconcile_clean, ok=self.ok)
        return data


def _plain(_instance: object, _field: object, value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value
