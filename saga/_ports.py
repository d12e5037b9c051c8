"""The ports: what the engine needs from the stores, as protocols and value objects.

``saga`` depends on these and never on ``chromadb``; ``stores`` implements them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
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

    def vector_id(self, key: Key) -> str:
        """The deterministic vector id of a row: ``table:key``."""
        return f"{self.table}:{key}"


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
    """The vector side of a dual write (the Chroma adapter implements it)."""

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
LocalAction = Callable[[sqlite3.Connection], None]


class SagaLog(Protocol):
    """The saga log (the SQLite adapter implements it); see ``stores.saga_log``."""

    owner: str

    def begin(
        self,
        *,
        saga_id: str,
        definition: str,
        spec: TableSpec,
        op: str,
        keys: Sequence[Key],
        prepare: Callable[[sqlite3.Connection], str],
    ) -> SagaRecord: ...

    def advance(
        self,
        saga: SagaRecord,
        moves: Sequence[Move],
        *,
        local: LocalAction | None = None,
        error: str | None = None,
        hashes: Mapping[str, tuple[str, str] | None] | None = None,
        settle: bool = False,
    ) -> SagaRecord: ...

    def save_progress(self, saga: SagaRecord, applied: set[int]) -> None: ...

    def vector_versions(
        self, vector_ids: Sequence[str], conn: sqlite3.Connection | None = None
    ) -> dict[str, tuple[Any, ...]]: ...

    def precheck(
        self, spec: TableSpec, keys: Sequence[Key], check: Callable[[sqlite3.Connection], None]
    ) -> None: ...

    def record_error(self, saga: SagaRecord, error: str) -> None: ...

    def renew(self, saga: SagaRecord) -> SagaRecord: ...

    def release(self, saga: SagaRecord) -> None: ...

    def claim(self, saga: SagaRecord) -> SagaRecord | None: ...

    def claim_many(self, sagas: Sequence[SagaRecord]) -> list[SagaRecord | None]: ...

    def load(self, saga_id: str) -> tuple[SagaRecord, str | None] | None: ...

    def history(self, saga_id: str) -> list[dict[str, Any]]: ...

    def in_flight(self) -> list[SagaRecord]: ...

    def tracked(self, table: str) -> TableSpec | None: ...

    def all_tracked(self) -> list[TableSpec]: ...

    def save_tracked(self, spec: TableSpec, *, migrate: bool) -> TableSpec: ...

    def set_dimension(self, conn: sqlite3.Connection, table: str, dimension: int) -> None: ...

    def in_flight_vectors(self, conn: sqlite3.Connection, table: str) -> set[str]: ...

    def vector_ids_of(self, saga_id: str) -> set[str]: ...

    def synced_content(
        self, conn: sqlite3.Connection, vector_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]: ...


class Database(Protocol):
    """The application's SQLite file (``stores.sqlite.Database`` implements it)."""

    def read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def write(self, saga_id: str | None = None) -> AbstractContextManager[sqlite3.Connection]: ...

    def close(self) -> None: ...
