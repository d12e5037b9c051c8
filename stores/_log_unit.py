"""One transaction of the saga log: the typed operations the engine composes atomically.

The engine opens a unit (``SqliteSagaLog.unit()``), asks it for what must commit
together (refuse conflicts, read rows, record ``pending``; or write rows and advance the
saga: the pivot), and the unit commits when the ``with`` block ends. Every state change
is a compare-and-set on ``(saga_id, state, lease_owner)`` and lands in ``saga_history``
in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from saga._clock import Clock, stamp
from saga._config import LeasePolicy
from saga._content import content_of
from saga._errors import LeaseLostError, SagaConflictError, ValidationError
from saga._machine import BEGIN, PENDING, SYNCED, TERMINAL
from saga._ports import Key, Move, Recheck, SagaRecord, Synced, TableSpec, VectorRecord
from stores._schema import IN_FLIGHT_VECTOR
from stores.rows import SqliteRows, quote

_IN_CLAUSE_CHUNK = 500
MAX_ROWID = 2**63 - 1
SAGA_COLUMNS = (
    "saga_id, definition, sqlite_table, state, attempts, last_error, lease_owner, "
    "lease_expires_at, created_at, updated_at, progress"
)


def chunks(values: Sequence[Any], size: int = _IN_CLAUSE_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@attrs.frozen
class Lease:
    """Whose name a unit writes, and the time it stamps (from the injected clock)."""

    owner: str
    clock: Clock
    policy: LeasePolicy

    def now(self) -> str:
        return stamp(self.clock.now())

    def expiry(self) -> str:
        return stamp(self.clock.now() + dt.timedelta(seconds=self.policy.ttl))


class SqliteLogUnit:
    """``saga._ports.LogUnit`` on one open transaction of ``conn``."""

    def __init__(self, conn: sqlite3.Connection, lease: Lease) -> None:
        self._conn = conn
        self._lease = lease
        self.rows = SqliteRows(conn)

    def assign_keys(self, spec: TableSpec, count: int, taken: Sequence[Key] = ()) -> list[int]:
        table, key = quote(spec.table), quote(spec.key)
        stored = self._conn.execute(f"SELECT MAX({key}) FROM {table}").fetchone()[0]
        held = self._conn.execute(
            "SELECT MAX(sqlite_record_id) FROM vector_sync_state WHERE sqlite_table = ? "
            f"AND {IN_FLIGHT_VECTOR} AND typeof(sqlite_record_id) = 'integer'",
            (spec.table,),
        ).fetchone()[0]
        sequence = self._autoincrement_sequence(spec.table)
        ints = [k for k in taken if isinstance(k, int)]
        start = max(0, stored or 0, held or 0, sequence or 0, *ints) + 1
        if start + count - 1 > MAX_ROWID:
            raise ValidationError(
                "the table's keys are used up to the largest integer SQLite stores",
                field=f"row.{spec.key}",
            )
        if sequence is not None:  # AUTOINCREMENT: never hand these keys out again
            self._conn.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = ?",
                (start + count - 1, spec.table),
            )
            self._conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                (spec.table, start + count - 1, spec.table),
            )
        return list(range(start, start + count))

    def _autoincrement_sequence(self, table: str) -> int | None:
        """The table's AUTOINCREMENT sequence (0 before its first row), or None if it
        has none."""
        declared = self._conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if declared is None or "AUTOINCREMENT" not in str(declared[0]).upper():
            return None
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def refuse_conflicts(
        self, spec: TableSpec, keys: Sequence[Key], own: str | None = None
    ) -> None:
        vector_ids = [spec.vector_id(key) for key in keys]
        for chunk in chunks(vector_ids):
            marks = ",".join("?" * len(chunk))
            row = self._conn.execute(
                "SELECT vector_id, saga_id FROM vector_sync_state "
                f"WHERE vector_id IN ({marks}) AND sync_status NOT IN (?, ?) "
                "AND saga_id IS NOT ? LIMIT 1",
                (*chunk, *sorted(TERMINAL), own),
            ).fetchone()
            if row is not None:
                key = keys[vector_ids.index(row["vector_id"])]
                raise SagaConflictError(
                    f"key {key!r} is being written by saga {row['saga_id']}",
                    key=key,
                    holder=row["saga_id"],
                )

    def vector_versions(self, vector_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """(saga id, status, content hash, updated_at): every saga that touches a vector
        changes at least one of them."""
        columns = "saga_id, sync_status, content_hash, updated_at"
        return sync_state_columns(self._conn, columns, vector_ids)

    def in_flight_vectors(self, table: str) -> set[str]:
        rows = self._conn.execute(
            f"SELECT vector_id FROM vector_sync_state WHERE {IN_FLIGHT_VECTOR} "
            "AND sqlite_table = ?",
            (table,),
        )
        return {row[0] for row in rows}

    def synced_content(self, vector_ids: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
        return sync_state_columns(self._conn, "content_hash, content", vector_ids)

    def drop_recheck(self, saga_id: str) -> None:
        self._conn.execute("DELETE FROM saga_rechecks WHERE saga_id = ?", (saga_id,))

    def schedule_recheck(self, recheck: Recheck) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO saga_rechecks (saga_id, definition, sqlite_table, "
            "payload, due_at) VALUES (?, ?, ?, ?, ?)",
            (recheck.saga_id, recheck.definition, recheck.table, recheck.payload, recheck.due_at),
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._conn.execute(sql, tuple(params))]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, [tuple(row) for row in rows])

    def record_pending(
        self,
        *,
        saga_id: str,
        definition: str,
        spec: TableSpec,
        op: str,
        keys: Sequence[Key],
        payload: str,
    ) -> SagaRecord:
        entries = [(spec, op, key) for key in keys]
        return self.record_unit(
            saga_id=saga_id,
            definition=definition,
            entries=entries,
            payload=payload,
            table=spec.table,
        )

    def record_unit(
        self,
        *,
        saga_id: str,
        definition: str,
        entries: Sequence[tuple[TableSpec, str, Key]],
        payload: str,
        table: str,
        held: SagaRecord | None = None,
    ) -> SagaRecord:
        now, expiry, owner = self._lease.now(), self._lease.expiry(), self._lease.owner
        if held is None:
            self._conn.execute(
                f"INSERT INTO saga_instances ({SAGA_COLUMNS}, item_count) "
                "VALUES (?, ?, ?, ?, 0, NULL, ?, ?, ?, ?, '[]', ?)",
                (saga_id, definition, table, PENDING, owner, expiry, now, now, len(entries)),
            )
            self._history(saga_id, None, [(BEGIN, PENDING)], now, None)
        else:  # an open unit's saga, still this runner's and still `pending`
            cursor = self._conn.execute(
                "UPDATE saga_instances SET item_count = ?, lease_expires_at = ?, updated_at = ? "
                "WHERE saga_id = ? AND state = ? AND lease_owner IS ?",
                (len(entries), expiry, now, saga_id, PENDING, owner),
            )
            if cursor.rowcount != 1:
                raise LeaseLostError(
                    "the unit's saga was taken over (by recovery, once its lease expired)",
                    saga_id=saga_id,
                )
        self._conn.executemany(
            "INSERT INTO vector_sync_state (vector_id, sqlite_table, sqlite_record_id, "
            "sync_status, saga_id, operation, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vector_id) DO UPDATE SET "
            "sync_status = excluded.sync_status, saga_id = excluded.saga_id, "
            "operation = excluded.operation, updated_at = excluded.updated_at",
            [
                (spec.vector_id(key), spec.table, key, PENDING, saga_id, op, now, now)
                for spec, op, key in entries
            ],
        )
        self._conn.execute(
            "INSERT INTO pending_vectors (temp_id, payload, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (temp_id) DO UPDATE SET payload = excluded.payload",
            (saga_id, payload, now),
        )
        return SagaRecord(
            saga_id=saga_id,
            definition=definition,
            table=table,
            state=PENDING,
            attempts=0,
            last_error=None,
            lease_owner=owner,
            lease_expires_at=expiry,
            created_at=now,
            updated_at=now,
        )

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        error: str | None = None,
        synced: Synced | None = None,
    ) -> SagaRecord:
        final = moves[-1][1]
        terminal = final in TERMINAL
        now = self._lease.now()
        expiry = None if terminal else self._lease.expiry()
        owner = None if terminal else self._lease.owner
        cursor = self._conn.execute(
            "UPDATE saga_instances SET state = ?, updated_at = ?, lease_owner = ?, "
            "lease_expires_at = ?, last_error = COALESCE(?, last_error) "
            "WHERE saga_id = ? AND state = ? AND lease_owner IS ?",
            (final, now, owner, expiry, error, saga.saga_id, saga.state, self._lease.owner),
        )
        if cursor.rowcount != 1:
            raise LeaseLostError(
                f"saga left state {saga.state!r} or changed owner", saga_id=saga.saga_id
            )
        self._history(saga.saga_id, saga.state, moves, now, error)
        self._conn.execute(
            "UPDATE vector_sync_state SET sync_status = ?, updated_at = ? WHERE saga_id = ?",
            (final, now, saga.saga_id),
        )
        if final == SYNCED and synced:
            self._record_synced(saga.saga_id, synced, now)
        if terminal:
            self._conn.execute("DELETE FROM pending_vectors WHERE temp_id = ?", (saga.saga_id,))
        return attrs.evolve(
            saga, state=final, lease_owner=owner, lease_expires_at=expiry, updated_at=now
        )

    def _record_synced(self, saga_id: str, synced: Synced, now: str) -> None:
        removed = [(vid, saga_id) for vid, record in synced.items() if record is None]
        kept = [
            (*content_of(record), *_kept(record), now, vid, saga_id)
            for vid, record in synced.items()
            if record is not None
        ]
        self._conn.executemany(
            "DELETE FROM vector_sync_state WHERE vector_id = ? AND saga_id = ?", removed
        )
        self._conn.executemany(
            "UPDATE vector_sync_state SET content_hash = ?, content = ?, embedding = ?, "
            "record = ?, last_synced_at = ? WHERE vector_id = ? AND saga_id = ?",
            kept,
        )

    def kept_ids(self, vector_ids: Sequence[str]) -> set[str]:
        found = sync_state_columns(
            self._conn, "embedding IS NOT NULL AND record IS NOT NULL", vector_ids
        )
        return {vid for vid, (kept,) in found.items() if kept}

    def synced_vectors(self, vector_ids: Sequence[str]) -> dict[str, VectorRecord]:
        found = sync_state_columns(self._conn, "embedding, record", vector_ids)
        return {
            vid: kept_vector(vid, embedding, record)
            for vid, (embedding, record) in found.items()
            if embedding is not None and record is not None
        }

    def keep_synced(self, records: Sequence[tuple[VectorRecord, str]]) -> int:
        before = self._conn.total_changes
        self._conn.executemany(
            "UPDATE vector_sync_state SET embedding = ?, record = ? WHERE vector_id = ? "
            "AND saga_id = ? AND sync_status = 'synced' AND embedding IS NULL",
            [(*_kept(record), record.id, saga_id) for record, saga_id in records],
        )
        return self._conn.total_changes - before

    def _history(
        self,
        saga_id: str,
        source: str | None,
        moves: Sequence[Move],
        now: str,
        error: str | None,
    ) -> None:
        rows = []
        for number, (event, dest) in enumerate(moves, start=1):  # the error: on the last
            rows.append(
                (saga_id, source, dest, event, now, error if number == len(moves) else None)
            )
            source = dest
        self._conn.executemany(
            "INSERT INTO saga_history (saga_id, from_state, to_state, event, at, error) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def _kept(record: VectorRecord) -> tuple[bytes | None, str | None]:
    """A synced vector as the log keeps it: float32 little-endian bytes, and its
    document and metadata as exact JSON (the content hash's JSON rounds floats).
    Without an embedding (the table opted out) the log keeps neither."""
    if record.embedding is None:
        return None, None
    values = array("f", record.embedding)
    if sys.byteorder != "little":
        values.byteswap()
    packed = values.tobytes()
    metadata = None if record.metadata is None else dict(record.metadata)
    return packed, json.dumps([record.document, metadata], allow_nan=False)


def kept_vector(vector_id: str, embedding: bytes, record: str) -> VectorRecord:
    values = array("f")
    values.frombytes(embedding)
    if sys.byteorder != "little":
        values.byteswap()
    document, metadata = json.loads(record)
    return VectorRecord(id=vector_id, embedding=tuple(values), document=document, metadata=metadata)


def sync_state_columns(
    conn: sqlite3.Connection, columns: str, vector_ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """``columns`` (a literal list, never user input) of each known vector id."""
    found: dict[str, tuple[Any, ...]] = {}
    for chunk in chunks(list(vector_ids)):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT vector_id, {columns} FROM vector_sync_state WHERE vector_id IN ({marks})",
            tuple(chunk),
        )
        for row in rows:
            found[row[0]] = tuple(row[1:])
    return found
