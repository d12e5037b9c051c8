"""The steps of an atomic unit: the dual-write steps, applied to each of its parts.

A unit changes rows of several tracked tables (so vectors of several collections) as
one saga: ``write_vectors`` writes every part's vectors, in the order the parts were
given, then ``commit_rows`` (the pivot) changes every part's rows in one SQLite
transaction, in the same order (a parent row before the child rows that name it).
Compensation undoes the parts' vectors in reverse order. Each part is a ``SagaContext``
of its own, so the per-table logic is exactly a single write's.

Sub-batch progress is one set of indexes for the whole unit: part ``p``'s sub-batch
``i`` is recorded as ``i`` plus the sub-batches of the parts before it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from saga._machine import SagaDefinition
from saga._ports import LogUnit, Synced, VectorRecord
from saga._steps import ATOMIC, SagaContext, UnitContext
from steps._rows import CommitRows
from steps._vectors import WriteVectors


def _unit(ctx: SagaContext) -> UnitContext:
    if not isinstance(ctx, UnitContext):
        raise TypeError("an atomic unit's step needs the unit's context")
    return ctx


@attrs.frozen
class UnitVectors:
    """Write (or delete) the vectors of every part."""

    name: str = "write_vectors"
    reaches: str = "vector_written"
    local: bool = False

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        for part in _unit(ctx).parts:
            WriteVectors(part.op).prepare(part, unit)

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        whole = _unit(ctx)
        offset = 0
        try:
            for part in whole.parts:
                count = len(part.chunks())
                part.progress = {i - offset for i in whole.progress if 0 <= i - offset < count}
                part.save_progress = _saver(whole, offset)
                WriteVectors(part.op).forward(part, None)
                whole.progress |= {offset + i for i in range(count)}
                offset += count
        finally:
            whole.late_possible = whole.late_possible or any(p.late_possible for p in whole.parts)

    def synced(self, ctx: SagaContext) -> Synced:
        synced: dict[str, VectorRecord | None] = {}
        for part in _unit(ctx).parts:
            synced.update(WriteVectors(part.op).synced(part))
        return synced

    def compensate(self, ctx: SagaContext) -> None:
        for part in reversed(_unit(ctx).parts):
            WriteVectors(part.op).compensate(part)


def _saver(whole: UnitContext, offset: int) -> Callable[[set[int]], None]:
    def save(applied: set[int]) -> None:
        whole.progress |= {offset + i for i in applied}
        whole.save_progress(set(whole.progress))

    return save


@attrs.frozen
class UnitRows:
    """Change the rows of every part, in the pivot's one transaction."""

    name: str = "commit_rows"
    reaches: str = "sqlite_committed"
    local: bool = True

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        for part in _unit(ctx).parts:
            CommitRows(part.op).prepare(part, unit)

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        for part in _unit(ctx).parts:
            CommitRows(part.op).forward(part, unit)

    def compensate(self, ctx: SagaContext) -> None:
        """Nothing to undo: a failed pivot transaction rolled back as a whole."""


UNIT = SagaDefinition(name=ATOMIC, steps=(UnitVectors(), UnitRows()), pivot="commit_rows")
