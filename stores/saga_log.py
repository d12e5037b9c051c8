"""The saga log in SQLite: sagas, their payloads, per-vector sync state and history.

Work that must commit together is done through a unit (``unit()`` for a write,
``reading()`` for a snapshot; see ``stores._log_unit``); the methods here are the
single-statement operations of a saga's life (claim, renew, release, progress, errors)
and the reads of ``saga status``/``show``. A ``LeaseLostError`` means another owner took
the saga over; the caller must stop touching it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from saga import failpoints
from saga._clock import Clock
from saga._config import LeasePolicy
from saga._errors import LeaseLostError
from saga._ports import Move, Recheck, SagaRecord, VectorRecord
from stores._log_unit import SAGA_COLUMNS, Lease, SqliteLogUnit, kept_vector
from stores._schema import IN_FLIGHT_SAGA
from stores.sqlite import Database


def _record(row: sqlite3.Row, compensating_from: str | None = None) -> SagaRecord:
    return SagaRecord(
        saga_id=row["saga_id"],
        definition=row["definition"],
        table=row["sqlite_table"],
        state=row["state"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        progress=tuple(json.loads(row["progress"])),
        compensating_from=compensating_from,
    )


class SqliteSagaLog:
    """The saga log of one database, written on behalf of one lease owner."""

    def __init__(self, db: Database, clock: Clock, lease: LeasePolicy, owner: str) -> None:
        self.db = db
        self.owner = owner
        self._lease = Lease(owner=owner, clock=clock, policy=lease)

    # -- transactions -----------------------------------------------------------------

    @contextlib.contextmanager
    def unit(self, saga_id: str | None = None) -> Iterator[SqliteLogUnit]:
        """A write transaction (BEGIN IMMEDIATE), committed when the block ends."""
        with self.db.write(saga_id) as conn:
            yield SqliteLogUnit(conn, self._lease)

    @contextlib.contextmanager
    def reading(self) -> Iterator[SqliteLogUnit]:
        """A read transaction: one snapshot for several reads."""
        with self.db.read() as conn:
            yield SqliteLogUnit(conn, self._lease)

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        error: str | None = None,
        recheck: Recheck | None = None,
    ) -> SagaRecord:
        """``moves`` in a transaction of their own, retried while the database is locked
        for up to ``SqliteOptions.settle_timeout``: recording a compensation must not be
        abandoned because another connection holds the write lock for a while."""

        def apply(conn: sqlite3.Connection) -> SagaRecord:
            unit = SqliteLogUnit(conn, self._lease)
            if recheck is not None:
                unit.schedule_recheck(recheck)
            return unit.advance(saga, moves, error=error)

        record = self.db.write_settled(apply, saga.saga_id)
        for _event, dest in moves:
            failpoints.hit(f"after:{dest}")
        return record

    # -- a saga's life ----------------------------------------------------------------

    def save_progress(self, saga: SagaRecord, applied: set[int]) -> None:
        """Record the vector sub-batches applied so far, renewing the lease."""
        with self.db.write(saga.saga_id) as conn:
            cursor = conn.execute(
                "UPDATE saga_instances SET progress = ?, lease_expires_at = ?, updated_at = ? "
                "WHERE saga_id = ? AND state = ? AND lease_owner = ?",
                (
                    json.dumps(sorted(applied)),
                    self._lease.expiry(),
                    self._lease.now(),
                    saga.saga_id,
                    saga.state,
                    self.owner,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLostError("lease lost while writing vectors", saga_id=saga.saga_id)

    def record_error(self, saga: SagaRecord, error: str) -> None:
        """Note why an attempt failed (the saga keeps its state for a later run; attempts
        are counted when recovery claims the saga)."""
        self.db.write_settled(
            lambda conn: conn.execute(
                "UPDATE saga_instances SET last_error = ?, "
                "updated_at = ? WHERE saga_id = ? AND lease_owner IS ?",
                (error, self._lease.now(), saga.saga_id, self.owner),
            ),
            saga.saga_id,
        )

    def renew(self, saga: SagaRecord) -> SagaRecord:
        """Extend this owner's lease on a saga; raise LeaseLostError if it is gone."""
        expiry, now = self._lease.expiry(), self._lease.now()
        with self.db.write(saga.saga_id) as conn:
            cursor = conn.execute(
                "UPDATE saga_instances SET lease_expires_at = ?, updated_at = ? "
                "WHERE saga_id = ? AND state = ? AND lease_owner = ?",
                (expiry, now, saga.saga_id, saga.state, self.owner),
            )
            if cursor.rowcount != 1:
                raise LeaseLostError("lease lost", saga_id=saga.saga_id)
        return attrs.evolve(saga, lease_expires_at=expiry, updated_at=now)

    def claim_many(self, sagas: Sequence[SagaRecord]) -> list[SagaRecord | None]:
        """Take sagas over for recovery, in one transaction, each by compare-and-set on
        its current lease. Returns each claimed saga (attempts counted), or None where
        someone else moved it."""
        expiry, now = self._lease.expiry(), self._lease.now()
        claimed: list[SagaRecord | None] = []
        with self.db.write() as conn:
            for saga in sagas:
                cursor = conn.execute(
                    "UPDATE saga_instances SET lease_owner = ?, lease_expires_at = ?, "
                    "attempts = attempts + 1, updated_at = ? WHERE saga_id = ? AND state = ? "
                    "AND lease_owner IS ? AND lease_expires_at IS ?",
                    (
                        self.owner,
                        expiry,
                        now,
                        saga.saga_id,
                        saga.state,
                        saga.lease_owner,
                        saga.lease_expires_at,
                    ),
                )
                claimed.append(
                    None
                    if cursor.rowcount != 1
                    else attrs.evolve(
                        saga,
                        lease_owner=self.owner,
                        lease_expires_at=expiry,
                        attempts=saga.attempts + 1,
                        updated_at=now,
                    )
                )
        failpoints.hit("after:claim")
        return claimed

    def claim(self, saga: SagaRecord) -> SagaRecord | None:
        """``claim_many`` of one saga."""
        return self.claim_many([saga])[0]

    def release(self, saga: SagaRecord) -> None:
        """Give up the lease on a saga this owner holds (it stays in its state)."""
        with self.db.write(saga.saga_id) as conn:
            conn.execute(
                "UPDATE saga_instances SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE saga_id = ? AND lease_owner = ?",
                (saga.saga_id, self.owner),
            )

    # -- reading ----------------------------------------------------------------------

    def load(self, saga_id: str) -> tuple[SagaRecord, str | None] | None:
        """A saga and its payload (None once terminal), or None if unknown."""
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT {SAGA_COLUMNS} FROM saga_instances WHERE saga_id = ?", (saga_id,)
            ).fetchone()
            if row is None:
                return None
            source = conn.execute(
                "SELECT from_state FROM saga_history WHERE saga_id = ? AND event = 'compensate' "
                "ORDER BY id DESC LIMIT 1",
                (saga_id,),
            ).fetchone()
            payload = conn.execute(
                "SELECT payload FROM pending_vectors WHERE temp_id = ?", (saga_id,)
            ).fetchone()
        return _record(row, source[0] if source else None), payload[0] if payload else None

    def ids_starting(self, prefix: str, limit: int = 5) -> list[str]:
        """Up to ``limit`` saga ids that begin with ``prefix`` (for ``saga show``)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT saga_id FROM saga_instances WHERE saga_id LIKE ? ESCAPE '\\' "
                "ORDER BY saga_id LIMIT ?",
                (f"{escaped}%", limit),
            )
            return [str(row[0]) for row in rows]

    def history(self, saga_id: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT from_state, to_state, event, at, error FROM saga_history "
                "WHERE saga_id = ? ORDER BY id",
                (saga_id,),
            )
            return [dict(row) for row in rows]

    def in_flight(self) -> list[SagaRecord]:
        """Every saga not yet in a terminal state, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {SAGA_COLUMNS} FROM saga_instances WHERE {IN_FLIGHT_SAGA} "
                "ORDER BY created_at, saga_id"
            )
            return [_record(row) for row in rows]

    def vector_ids_of(self, saga_id: str) -> set[str]:
        """The vector ids a saga holds (recorded in ``pending``)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT vector_id FROM vector_sync_state WHERE saga_id = ?", (saga_id,)
            )
            return {row[0] for row in rows}

    def due_rechecks(self, now: str) -> list[Recheck]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT saga_id, definition, sqlite_table, payload, due_at FROM saga_rechecks "
                "WHERE due_at <= ? ORDER BY due_at, saga_id",
                (now,),
            )
            return [Recheck(*row) for row in rows]

    def kept_vectors(self, table: str, after: str | None, size: int) -> list[VectorRecord]:
        """A page of the vectors the log keeps for ``table`` (see ``saga._rebuild``).

        ``+sqlite_table`` keeps SQLite off ``idx_vector_sync_table``: with it, each page
        sorted every row of the table again (quadratic: 15 s of a 100,000-vector rebuild
        with pages of 1,000); without it, the page walks the ``vector_id`` index from
        ``after`` and stops at ``size`` rows."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT vector_id, embedding, record FROM vector_sync_state "
                "WHERE +sqlite_table = ? AND vector_id > ? AND embedding IS NOT NULL "
                "AND record IS NOT NULL ORDER BY vector_id LIMIT ?",
                (table, after or "", size),
            ).fetchall()
        return [kept_vector(str(r[0]), r[1], str(r[2])) for r in rows]

    def unkept(
        self, table: str, after: str | None, size: int
    ) -> list[tuple[str, str, str, str | None]]:
        # ``+sqlite_table``: the vector_id index, as in ``kept_vectors``
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT vector_id, saga_id, content_hash, content FROM vector_sync_state "
                "WHERE +sqlite_table = ? AND vector_id > ? AND sync_status = 'synced' "
                "AND embedding IS NULL AND content_hash IS NOT NULL ORDER BY vector_id LIMIT ?",
                (table, after or "", size),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        """(table, state, sagas), for ``saga status``."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT sqlite_table, state, COUNT(*) FROM saga_instances "
                "GROUP BY sqlite_table, state ORDER BY sqlite_table, state"
            )
            return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def close(self) -> None:
        self.db.close()
