"""The ports: what the engine needs from the stores, as protocols and value objects.

``saga`` depends on these and never on ``chromadb`` or ``sqlite3``; ``stores``
implements them. No port hands out a database connection or takes a callback to run
inside a transaction: work that must be atomic is asked of a ``LogUnit``, one SQLite
transaction with typed operations, opened by the engine with ``log.unit()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs

Key = int | str
Scalar = str | int | float | bool
Metadata = dict[str, Scalar]


@attrs.frozen
class TableSpec:
    """A tracked table: where its rows and vectors live and how they are linked."""

    table: str
    collection: str
    key: str
    vector_id_column: str
    dimension: int | None = None
    keep_vectors: bool = True  # the log keeps each synced vector (False: opted out)
    link_keys: bool = False  # vectors also carry sqlite_table and sqlite_record_id

    def vector_id(self, key: Key) -> str:
        """The deterministic vector id of a row: ``table:key``."""
        return f"{self.table}:{key}"


@attrs.frozen
class TableShape:
    """What SQLite says about a table's columns, for checks before any write."""

    names: tuple[str, ...]
    required: tuple[str, ...]  # NOT NULL, no default, not the rowid alias
    integer_keys: tuple[str, ...]  # INTEGER PRIMARY KEY columns (rowid aliases)
    int_affinity: tuple[str, ...] = ()  # declared types SQLite reads as INTEGER
    text_affinity: tuple[str, ...] = ()  # declared types SQLite reads as TEXT
    unique: tuple[str, ...] = ()  # the single-column PRIMARY KEY, or UNIQUE on its own


@attrs.frozen
class VectorRecord:
    """One vector as Chroma stores it (embedding may be omitted when not read)."""

    id: str
    embedding: tuple[float, ...] | None
    document: str | None
    metadata: Mapping[str, Scalar | None] | None  # None values delete keys on upsert


@attrs.frozen
class QueryHit:
    """One nearest-neighbour answer from the vector store."""

    id: str
    distance: float


class VectorStore(Protocol):
    """The vector side of a dual write (the Chroma adapter implements it).

    ``remote``: calls cross a network; ``call_bound``: the most one retried call may
    take, in seconds (None when calls are not cut, as in-process ones are not);
    ``call_deadline``: the most a whole write may spend here (``saga._deadline``).
    """

    remote: bool

    @property
    def call_bound(self) -> float | None: ...

    @property
    def call_deadline(self) -> float | None:
        """The most one runner write may spend in this store, in seconds (None: no bound)."""

    def max_batch_size(self) -> int: ...

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None: ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def get(
        self, collection: str, ids: Sequence[str], *, embeddings: bool = False
    ) -> dict[str, VectorRecord]: ...

    def query(
        self, collection: str, embedding: Sequence[float], n_results: int, where: Any = None
    ) -> list[QueryHit]: ...

    def iter_records(self, collection: str, page_size: int) -> Iterator[list[VectorRecord]]: ...

    def count(self, collection: str) -> int: ...

    def dimension(self, collection: str) -> int | None: ...

    def close(self) -> None: ...


@attrs.frozen
class SagaRecord:
    """A saga as the log holds it (the payload is loaded separately)."""

    saga_id: str
    definition: str
    table: str
    state: str
    attempts: int
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: str | None
    created_at: str
    updated_at: str
    progress: tuple[int, ...] = ()
    compensating_from: str | None = None


Move = tuple[str, str]  # (event, destination state)


@attrs.frozen
class Recheck:
    """A compensated saga whose unanswered write may still land: undo it again at
    ``due_at`` from ``payload`` (its items with their before-images)."""

    saga_id: str
    definition: str
    table: str
    payload: str
    due_at: str


Synced = Mapping[str, VectorRecord | None]  # vector id -> as synced (None: deleted)


