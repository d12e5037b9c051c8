"""``SagaRunner``: the public face of the library.

One runner may be shared by threads: each gets its own SQLite connection, SQLite's
write lock orders the writers of all threads and processes, and the in-flight check
that refuses a second saga on a key runs inside it. The Chroma client is shared. The
runner's parts (``saga._services.Services``) are private: recovery, reconcile and query
receive them, never the runner; ``open`` builds them through ``saga._compose``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from saga import _reads
from saga._background import BackgroundRecovery, checked_interval
from saga._clock import Clock, SystemClock
from saga._config import ChromaTimeouts, LeasePolicy, Limits, RetryPolicy, SqliteOptions
from saga._machine import SagaDefinition
from saga._ports import Key, SagaRecord, TableSpec, VectorRecord
from saga._rebuild import rebuild
from saga._reconcile import Rebuild, reconcile
from saga._recovery import DEFAULT_MAX_ATTEMPTS, Policy, recover
from saga._results import (
    QueryResult,
    RebuildReport,
    ReconcileReport,
    RecoveryReport,
    TableCounts,
)
from saga._services import Services, Stores
from saga._write_api import WriteMethods


class SagaRunner(WriteMethods):
    """Runs dual writes to one SQLite database and one Chroma as sagas.

    Build it with ``SagaRunner.open`` (or ``from_stores``). Use it as a context
    manager, or call ``close``.
    """

    def __init__(self, services: Services) -> None:  # private: see open, from_stores
        self._services = services
        self._closed = False
        self._background: BackgroundRecovery | None = None  # see open(recover_every=)

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
        recover_every: float | None = None,
    ) -> SagaRunner:
        """Open (``create``: and set up) the saga log in ``db_path`` and connect Chroma.

        Chroma is, in order: ``chroma_client`` (e.g. ``chromadb.HttpClient``, or a client
        this process already opened on the folder), a server at
        ``chroma_host``/``chroma_port``, or the embedded ``PersistentClient`` at
        ``chroma_path`` (default: ``<db_path>.chroma`` beside the database).

        ``recover_every=SECONDS`` runs recovery in a daemon thread: one pass at once (so
        the sagas a dead run left are settled moments after opening, without ``open``
        waiting for it), then one every SECONDS until ``close``. It takes only sagas
        whose owner is gone, never this runner's (see ``saga._background``).
        """
        from saga._compose import open_stores  # noqa: PLC0415 - the composition root

        every = checked_interval(recover_every)  # refused before anything is opened
        clock = clock or SystemClock()
        lease = lease or LeasePolicy()
        stores = open_stores(
            db_path,
            chroma_path=chroma_path,
            chroma_client=chroma_client,
            chroma_host=chroma_host,
            chroma_port=chroma_port,
            clock=clock,
            lease=lease,
            retry=retry or RetryPolicy(),
            timeouts=chroma_timeouts or ChromaTimeouts(),
            sqlite=sqlite or SqliteOptions(),
            create=create,
        )
        runner = cls.from_stores(stores, clock=clock, lease=lease, limits=limits)
        if every is not None:
            runner._background = BackgroundRecovery(runner._services, every).start()
        return runner

    @classmethod
    def from_stores(
        cls,
        stores: Stores,
        *,
        clock: Clock | None = None,
        lease: LeasePolicy | None = None,
        limits: Limits | None = None,
        definitions: Mapping[str, SagaDefinition] | None = None,
    ) -> SagaRunner:
        """A runner over stores built elsewhere (a test's fault proxy around a real store:
        ``SagaRunner.from_stores(attrs.evolve(runner.stores, vectors=proxy))``);
        ``definitions`` defaults to the built-in dual writes."""
        from saga._compose import builtin_definitions  # noqa: PLC0415

        chosen = builtin_definitions() if definitions is None else definitions
        return cls(
            Services(
                log=stores.log,
                catalog=stores.catalog,
                vectors=stores.vectors,
                clock=clock or SystemClock(),
                lease=lease or LeasePolicy(),
                limits=limits or Limits(),
                definitions=dict(chosen),
            )
        )

    @property
    def stores(self) -> Stores:
        """The stores this runner writes (to wrap one, see ``from_stores``)."""
        s = self._services
        return Stores(log=s.log, catalog=s.catalog, vectors=s.vectors)

    clock = property(lambda self: self._services.clock, doc="The runner's clock.")
    lease = property(lambda self: self._services.lease, doc="Its lease policy.")

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
        keep_vectors: bool = True,
        link_keys: bool | None = None,
    ) -> TableSpec:
        """Declare that rows of ``table`` have vectors in ``collection``; persisted.

        The same configuration again is a no-op; a different one is refused unless
        ``migrate=True``. ``dimension`` is learnt from the first write when omitted.
        ``keep_vectors=False``: the log keeps no copy of the vectors (less disk; no
        rebuild, and update/delete read their before-images from Chroma).
        ``link_keys=True``: each vector also carries ``sqlite_table`` and
        ``sqlite_record_id`` (None: as recorded, none for a new table).
        """
        self._ensure_open()
        return self._services.tables.track(
            table,
            collection=collection,
            key=key,
            vector_id_column=vector_id_column,
            dimension=dimension,
            migrate=migrate,
            keep_vectors=keep_vectors,
            link_keys=link_keys,
        )

    def register(self, definition: SagaDefinition) -> None:
        """Make a custom saga definition known (recovery finds it by name)."""
        self._services.definitions[definition.name] = definition

    def tracked(self) -> list[TableSpec]:
        """Every tracked table's configuration, by table name."""
        self._ensure_open()
        return self._services.tables.all()

    # -- operations -------------------------------------------------------------------

    def recover(
        self,
        older_than: dt.timedelta = dt.timedelta(0),
        *,
        policy: Policy = "resume",
        dry_run: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        progress: Callable[[], None] | None = None,
    ) -> RecoveryReport:
        """Settle every saga a crash or failure left in flight (see ``saga._recovery``):
        only those started over ``older_than`` ago whose owner is gone (lease free or
        expired, or a dead process on this host). ``policy="compensate"`` undoes those
        still before their pivot; ``dry_run`` changes nothing."""
        self._ensure_open()
        return recover(
            self._services,
            older_than=older_than,
            policy=policy,
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
        rebuild: Rebuild | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ReconcileReport:
        """Compare both stores: orphans, missing vectors, drift, sagas in flight or stuck.

        ``fix=True`` repairs them: sagas of dead owners recovered, orphans deleted,
        drifted and missing vectors written back from the log's copy. One the log does
        not keep needs ``rebuild(table, row) -> {"embedding", "document", "metadata"}``,
        else it is reported unfixable."""
        self._ensure_open()
        return reconcile(
            self._services,
            fix=fix,
            stuck_after=stuck_after,
            page_size=page_size,
            rebuild=rebuild,
            progress=progress,
        )

    def rebuild(
        self,
        table: str | None = None,
        *,
        page_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RebuildReport:
        """Re-create the collections (or ``table``'s) from the saga log (``saga._rebuild``);
        ``page_size``: vectors per request (default: the store's largest batch)."""
        self._ensure_open()
        return rebuild(self._services, table=table, page_size=page_size, progress=progress)

    def detect_orphaned_records(self) -> ReconcileReport:  # an alias
        return self.reconcile(fix=False)

    def recover_orphaned_vectors(self) -> ReconcileReport:  # an alias
        return self.reconcile(fix=True)

    # -- reads ------------------------------------------------------------------------

    def query(
        self,
        table: str,
        *,
        embedding: Sequence[float],
        n_results: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> list[QueryResult]:
        """Nearest rows to ``embedding``, joined: only committed rows (never an orphan's
        or an in-flight create's vector; an in-flight update's committed row). Ordered by
        distance, ties by key."""
        return _reads.query(self._services, table, embedding, n_results, where)

    def in_flight(self) -> list[SagaRecord]:
        """Every saga not yet settled (``synced`` or ``failed``), oldest first."""
        self._ensure_open()
        return self._services.log.in_flight()

    def row(self, table: str, key: Key) -> dict[str, Any] | None:
        """The committed row of ``table`` under ``key``, or None."""
        return _reads.row(self._services, table, key)

    def vectors_of(
        self, table: str, keys: Sequence[Key], *, embeddings: bool = False
    ) -> dict[Key, VectorRecord]:
        """The vectors Chroma holds for these keys of ``table`` (absent ones left out)."""
        return _reads.vectors_of(self._services, table, keys, embeddings=embeddings)

    def count(self, table: str) -> TableCounts:
        """Rows in ``table`` and vectors in its collection."""
        return _reads.count(self._services, table)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the SQLite connections and release the Chroma folder; first stop the
        background recovery (``recover_every``), waiting a bounded time for a running
        pass (``saga._background.CLOSE_WAIT``; past it, the pass closes them when done)."""
        if self._closed:
            return
        self._closed = True
        if self._background is None:
            self._close_stores()
        else:
            self._background.stop(self._close_stores)

    def _close_stores(self) -> None:
        self._services.vectors.close()
        self._services.log.close()

    def __enter__(self) -> SagaRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
