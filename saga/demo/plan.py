"""Which records the demo writes how: plainly, under an injected fault, or in a worker
that is killed midway. Decided up front from the corpus, so every run is the same and
the summary can check its counts against what was attempted.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from saga.demo.corpus import Record
from saga.demo.errors import DemoUsageError

MIN_RECORDS = 30
"""Fewer records leave too few to inject every fault into (records)."""

BATCH_SIZES = {"summaries": 10, "glossary": 1, "constraints": 5}
"""Records per saga for the plain writes: batches (``create_many``) and single creates."""


@attrs.frozen
class Kill:
    """A worker process that runs one write and SIGKILLs itself at ``point``."""

    point: str
    op: str
    records: tuple[Record, ...]
    leaves: str
    """What the stores hold when it dies, in words."""


@attrs.frozen
class Plan:
    """Every write the demo attempts; each record write is counted once.

    ``creates`` are written plainly (batches per ``BATCH_SIZES``), then ``updates``
    and ``deletes`` of some of them. The rest are faults: ``stale`` is refused before
    any write; the Chroma and SQLite faults compensate; ``kills`` are left in flight.
    """

    creates: tuple[Record, ...]
    updates: tuple[Record, ...]
    deletes: tuple[Record, ...]
    stale: Record
    chroma_down: Record
    chroma_down_batch: tuple[Record, ...]
    lost_answer: Record
    check_violation: Record
    kills: tuple[Kill, ...]

    @property
    def plain_writes(self) -> int:
        """Record writes with no fault injected (record writes)."""
        return len(self.creates) + len(self.updates) + len(self.deletes)

    @property
    def attempted(self) -> int:
        """Every record write the demo attempts (a batch counts each of its records)."""
        return sum(self.by_operation().values())

    def by_operation(self) -> dict[str, int]:
        """Attempted record writes per operation: create, update, delete."""
        faulted_creates = 4 + len(self.chroma_down_batch)  # stale, down, lost, check + batch
        counts = {
            "create": len(self.creates) + faulted_creates,
            "update": len(self.updates),
            "delete": len(self.deletes),
        }
        for kill in self.kills:
            counts[kill.op.removesuffix("_many")] += len(kill.records)
        return counts


def make_plan(records: Sequence[Record]) -> Plan:
    """Set records aside for the faults (from the end), write the rest plainly."""
    if len(records) < MIN_RECORDS:
        raise DemoUsageError(f"the demo needs at least {MIN_RECORDS} records")
    pool = list(records)
    stale = _take(pool, "glossary", 1)[0]
    chroma_down = _take(pool, "summaries", 1)[0]
    chroma_down_batch = _take(pool, "constraints", 4)
    lost_answer = _take(pool, "glossary", 1)[0]
    check_violation = _take(pool, "summaries", 1)[0]
    killed_create = _take(pool, "summaries", 1)
    killed_batch = _take(pool, "glossary", 3)
    creates = tuple(pool)
    updates = tuple(creates[1::7][: max(1, len(records) // 20)])
    deletes = tuple(r for r in creates[4::11] if r not in updates)[: max(1, len(records) // 30)]
    untouched = [r for r in creates if r not in updates and r not in deletes]
    kills = (
        Kill("after:pending", "create", killed_create, "intent recorded; nothing written yet"),
        Kill(
            "after:write_vectors",
            "create_many",
            killed_batch,
            f"{len(killed_batch)} vectors in Chroma, no rows: orphans without recovery",
        ),
        Kill(
            "after:write_vectors",
            "update",
            (_middle(untouched, "summaries"),),
            "new vector in Chroma, old row in SQLite",
        ),
        Kill(
            "after:write_vectors",
            "delete",
            (_middle(untouched, "constraints"),),
            "vector deleted, row still in SQLite",
        ),
    )
    return Plan(
        creates=creates,
        updates=updates,
        deletes=deletes,
        stale=stale,
        chroma_down=chroma_down,
        chroma_down_batch=chroma_down_batch,
        lost_answer=lost_answer,
        check_violation=check_violation,
        kills=kills,
    )


def _take(pool: list[Record], table: str, count: int) -> tuple[Record, ...]:
    """Remove the last ``count`` records of ``table`` from ``pool``, in corpus order."""
    found = [r for r in reversed(pool) if r.table == table][:count]
    if len(found) < count:
        raise DemoUsageError(f"too few {table} records for the demo: ask for more records")
    for record in found:
        pool.remove(record)
    return tuple(reversed(found))


def _middle(records: Sequence[Record], table: str) -> Record:
    """The middle-most record of ``table``: written early enough, not yet touched."""
    matching = [r for r in records if r.table == table]
    if not matching:
        raise DemoUsageError(f"too few {table} records for the demo: ask for more records")
    return matching[len(matching) // 2]
