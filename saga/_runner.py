"""``SagaRunner``: the public face, and the composition root that wires the stores in.

Thread model: one runner may be shared by threads. Each thread gets its own SQLite
connection (``stores.sqlite``); SQLite's write lock (BEGIN IMMEDIATE, busy timeout)
serialises writers across threads and processes; the in-flight check that refuses a
second saga on a key runs inside that lock. The Chroma client is shared.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from loguru import logger

from saga import _validation as check
from saga._clock import Clock, SystemClock
from saga._config import ChromaTimeouts, LeasePolicy, Limits, RetryPolicy, SqliteOptions
from saga._engine import Engine, Outcome, Settled
from saga._errors import (
    CompensationError,
    ConfigurationError,
    DataIntegrityError,
    SagaError,
    ValidationError,
)
from saga._machine import SagaDefinition
from saga._owner import lease_owner_id
from saga._ports import (
    Database,
    Key,
    SagaLog,
    SagaRecord,
    TableSpec,
    VectorRecord,
    VectorStore,
)
from saga._recovery import DEFAULT_MAX_ATTEMPTS
from saga._results import (
    QueryResult,
    ReconcileReport,
    RecoveryReport,
    SagaResult,
    TableCounts,
)
from saga._steps import Item


class SagaRunner:
    """Runs dual writes to one SQLite database and one Chroma as sagas.

    Build it with ``SagaRunner.open``. Use it as a context manager, or call ``close``.
    """

    def __init__(
        self,
        *,
        database: Database,
        log: SagaLog,
        vectors: VectorStore,
        clock: Clock,
        lease: LeasePolicy,
        limits: Limits,
        definitions: Mapping[str, SagaDefinition],
    ) -> None:
        self.database = database
        self.log = log
        self.vectors = vectors
        self.clock = clock
        self.lease = lease
        self.limits = limits
        self.definitions = dict(definitions)
        bound = getattr(vectors, "call_bound", None)  # remote stores bound their calls
        self.engine = Engine(log, vectors, clock, lease, step_budget=2 * (bound or 0.0))
        self._specs: dict[str, TableSpec] = {}
        self._columns: dict[str, check.TableShape] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        db_path: str | os.PathLike[str],
        *,
        chroma_path: str | os.PathLike[str] | None = None,
        chroma_client: Any = None,
        chroma_host: str | None = None,
        chroma_port: int | None = None,
        clock: Clock | None = None,
        lease: LeasePolicy | None = None,
        retry: RetryPolicy | None = None,
        chroma_timeouts: ChromaTimeouts | None = None,
        sqlite: SqliteOptions | None = None,
        limits: Limits | None = None,
        create: bool = True,
    ) -> SagaRunner:
        """Open (``create``: and set up) the saga log in ``db_path`` and connect Chroma.

        Chroma is, in order: ``chroma_client`` (e.g. ``chromadb.HttpClient``), a server
        at ``chroma_host``/``chroma_port``, or the embedded ``PersistentClient`` at
        ``chroma_path`` (default: ``<db_path>.chroma`` beside the database).
        """
        # The composition root: the only place where saga reaches the adapters.
        from steps import DEFINITIONS  # noqa: PLC0415
        from stores.chroma import ChromaVectorStore  # noqa: PLC0415
        from stores.saga_log import SqliteSagaLog  # noqa: PLC0415
        from stores.sqlite import Database  # noqa: PLC0415

        retry = retry or RetryPolicy()
        timeouts = chroma_timeouts or ChromaTimeouts()
        clock = clock or SystemClock()
        lease = lease or LeasePolicy()
        database = Database.open(db_path, sqlite or SqliteOptions(), create=create)
        try:
            vectors: VectorStore
            if chroma_client is not None:
                vectors = ChromaVectorStore(
                    chroma_client, remote=_is_http(chroma_client), retry=retry, timeouts=timeouts
                )
            elif chroma_host is not None:
                vectors = ChromaVectorStore.http(
                    chroma_host, chroma_port or 8000, retry=retry, timeouts=timeouts
                )
            else:
                folder = chroma_path or f"{db_path}.chroma"
                vectors = ChromaVectorStore.embedded(folder, retry=retry, timeouts=timeouts)
        except BaseException:
            database.close()
            raise
        log = SqliteSagaLog(database, clock, lease, lease_owner_id())
        return cls(
            database=database,
            log=log,
            vectors=vectors,
            clock=clock,
            lease=lease,
            limits=limits or Limits(),
            definitions=DEFINITIONS,
        )

    # -- configuration ----------------------------------------------------------------

    def track(
        self,
        table: str,
        *,
        collection: str | None = None,
        key: str = "id",
        vector_id_column: str = "vector_id",
        dimension: int | None = None,
        migrate: bool = False,
    ) -> TableSpec:
        """Declare that rows of ``table`` have vectors in ``collection``; persisted.

        The same configuration again is a no-op; a different one is refused unless
        ``migrate=True``. ``dimension`` is learnt from the first write when omitted.
        """
        check.identifier(table, "table")
        check.identifier(key, "key")
        check.identifier(vector_id_column, "vector_id_column")
        check.collection_name(collection or table)
        if dimension is not None and (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= self.limits.max_dimension
        ):
            raise ValidationError(
                f"must be an int from 1 to {self.limits.max_dimension}", field="dimension"
            )
        columns = self._read_columns(table).names
        for field, name in (("key", key), ("vector_id_column", vector_id_column)):
            if name not in columns:
                raise ValidationError(f"{table!r} has no column {name!r}", field=field)
        if key == vector_id_column:
            raise ValidationError("must differ from the key column", field="vector_id_column")
        wanted = TableSpec(
            table=table,
            collection=collection or table,
            key=key,
            vector_id_column=vector_id_column,
            dimension=dimension,
        )
        self._refuse_conflicting_tracking(wanted, migrate=migrate)
        if wanted.dimension is None:
            wanted = _with_dimension(wanted, self.vectors.dimension(wanted.collection))
        spec = self.log.save_tracked(wanted, migrate=migrate)
        with self._lock:
            self._specs[table] = spec
        return spec

    def _refuse_conflicting_tracking(self, wanted: TableSpec, *, migrate: bool) -> None:
        """Checks that need no Chroma call, made before any (a refused track() must not
        create a collection): the table's real spelling, a collection already used by
        another table (reconcile would take its vectors for orphans), a changed
        configuration without ``migrate``."""
        with self.database.read() as conn:
            real = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (wanted.table,),
            ).fetchone()
        if real is not None and real[0] != wanted.table:
            raise ValidationError(f"the table is spelt {real[0]!r}", field="table")
        for other in self.log.all_tracked():
            if other.table != wanted.table and other.collection == wanted.collection:
                raise ValidationError(
                    f"collection {wanted.collection!r} already holds table {other.table!r}",
                    field="collection",
                )
            if (
                other.table == wanted.table
                and not migrate
                and (
                    (other.collection, other.key, other.vector_id_column)
                    != (wanted.collection, wanted.key, wanted.vector_id_column)
                )
            ):
                raise ConfigurationError(
                    f"table {wanted.table!r} is tracked as {other}; pass migrate=True to change",
                    field="table",
                )

    def register(self, definition: SagaDefinition) -> None:
        """Make a custom saga definition known (recovery finds it by name)."""
        self.definitions[definition.name] = definition

    def spec(self, table: object) -> TableSpec:
        """The tracked configuration of ``table`` (refused if it is not tracked)."""
        name = check.identifier(table, "table")
        with self._lock:
            known = self._specs.get(name)
        if known is not None and known.dimension is not None:
            return known
        stored = self.log.tracked(name)
        if stored is None:
            raise ConfigurationError(f"{name!r} is not tracked: call track() first", field="table")
        with self._lock:
            self._specs[name] = stored
        return stored

    def _read_columns(self, table: str) -> check.TableShape:
        with self.database.read() as conn:
            rows = conn.execute(
                'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) '
                "ORDER BY cid",
                (table,),
            ).fetchall()
        if not rows:
            raise ValidationError(f"no table {table!r} in the database", field="table")
        shape = check.TableShape.from_pragma([tuple(r) for r in rows])
        with self._lock:
            self._columns[table] = shape
        return shape

    def _shape_of(self, table: str) -> check.TableShape:
        with self._lock:
            cached = self._columns.get(table)
        return cached if cached is not None else self._read_columns(table)

    # -- writes -----------------------------------------------------------------------

    def create(
        self,
        table: str,
        row: Mapping[str, Any],
        *,
        embedding: Sequence[float],
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SagaResult:
        """Insert ``row`` and upsert its vector, as one saga. Returns once ``synced``."""
        spec = self.spec(table)
        item = self._create_item(spec, row, embedding, document, metadata, None)
        return self._run("create", spec, [item])

    def create_many(self, table: str, items: Sequence[Mapping[str, Any]]) -> SagaResult:
        """Insert many rows with their vectors as one saga (all or nothing).

        Each item is ``{"row": {...}, "embedding": [...], "document": ..., "metadata": ...}``.
        """
        spec = self.spec(table)
        check.batch_size(items, self.limits)
        built = []
        for index, entry in enumerate(items):
            data = _entry(entry, index, {"row", "embedding", "document", "metadata"})
            if "row" not in data or "embedding" not in data:
                raise ValidationError("needs 'row' and 'embedding'", field="item", index=index)
            built.append(
                self._create_item(
                    spec,
                    data["row"],
                    data["embedding"],
                    data.get("document"),
                    data.get("metadata"),
                    index,
                )
            )
        check.unique_keys([item.key for item in built], spec.key)
        return self._run("create_many", spec, built)

    def update(
        self,
        table: str,
        key: Key,
        changes: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SagaResult:
        """Change a row and its vector as one saga; omitted vector fields are kept."""
        spec = self.spec(table)
        changes = {} if changes is None else changes
        item = self._update_item(spec, key, changes, embedding, document, metadata, None)
        return self._run("update", spec, [item])

    def update_many(self, table: str, items: Sequence[Mapping[str, Any]]) -> SagaResult:
        """Update many rows as one saga: ``{"key": k, "changes": {...}, "embedding": ...}``."""
        spec = self.spec(table)
        check.batch_size(items, self.limits)
        built = []
        fields = {"key", "changes", "embedding", "document", "metadata"}
        for index, entry in enumerate(items):
            data = _entry(entry, index, fields)
            if "key" not in data:
                raise ValidationError("needs 'key'", field="item", index=index)
            built.append(
                self._update_item(
                    spec,
                    data["key"],
                    {} if data.get("changes") is None else data["changes"],
                    data.get("embedding"),
                    data.get("document"),
                    data.get("metadata"),
                    index,
                )
            )
        check.unique_keys([item.key for item in built], spec.key)
        return self._run("update_many", spec, built)

    def delete(self, table: str, key: Key) -> SagaResult:
        """Delete a row and its vector as one saga."""
        spec = self.spec(table)
        return self._run("delete", spec, [Item(key=check.key(key, "key", self.limits))])

    def delete_many(self, table: str, keys: Sequence[Key]) -> SagaResult:
        """Delete many rows and their vectors as one saga."""
        spec = self.spec(table)
        check.batch_size(keys, self.limits, field="keys")
        built = [Item(key=check.key(k, "key", self.limits, i)) for i, k in enumerate(keys)]
        check.unique_keys([item.key for item in built], spec.key)
        return self._run("delete_many", spec, built)

    def _create_item(
        self,
        spec: TableSpec,
        row: Any,
        embedding: Any,
        document: Any,
        metadata: Any,
        index: int | None,
    ) -> Item:
        shape = self._shape_of(spec.table)
        if isinstance(row, Mapping) and spec.key in row:
            # Checked before row_values, which would store a bool key as 0/1.
            check.key(row[spec.key], f"row.{spec.key}", self.limits, index)
        values = check.row_values(
            row, shape.names, field="row", protected=(spec.vector_id_column,), index=index
        )
        if spec.key not in values:
            raise ValidationError(
                "the key column is required", field=f"row.{spec.key}", index=index
            )
        key = check.key(values.pop(spec.key), f"row.{spec.key}", self.limits, index)
        check.required_columns(values, shape.required, field="row", index=index, partial=False)
        check.key_affinity(key, shape, spec.key, field=f"row.{spec.key}", index=index)
        return Item(
            key=key,
            row=values,
            embedding=check.embedding(embedding, spec.dimension, self.limits, index),
            document=check.document(document, self.limits, index),
            metadata=check.metadata(metadata, self.limits, index),
        )

    def _update_item(
        self,
        spec: TableSpec,
        key: Any,
        changes: Any,
        embedding: Any,
        document: Any,
        metadata: Any,
        index: int | None,
    ) -> Item:
        shape = self._shape_of(spec.table)
        values = check.row_values(
            changes,
            shape.names,
            field="changes",
            protected=(spec.vector_id_column, spec.key),
            index=index,
        )
        check.required_columns(values, shape.required, field="changes", index=index, partial=True)
        checked_key = check.key(key, "key", self.limits, index)
        check.key_affinity(checked_key, shape, spec.key, field="key", index=index)
        return Item(
            key=checked_key,
            row=values,
            embedding=None
            if embedding is None
            else check.embedding(embedding, spec.dimension, self.limits, index),
            document=check.document(document, self.limits, index),
            metadata=check.metadata(metadata, self.limits, index),
        )

    def _run(self, name: str, spec: TableSpec, items: list[Item]) -> SagaResult:
        """Begin, drive, and turn the outcome into a result or a loud error."""
        self._ensure_open()
        definition = self.definitions[name]
        op = name.removesuffix("_many")
        if spec.dimension is None and items[0].embedding is not None:
            _same_dimension(items, len(items[0].embedding))
        saga, ctx = self.engine.begin(definition, spec, op, items)
        settled = self.engine.drive(definition, saga, ctx)
        if settled.outcome is Outcome.STUCK:
            self._let_go(settled.saga)
        if settled.outcome is Outcome.SYNCED and spec.dimension is None and ctx.items:
            self._learn_dimension(spec, ctx.items[0].embedding)
        return _answer(settled, tuple(ctx.vector_id(item) for item in items))

    def _let_go(self, saga: SagaRecord) -> None:
        """Release a saga this call could not settle, so that `recover` (this runner's
        too) may take it at once instead of waiting for the lease to expire."""
        try:
            self.log.release(saga)
        except SagaError as exc:  # the error about to be raised says more
            logger.bind(saga_id=saga.saga_id).warning("could not release: {}", exc)

    def _learn_dimension(self, spec: TableSpec, embedding: Sequence[float] | None) -> None:
        """Record the dimension once a first write has succeeded (Chroma now holds it)."""
        if embedding is None:
            return
        with self.database.write() as conn:
            self.log.set_dimension(conn, spec.table, len(embedding))
        with self._lock:
            self._specs.pop(spec.table, None)

    # -- operations -------------------------------------------------------------------

    def recover(
        self,
        older_than: dt.timedelta = dt.timedelta(0),
        *,
        policy: str = "resume",
        dry_run: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        progress: Callable[[], None] | None = None,
    ) -> RecoveryReport:
        """Settle every saga a crash or failure left in flight (see ``saga._recovery``).

        Only sagas started more than ``older_than`` ago whose owner is gone (lease
        free or expired, or a dead process on this host) are touched.
        ``policy="compensate"`` undoes sagas still before their pivot instead of
        resuming them. ``dry_run`` reports what would happen and changes nothing.
        """
        from saga._recovery import recover  # noqa: PLC0415

        self._ensure_open()
        return recover(
            self,
            older_than=older_than,
            policy=policy,  # type: ignore[arg-type]  # validated inside
            dry_run=dry_run,
            max_attempts=max_attempts,
            progress=progress,
        )

    def reconcile(
        self,
        *,
        fix: bool = False,
        stuck_after: dt.timedelta = dt.timedelta(minutes=5),
        page_size: int = 1000,
        rebuild: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ReconcileReport:
        """Compare both stores and report orphans, missing vectors, drift, stuck sagas.

        ``fix=True`` repairs them (orphans deleted, stuck sagas recovered, drifted and
        missing vectors rewritten through update sagas). A missing vector's embedding
        is gone: pass ``rebuild(table, row) -> {"embedding", "document", "metadata"}``
        to re-create it; without it, missing vectors are reported as unfixable.
        """
        from saga._reconcile import reconcile  # noqa: PLC0415

        self._ensure_open()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValidationError("must be a positive int", field="page_size")
        return reconcile(
            self,
            fix=fix,
            stuck_after=stuck_after,
            page_size=page_size,
            rebuild=rebuild,
            progress=progress,
        )

    def detect_orphaned_records(self) -> ReconcileReport:
        """Alias: ``reconcile(fix=False)``."""
        return self.reconcile(fix=False)

    def recover_orphaned_vectors(self) -> ReconcileReport:
        """Alias: ``reconcile(fix=True)``."""
        return self.reconcile(fix=True)

    # -- lifecycle --------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise SagaError("the runner is closed")

    def close(self) -> None:
        """Close the SQLite connections and release the Chroma folder."""
        if self._closed:
            return
        self._closed = True
        self.vectors.close()
        self.database.close()

    def __enter__(self) -> SagaRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------

    def tracked(self) -> list[TableSpec]:
        """Every tracked table's configuration, by table name."""
        self._ensure_open()
        return self.log.all_tracked()

    def in_flight(self) -> list[SagaRecord]:
        """Every saga not yet settled (``synced`` or ``failed``), oldest first."""
        self._ensure_open()
        return self.log.in_flight()

    def definition(self, name: str) -> SagaDefinition:
        """The saga definition registered under ``name`` (built-in or ``register``ed)."""
        found = self.definitions.get(name)
        if found is None:
            raise ConfigurationError(f"no saga definition {name!r}", field="definition")
        return found

    def row(self, table: str, key: Key) -> dict[str, Any] | None:
        """The committed row of ``table`` under ``key``, or None."""
        from saga._validation import quote  # noqa: PLC0415

        spec = self.spec(table)
        checked = check.key(key, "key", self.limits)
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT * FROM {quote(spec.table)} WHERE {quote(spec.key)} = ?", (checked,)
            ).fetchone()
        return None if found is None else dict(found)

    def vectors_of(
        self, table: str, keys: Sequence[Key], *, embeddings: bool = False
    ) -> dict[Key, VectorRecord]:
        """The vectors Chroma holds for these keys of ``table`` (absent ones left out)."""
        spec = self.spec(table)
        checked = [check.key(k, "keys", self.limits, i) for i, k in enumerate(keys)]
        by_id = {spec.vector_id(k): k for k in checked}
        found = self.vectors.get(spec.collection, list(by_id), embeddings=embeddings)
        return {by_id[vid]: record for vid, record in found.items()}

    def count(self, table: str) -> TableCounts:
        """Rows in ``table`` and vectors in its collection."""
        from saga._validation import quote  # noqa: PLC0415

        spec = self.spec(table)
        with self.database.read() as conn:
            rows = conn.execute(f"SELECT COUNT(*) FROM {quote(spec.table)}").fetchone()[0]
        counter = getattr(self.vectors, "count", None)
        if counter is not None:
            vectors = int(counter(spec.collection))
        else:
            vectors = sum(len(p) for p in self.vectors.iter_records(spec.collection, 1000))
        return TableCounts(rows=int(rows), vectors=vectors)

    def query(
        self,
        table: str,
        *,
        embedding: Sequence[float],
        n_results: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> list[QueryResult]:
        """Nearest rows to ``embedding``: only rows whose row is committed, joined.

        A vector whose row does not exist (an in-flight create, an orphan) is never
        returned; an in-flight update returns the committed row. Ordered by distance,
        ties by key.
        """
        from saga._query import run_query  # noqa: PLC0415

        spec = self.spec(table)
        vector = check.embedding(embedding, spec.dimension, self.limits)
        if isinstance(n_results, bool) or not isinstance(n_results, int) or n_results < 1:
            raise ValidationError("must be a positive int", field="n_results")
        return run_query(self, spec, vector, n_results, where)


def _entry(entry: object, index: int, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValidationError("must be a dict", field="item", index=index)
    unknown = set(entry) - allowed
    if unknown:
        raise ValidationError(
            f"unknown fields {sorted(map(str, unknown))}", field="item", index=index
        )
    return dict(entry)


def _same_dimension(items: Sequence[Item], dimension: int) -> None:
    for index, item in enumerate(items):
        if item.embedding is not None and len(item.embedding) != dimension:
            raise ValidationError(
                f"has {len(item.embedding)} dimensions, item 0 has {dimension}",
                field="embedding",
                index=index,
            )


def _with_dimension(spec: TableSpec, dimension: int | None) -> TableSpec:
    return TableSpec(
        table=spec.table,
        collection=spec.collection,
        key=spec.key,
        vector_id_column=spec.vector_id_column,
        dimension=dimension,
    )


def _answer(settled: Settled, vector_ids: tuple[str, ...]) -> SagaResult:
    saga = settled.saga
    if settled.outcome is Outcome.SYNCED:
        return SagaResult(saga_id=saga.saga_id, state=saga.state, vector_ids=vector_ids)
    error = settled.error
    if settled.outcome is Outcome.FAILED:
        raise DataIntegrityError(
            f"dual write failed and was compensated: {_text(error)}",
            saga_id=saga.saga_id,
            cause=error,
        ) from error
    where = "compensating" if settled.compensating else saga.state
    raise CompensationError(
        f"dual write failed and could not be settled: {_text(error)}; the saga is persisted in "
        f"{where!r}: run `saga recover`",
        saga_id=saga.saga_id,
        cause=error,
    ) from error


def _text(error: SagaError | None) -> str:
    return "unknown error" if error is None else error.message


def _is_http(client: Any) -> bool:
    server = getattr(client, "_server", None)
    return type(server).__name__ == "FastAPI"