class Rows(Protocol):
    """The application's rows of tracked tables, inside one transaction."""

    def stored(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        """The stored rows of these keys, by key (absent keys left out)."""

    def insert(self, spec: TableSpec, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def update(self, spec: TableSpec, changes: Sequence[tuple[Key, Mapping[str, Any]]]) -> None:
        """Set each key's columns to the given values."""

    def delete(self, spec: TableSpec, keys: Sequence[Key]) -> None: ...

    def by_links(self, spec: TableSpec, vector_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows whose vector-id column names one of ``vector_ids``, by vector id."""

    def links(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, Any]:
        """Each stored key's vector-id column value (found by key)."""

    def page(self, spec: TableSpec, after: Key | None, size: int) -> list[tuple[Key, Any]]:
        """(key, vector-id column) of up to ``size`` rows after ``after``, in key order."""

    def count(self, spec: TableSpec) -> int: ...


class LogUnit(Protocol):
    """One SQLite transaction of the saga log; a write unit holds SQLite's write lock.

    Everything done through one unit commits together, or not at all (an exception
    leaving the ``with`` block rolls it back).
    """

    @property
    def rows(self) -> Rows:
        """The tracked tables' rows, in this transaction."""

    def assign_keys(self, spec: TableSpec, count: int, taken: Sequence[Key] = ()) -> list[int]:
        """Reserve ``count`` new keys of an ``INTEGER PRIMARY KEY`` table, as SQLite
        would assign them: above every stored key, every key a saga in flight holds and
        ``taken``; with AUTOINCREMENT, above its sequence, which is moved past them (a
        key is never handed out twice, even if its saga is compensated)."""

    def refuse_conflicts(
        self, spec: TableSpec, keys: Sequence[Key], own: str | None = None
    ) -> None:
        """Raise ``SagaConflictError`` if a saga in flight (other than ``own``) holds one
        of ``keys``."""

    def vector_versions(self, vector_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Each known vector's version: changed by every saga that touches it."""

    def in_flight_vectors(self, table: str) -> set[str]:
        """Vector ids of ``table`` that a saga is writing right now."""

    def synced_content(self, vector_ids: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
        """(content hash, content JSON) last synced for each known vector id."""

    def kept_ids(self, vector_ids: Sequence[str]) -> set[str]:
        """Which of these vectors the log keeps (``synced_vectors`` without the reading)."""

    def synced_vectors(self, vector_ids: Sequence[str]) -> dict[str, VectorRecord]:
        """Each vector as last synced, embedding included, where the log keeps it (a
        vector synced before schema 5 is not kept until it is written again)."""

    def keep_synced(self, records: Sequence[tuple[VectorRecord, str]]) -> int:
        """Keep each (vector, saga id) as its synced copy, where that saga's vector is
        synced and not kept yet; returns how many were kept."""

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
        """T1: the saga in ``pending`` with its lease, payload and history."""

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
        """``record_pending`` for (table, op, key) entries of several tables; ``table``
        names the saga's first. ``held``: the saga is already ``pending`` (an atomic unit
        that reserved keys): its entries and payload are brought up to date, and
        ``LeaseLostError`` raised if it is no longer this runner's."""

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        error: str | None = None,
        synced: Synced | None = None,
    ) -> SagaRecord:
        """Persist ``moves`` (checked against the machine). On ``synced``, record each
        vector as synced (None: a deleted vector's row goes). Raises ``LeaseLostError``
        if the saga left its state or changed owner."""

    def drop_recheck(self, saga_id: str) -> None:
        """The saga's late-write re-check is done."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """For a custom step's own tables: one statement in this transaction, its rows.

        The library's own SQL lives in ``stores``; this is the door for an extension's
        (an audit table written with the pivot, say). Values must be bound, never
        formatted into ``sql``."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class SagaLog(Protocol):
    """The saga log (the SQLite adapter implements it); see ``stores.saga_log``."""

    owner: str

    def unit(self, saga_id: str | None = None) -> AbstractContextManager[LogUnit]:
        """A write transaction (errors name ``saga_id``)."""

    def reading(self) -> AbstractContextManager[LogUnit]:
        """A read transaction: one consistent snapshot."""

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        error: str | None = None,
        recheck: Recheck | None = None,
    ) -> SagaRecord:
        """``moves`` in a transaction of their own, retried while the database is
        locked (recording a compensation must not be given up lightly); with
        ``recheck``, a late-write re-check is scheduled in the same transaction."""

    def due_rechecks(self, now: str) -> list[Recheck]:
        """Late-write re-checks due at ``now`` (an ISO time stamp), oldest first."""

    def save_progress(self, saga: SagaRecord, applied: set[int]) -> None: ...

    def record_error(self, saga: SagaRecord, error: str) -> None: ...

    def renew(self, saga: SagaRecord) -> SagaRecord: ...

    def release(self, saga: SagaRecord) -> None: ...

    def claim_many(self, sagas: Sequence[SagaRecord]) -> list[SagaRecord | None]: ...

    def load(self, saga_id: str) -> tuple[SagaRecord, str | None] | None: ...

    def history(self, saga_id: str) -> list[dict[str, Any]]: ...

    def ids_starting(self, prefix: str, limit: int = 5) -> list[str]: ...

    def in_flight(self) -> list[SagaRecord]: ...

    def vector_ids_of(self, saga_id: str) -> set[str]: ...

    def kept_vectors(self, table: str, after: str | None, size: int) -> list[VectorRecord]:
        """Up to ``size`` vectors of ``table`` the log keeps, by vector id after ``after``."""

    def unkept(
        self, table: str, after: str | None, size: int
    ) -> list[tuple[str, str, str, str | None]]:
        """Up to ``size`` (vector id, saga id, content hash, content JSON) of the synced
        vectors of ``table`` the log does not keep (synced before schema 5), by vector id
        after ``after``."""

    def counts(self) -> list[tuple[str, str, int]]:
        """(table, state, sagas) for every table and state seen."""

    def close(self) -> None: ...


class TableCatalog(Protocol):
    """The application's tables as SQLite describes them, and the tracked ones."""

    def shape(self, table: str) -> TableShape | None:
        """The table's columns, or None if there is no such table."""

    def spelling(self, table: str) -> str | None:
        """The table's name as created (SQLite names are case-insensitive)."""

    def tracked(self, table: str) -> TableSpec | None: ...

    def all_tracked(self) -> list[TableSpec]: ...

    def save_tracked(self, spec: TableSpec, *, migrate: bool) -> TableSpec: ...

    def set_dimension(self, table: str, dimension: int) -> None: ...
