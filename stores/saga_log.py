"""The saga log in SQLite: sagas, their payloads, per-vector sync state and history.

Every state change is a compare-and-set on ``(saga_id, state, lease_owner)`` and lands
in ``saga_history`` in the same transaction. A ``LeaseLostError`` means another owner
took the saga over; the caller must stop touching it.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from saga import failpoints
from saga._clock import Clock, stamp
from saga._config import LeasePolicy
from saga._errors import ConfigurationError, LeaseLostError, SagaConflictError
from saga._machine import BEGIN, PENDING, SYNCED, TERMINAL
from saga._ports import Move, SagaRecord, TableSpec
from stores._schema import IN_FLIGHT_SAGA, IN_FLIGHT_VECTOR
from stores.sqlite import Database

_IN_CLAUSE_CHUNK = 500
_SAGA_COLUMNS = (
    "saga_id, definition, sqlite_table, state, attempts, last_error, lease_owner, "
    "lease_expires_at, created_at, updated_at, progress"
)


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


def _chunks(values: Sequence[Any], size: int = _IN_CLAUSE_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqliteSagaLog:
    """The saga log of one database, written on behalf of one lease owner."""

    def __init__(self, db: Database, clock: Clock, lease: LeasePolicy, owner: str) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.owner = owner

    # -- time -------------------------------------------------------------------------

    def now(self) -> str:
        return stamp(self.clock.now())

    def _expiry(self) -> str:
        return stamp(self.clock.now() + dt.timedelta(seconds=self.lease.ttl))

    # -- tracked tables ---------------------------------------------------------------

    def tracked(self, table: str) -> TableSpec | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM saga_tracked_tables WHERE sqlite_table = ?", (table,)
            ).fetchone()
        return None if row is None else _spec(row)

    def all_tracked(self) -> list[TableSpec]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM saga_tracked_tables ORDER BY sqlite_table")
            return [_spec(row) for row in rows]

    def save_tracked(self, spec: TableSpec, *, migrate: bool) -> TableSpec:
        """Record a table's configuration; same again is a no-op, a change needs migrate.

        A dimension not yet recorded is learnt (it is what Chroma holds, not a change).
        """
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT * FROM saga_tracked_tables WHERE sqlite_table = ?", (spec.table,)
            ).fetchone()
            if row is None:
                self._write_spec(conn, spec, replace=False)
                return spec
            current = _spec(row)
            if _same_links(current, spec):
                if current.dimension is None and spec.dimension is not None:
                    self.set_dimension(conn, spec.table, spec.dimension)
                    return spec
                return current
            if not migrate:
                raise ConfigurationError(
                    f"table {spec.table!r} is tracked as {current}; pass migrate=True to change",
                    field="table",
                )
            self._write_spec(conn, spec, replace=True)
        return spec

    def _write_spec(self, conn: sqlite3.Connection, spec: TableSpec, *, replace: bool) -> None:
        now = self.now()
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conn.execute(
            f"{verb} INTO saga_tracked_tables (sqlite_table, collection, key_column, "
            "vector_id_column, dimension, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                spec.table,
                spec.collection,
                spec.key,
                spec.vector_id_column,
                spec.dimension,
                now,
                now,
            ),
        )

    def set_dimension(self, conn: sqlite3.Connection, table: str, dimension: int) -> None:
        """Record a collection's dimension the first time it is learnt."""
        conn.execute(
            "UPDATE saga_tracked_tables SET dimension = ? WHERE sqlite_table = ? "
            "AND dimension IS NULL",
            (dimension, table),
        )

    # -- a saga's life ----------------------------------------------------------------

    def begin(
        self,
        *,
        saga_id: str,
        definition: str,
        spec: TableSpec,
        op: str,
        keys: Sequence[Any],
        prepare: Callable[[sqlite3.Connection], str],
    ) -> SagaRecord:
        """T1: refuse conflicts, let ``prepare`` check preconditions and return the
        payload, then record ``pending`` with its lease, payload and history, atomically."""
        vector_ids = [spec.vector_id(key) for key in keys]
        with self.db.write() as conn:  # no saga id in errors: the saga does not exist yet
            self._refuse_conflicts(conn, vector_ids, keys)
            payload = prepare(conn)
            now, expiry = self.now(), self._expiry()
            conn.execute(
                f"INSERT INTO saga_instances ({_SAGA_COLUMNS}, item_count) "
                "VALUES (?, ?, ?, ?, 0, NULL, ?, ?, ?, ?, '[]', ?)",
                (saga_id, definition, spec.table, PENDING, self.owner, expiry, now, now, len(keys)),
            )
            conn.executemany(
                "INSERT INTO vector_sync_state (vector_id, sqlite_table, sqlite_record_id, "
                "sync_status, saga_id, operation, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vector_id) DO UPDATE SET "
                "sync_status = excluded.sync_status, saga_id = excluded.saga_id, "
                "operation = excluded.operation, updated_at = excluded.updated_at",
                [
                    (vid, spec.table, key, PENDING, saga_id, op, now, now)
                    for vid, key in zip(vector_ids, keys, strict=True)
                ],
            )
            conn.execute(
                "INSERT INTO pending_vectors (temp_id, payload, created_at) VALUES (?, ?, ?)",
                (saga_id, payload, now),
            )
            self._history(conn, saga_id, None, [(BEGIN, PENDING)], now, None)
        failpoints.hit("after:pending")
        return SagaRecord(
            saga_id=saga_id,
            definition=definition,
            table=spec.table,
            state=PENDING,
            attempts=0,
            last_error=None,
            lease_owner=self.owner,
            lease_expires_at=expiry,
            created_at=now,
            updated_at=now,
        )

    def _refuse_conflicts(
        self, conn: sqlite3.Connection, vector_ids: Sequence[str], keys: Sequence[Any]
    ) -> None:
        placeholders_done = set(TERMINAL)
        for chunk in _chunks(list(vector_ids)):
            marks = ",".join("?" * len(chunk))
            row = conn.execute(
                "SELECT vector_id, saga_id FROM vector_sync_state "
                f"WHERE vector_id IN ({marks}) AND sync_status NOT IN (?, ?) LIMIT 1",
                (*chunk, *sorted(placeholders_done)),
            ).fetchone()
            if row is not None:
                key = keys[list(vector_ids).index(row["vector_id"])]
                raise SagaConflictError(
                    f"key {key!r} is being written by saga {row['saga_id']}",
                    key=key,
                    holder=row["saga_id"],
                )

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        local: Callable[[sqlite3.Connection], None] | None = None,
        error: str | None = None,
        hashes: Mapping[str, tuple[str, str] | None] | None = None,
        settle: bool = False,
    ) -> SagaRecord:
        """Persist ``moves`` (already checked against the machine) in one transaction,
        after running ``local`` in it. Terminal states drop the payload and the lease.
        ``hashes`` (on ``synced``) sets each vector's (content hash, content JSON) as
        last synced; None removes the vector's row (a completed delete).
        """

        def apply(conn: sqlite3.Connection) -> SagaRecord:
            if local is not None:
                local(conn)
            return self._move(conn, saga, moves, error, hashes)

        if settle:
            record = self.db.write_settled(apply, saga.saga_id)
        else:
            with self.db.write(saga.saga_id) as conn:
                record = apply(conn)
        for _event, dest in moves:
            failpoints.hit(f"after:{dest}")
        return record

    def _move(
        self,
        conn: sqlite3.Connection,
        saga: SagaRecord,
        moves: Sequence[Move],
        error: str | None,
        hashes: Mapping[str, tuple[str, str] | None] | None,
    ) -> SagaRecord:
        final = moves[-1][1]
        terminal = final in TERMINAL
        now = self.now()
        expiry = None if terminal else self._expiry()
        owner = None if terminal else self.owner
        cursor = conn.execute(
            "UPDATE saga_instances SET state = ?, updated_at = ?, lease_owner = ?, "
            "lease_expires_at = ?, last_error = COALESCE(?, last_error) "
            "WHERE saga_id = ? AND state = ? AND lease_owner IS ?",
            (final, now, owner, expiry, error, saga.saga_id, saga.state, self.owner),
        )
        if cursor.rowcount != 1:
            raise LeaseLostError(
                f"saga left state {saga.state!r} or changed owner", saga_id=saga.saga_id
            )
        self._history(conn, saga.saga_id, saga.state, moves, now, error)
        conn.execute(
            "UPDATE vector_sync_state SET sync_status = ?, updated_at = ? WHERE saga_id = ?",
            (final, now, saga.saga_id),
        )
        if final == SYNCED and hashes:
            self._apply_hashes(conn, saga.saga_id, hashes, now)
        if terminal:
            conn.execute("DELETE FROM pending_vectors WHERE temp_id = ?", (saga.saga_id,))
        return _evolve(saga, state=final, lease_owner=owner, lease_expires_at=expiry, at=now)

    @staticmethod
    def _apply_hashes(
        conn: sqlite3.Connection,
        saga_id: str,
        hashes: Mapping[str, tuple[str, str] | None],
        now: str,
    ) -> None:
        removed = [(vid, saga_id) for vid, synced in hashes.items() if synced is None]
        kept = [(*synced, now, vid, saga_id) for vid, synced in hashes.items() if synced]
        conn.executemany(
            "DELETE FROM vector_sync_state WHERE vector_id = ? AND saga_id = ?", removed
        )
        conn.executemany(
            "UPDATE vector_sync_state SET content_hash = ?, content = ?, last_synced_at = ? "
            "WHERE vector_id = ? AND saga_id = ?",
            kept,
        )

    @staticmethod
    def _history(
        conn: sqlite3.Connection,
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
        conn.executemany(
            "INSERT INTO saga_history (saga_id, from_state, to_state, event, at, error) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def precheck(
        self, spec: TableSpec, keys: Sequence[Any], check: Callable[[sqlite3.Connection], None]
    ) -> None:
        """``begin``'s refusals, in a read transaction: a conflict, then ``check``. Lets
        a saga be refused before it reads Chroma outside the write lock (``begin``
        checks all again, authoritatively)."""
        with self.db.read() as conn:
            self._refuse_conflicts(conn, [spec.vector_id(key) for key in keys], keys)
            check(conn)

    def vector_versions(
        self, vector_ids: Sequence[str], conn: sqlite3.Connection | None = None
    ) -> dict[str, tuple[Any, ...]]:
        """Each known vector's (saga id, status, content hash, updated_at): every saga
        that touches a vector changes at least one of them. ``conn``: inside that
        transaction; otherwise in a read transaction of its own."""
        if conn is None:
            with self.db.read() as own:
                return self.vector_versions(vector_ids, own)
        columns = "saga_id, sync_status, content_hash, updated_at"
        return _sync_state_columns(conn, columns, vector_ids)

    def save_progress(self, saga: SagaRecord, applied: set[int]) -> None:
        """Record the vector sub-batches applied so far, renewing the lease."""
        with self.db.write(saga.saga_id) as conn:
            cursor = conn.execute(
                "UPDATE saga_instances SET progress = ?, lease_expires_at = ?, updated_at = ? "
                "WHERE saga_id = ? AND state = ? AND lease_owner = ?",
                (
                    json.dumps(sorted(applied)),
                    self._expiry(),
                    self.now(),
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
                (error, self.now(), saga.saga_id, self.owner),
            ),
            saga.saga_id,
        )

    def renew(self, saga: SagaRecord) -> SagaRecord:
        """Extend this owner's lease on a saga; raise LeaseLostError if it is gone."""
        expiry, now = self._expiry(), self.now()
        with self.db.write(saga.saga_id) as conn:
            cursor = conn.execute(
                "UPDATE saga_instances SET lease_expires_at = ?, updated_at = ? "
                "WHERE saga_id = ? AND state = ? AND lease_owner = ?",
                (expiry, now, saga.saga_id, saga.state, self.owner),
            )
            if cursor.rowcount != 1:
                raise LeaseLostError("lease lost", saga_id=saga.saga_id)
        return attrs.evolve(saga, lease_expires_at=expiry, updated_at=now)

    def claim(self, saga: SagaRecord) -> SagaRecord | None:
        """Take a saga over for recovery: compare-and-set on its current lease.

        Returns the claimed saga (attempts counted), or None if someone else moved it.
        """
        return self.claim_many([saga])[0]

    def claim_many(self, sagas: Sequence[SagaRecord]) -> list[SagaRecord | None]:
        """``claim`` for a group, in one transaction (each still a compare-and-set)."""
        expiry, now = self._expiry(), self.now()
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
                f"SELECT {_SAGA_COLUMNS} FROM saga_instances WHERE saga_id = ?", (saga_id,)
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
                f"SELECT {_SAGA_COLUMNS} FROM saga_instances WHERE {IN_FLIGHT_SAGA} "
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

    def in_flight_vectors(self, conn: sqlite3.Connection, table: str) -> set[str]:
        """Vector ids of ``table`` that a saga is writing right now."""
        rows = conn.execute(
            f"SELECT vector_id FROM vector_sync_state WHERE {IN_FLIGHT_VECTOR} "
            "AND sqlite_table = ?",
            (table,),
        )
        return {row[0] for row in rows}

    def synced_content(
        self, conn: sqlite3.Connection, vector_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """(content hash, content JSON) last synced for each known vector id."""
        found = _sync_state_columns(conn, "content_hash, content", vector_ids)
        return {vector_id: (row[0], row[1]) for vector_id, row in found.items()}


def _sync_state_columns(
    conn: sqlite3.Connection, columns: str, vector_ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """``columns`` (a literal list, never user input) of each known vector id."""
    found: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(list(vector_ids)):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT vector_id, {columns} FROM vector_sync_state WHERE vector_id IN ({marks})",
            tuple(chunk),
        )
        for row in rows:
            found[row[0]] = tuple(row[1:])
    return found


def _spec(row: sqlite3.Row) -> TableSpec:
    return TableSpec(
        table=row["sqlite_table"],
        collection=row["collection"],
        key=row["key_column"],
        vector_id_column=row["vector_id_column"],
        dimension=row["dimension"],
    )


def _same_links(current: TableSpec, wanted: TableSpec) -> bool:
    """Same configuration; a dimension unknown on either side is no difference."""
    return (
        current.collection == wanted.collection
        and current.key == wanted.key
        and current.vector_id_column == wanted.vector_id_column
        and (None in (wanted.dimension, current.dimension) or wanted.dimension == current.dimension)
    )


def _evolve(
    saga: SagaRecord,
    *,
    state: str,
    lease_owner: str | None,
    lease_expires_at: str | None,
    at: str,
) -> SagaRecord:
    return attrs.evolve(
        saga,
        state=state,
        lease_owner=lease_owner,
        lease_expires_at=lease_expires_at,
        updated_at=at,
    )
