"""A custom saga: a dual-write create that also writes an audit row, all or nothing.

The worked example of the README's "Writing your own saga". It uses only the
extension API (``saga.extend``) and the built-in steps (``steps``):

    pending --write_vectors--> vector_written --audit--> audited
            --commit_rows--> sqlite_committed --finish--> synced

``audit`` is a *local* step: its row is written in the same SQLite transaction that
records ``audited``. It comes before the pivot (``commit_rows``), so a failure up to the
pivot undoes it: its compensation deletes the audit row, then the vector is deleted.

Recovery needs the definition by name: in Python, ``runner.register(AUDITED_CREATE)``
(``runner.run`` does it); from the CLI, ``saga recover --definitions
examples.audited_create`` (this module's ``DEFINITIONS``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs

from saga.extend import LogUnit, SagaContext, SagaDefinition
from steps import CommitRows, WriteVectors

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    saga_id TEXT NOT NULL,
    record_key INTEGER NOT NULL,
    PRIMARY KEY (saga_id, record_key)
)
"""


@attrs.frozen
class AuditStep:
    """One ``audit_log`` row per item, committed with the ``audited`` state."""

    db_path: str
    name: str = "audit"
    reaches: str = "audited"
    local: bool = True

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        # Inside `pending`: refuse at once (nothing written) if the table is missing.
        unit.execute("SELECT 1 FROM audit_log LIMIT 0")

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        assert unit is not None, "a local step runs inside the saga's transaction"
        unit.executemany(
            "INSERT OR IGNORE INTO audit_log (saga_id, record_key) VALUES (?, ?)",
            [(ctx.saga_id, item.key) for item in ctx.items],
        )

    def compensate(self, ctx: SagaContext) -> None:
        # Idempotent, and harmless if `forward` never ran. A compensation gets no
        # transaction: it opens its own connection.
        conn = sqlite3.connect(self.db_path, timeout=5)
        try:
            with conn:
                conn.execute("DELETE FROM audit_log WHERE saga_id = ?", (ctx.saga_id,))
        finally:
            conn.close()


def audited_create(db_path: str | Path) -> SagaDefinition:
    """The definition, for the database at ``db_path`` (its compensation needs it)."""
    return SagaDefinition(
        name="audited_create",
        steps=(WriteVectors("create"), AuditStep(str(db_path)), CommitRows("create")),
        pivot="commit_rows",
    )


def definitions(db_path: str) -> dict[str, SagaDefinition]:
    """What ``saga recover --definitions examples.audited_create`` registers."""
    definition = audited_create(db_path)
    return {definition.name: definition}
