"""The Chroma adapter: the one place that talks to ``chromadb`` (``saga._ports.VectorStore``).

- Collections are opened with ``embedding_function=None`` and every write carries its
  embeddings, so Chroma's default embedding function (a model download) never runs.
- **Ambiguous writes**: a write that still fails with a timeout or a reset connection may
  or may not have been applied (``maybe_applied``). ``upsert``/``delete`` then read the
  ids back: if the write took effect (every id present with the expected document and
  metadata, ``saga_id`` included; or every id absent) they return normally; if not, the
  error is raised (the saga compensates, idempotently); if the read-back fails too,
  ``VectorStoreTimeout``. So one write, read-back included, takes at most twice the
  retried-call bound. An error *answer* (5xx, 429) or a refused connection is not read
  back: nothing or not all was done, and compensation (idempotent) covers whatever was.
- **The batch size** is learnt when a server is opened: under a fault, a saga that still
  had to ask could split neither its batch nor its compensation.
- **Nothing happens on import**: the failpoint error kinds (``raise:chroma-unavailable``,
  ``raise:chroma-timeout``, ``raise:chroma-invalid``) are registered, and chromadb's
  telemetry logger quietened, when the first store is built (``_prepare``).
- **Known limit**: a request held up in the network longer than the deadline (not lost,
  late) can still land after the saga settled; no client-side bound prevents that, as
  Chroma has no conditional writes. ``saga reconcile`` reports what it leaves behind.

The rest is in private modules, each with its reasons: ``stores._chroma_errors`` (the
error seam), ``stores._chroma_bounds`` (timeouts, deadline, retries) and
``stores._chroma_lock`` (one process per embedded folder).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
from chromadb.api.fastapi import FastAPI
from chromadb.config import Settings

from saga import failpoints
from saga._config import ChromaTimeouts, RetryPolicy
from saga._errors import VectorStoreError, VectorStoreTimeout, VectorStoreUnavailable
from saga._ports import QueryHit, VectorRecord
from stores._chroma_bounds import Budget, bound_session, retrying, translated, within
from stores._chroma_errors import maybe_applied, translate
from stores._chroma_lock import LOCK_NAME, EmbeddedLock
from stores.sqlite import make_private_folder

__all__ = ["LOCK_NAME", "ChromaVectorStore", "maybe_applied", "translate"]

T = TypeVar("T")


@functools.cache  # once per process: both steps are global and idempotent
def _prepare() -> None:
    """Register the Chroma failpoint error kinds and quieten chromadb's telemetry logger.

    Called when a store (or its client) is built, not on import: importing the adapter
    must not change the failpoint table or another library's logging.
    """
    failpoints.register_error("chroma-unavailable", lambda n: VectorStoreUnavailable(f"{n}"))
    failpoints.register_error("chroma-timeout", lambda n: VectorStoreTimeout(f"{n}"))
    failpoints.register_error("chroma-invalid", lambda n: VectorStoreError(f"{n}"))
    logging.getLogger("chromadb.telemetry.product.posthog").setLevel(logging.CRITICAL)


class ChromaVectorStore:
    """``saga._ports.VectorStore`` on a chromadb client (embedded or HTTP).

    ``read_backs`` counts how ambiguous writes were settled, by ``"<write>:<outcome>"``
    (``"upsert:applied"``, ``"delete:not_applied"``, ``"upsert:unknown"``).
    ``session_bounded`` says whether httpx timeouts could be set on an HTTP client.
    Build one with ``embedded``, ``http`` or ``from_client``; the constructor trusts
    its caller to say whether ``client`` is ``remote``.
    """

    def __init__(
        self,
        client: Any,
        *,
        remote: bool,
        retry: RetryPolicy,
        timeouts: ChromaTimeouts,
        locked_folder: Path | None = None,
        owned: bool = False,
    ) -> None:
        _prepare()
        self.client = client
        self.remote = remote
        self.retry = retry
        self.timeouts = timeouts
        self.read_backs: Counter[str] = Counter()
        self._locked_folder = locked_folder
        self._owned = owned  # we built the client, so we close it
        self._collections: dict[str, Any] = {}
        self._max_batch: int | None = None
        self._stats_lock = threading.Lock()
        self.session_bounded = remote and bound_session(client, timeouts) is not None
        if remote:
            # Learnt while opening, where failing is expected: a saga that cannot learn
            # it can neither split its batch nor, under the same fault, compensate it.
            self.max_batch_size()

    @classmethod
    def embedded(
        cls, path: str | os.PathLike[str], *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """A ``PersistentClient`` on ``path`` (created 0700), locked against other processes."""
        _prepare()  # before the client: its telemetry logger is quiet from the start
        folder = Path(path)
        make_private_folder(folder)
        EmbeddedLock.acquire(folder)
        try:
            client = chromadb.PersistentClient(
                path=str(folder), settings=Settings(anonymized_telemetry=False)
            )
        except Exception as exc:
            EmbeddedLock.release(folder)
            raise translate(exc, remote=False) from exc
        return cls(
            client, remote=False, retry=retry, timeouts=timeouts, locked_folder=folder, owned=True
        )

    @classmethod
    def http(
        cls, host: str, port: int, *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """An ``HttpClient`` for a ``chroma run`` server, connected within the bounds.

        Building the client already talks to the server (identity, tenant, database),
        on a session with no timeout yet: it runs under the whole-call deadline, and a
        thread abandoned there waits on its socket until the peer closes it.
        """

        _prepare()  # before the client: its telemetry logger is quiet from the start

        def connect() -> Any:
            return chromadb.HttpClient(
                host=host, port=port, settings=Settings(anonymized_telemetry=False)
            )

        budget = Budget(max(retry.timeout, timeouts.call))
        client = retrying(
            retry,
            lambda: within(
                budget.slice(timeouts.call, "connect"),
                "connect",
                lambda: translated(connect, remote=True),
            ),
        )
        try:
            return cls(client, remote=True, retry=retry, timeouts=timeouts, owned=True)
        except BaseException:
            _close_client(client)
            raise

    @classmethod
    def from_client(
        cls, client: Any, *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """A store on a client the caller built and keeps (``close`` leaves it open):
        bounded as a server's if it talks HTTP (``chromadb.HttpClient``), else embedded."""
        return cls(client, remote=_talks_http(client), retry=retry, timeouts=timeouts)

    @property
    def call_bound(self) -> float | None:
        """The most one retried call may take, in seconds; a write followed by its
        read-back takes up to twice that. ``None`` for the embedded client (in-process,
        not cut; see ``stores._chroma_bounds``)."""
        return max(self.retry.timeout, self.timeouts.call) if self.remote else None

    # -- the seam ---------------------------------------------------------------------

    def _call(self, point: str, action: Callable[[], T]) -> T:
        """One Chroma call: failpoints, the deadline, translation, retries.

        Returns or raises within ``max(retry.timeout, timeouts.call)`` seconds (remote).
        """
        budget = Budget(self.call_bound or 0.0)

        def attempt() -> T:
            failpoints.hit(f"chroma.{point}")
            if self.remote:
                seconds = budget.slice(self.timeouts.call, point)
                result = within(seconds, point, lambda: translated(action, remote=True))
            else:
                result = translated(action, remote=False)
            failpoints.hit(f"chroma.{point}.after")
            return result

        return retrying(self.retry, attempt)

    def _write(
        self, point: str, action: Callable[[], object], took_effect: Callable[[], bool]
    ) -> None:
        """A write; if its outcome is ambiguous, settled by reading it back."""
        try:
            self._call(point, action)
        except VectorStoreError as error:
            if not maybe_applied(error) or not self._read_back(point, took_effect, error):
                raise

    def _read_back(
        self, point: str, took_effect: Callable[[], bool], error: VectorStoreError
    ) -> bool:
        """Whether the ambiguous write ``point`` took effect; raises if nobody can tell."""
        try:
            applied = self._call("readback", took_effect)
        except VectorStoreError as failed:
            self._count(f"{point}:unknown")
            raise VectorStoreTimeout(
                f"Chroma: {point} may or may not have been applied ({error.message}); "
                f"reading it back failed too: {failed.message}"
            ) from error
        self._count(f"{point}:{'applied' if applied else 'not_applied'}")
        return applied

    def _count(self, outcome: str) -> None:
        with self._stats_lock:
            self.read_backs[outcome] += 1

    def _collection(self, name: str) -> Any:
        found = self._collections.get(name)
        if found is None:
            found = self._call(
                "collection",
                lambda: self.client.get_or_create_collection(name, embedding_function=None),
            )
            self._collections[name] = found
        return found

    # -- the port ---------------------------------------------------------------------

    def max_batch_size(self) -> int:
        if self._max_batch is None:
            self._max_batch = int(self._call("max_batch", self.client.get_max_batch_size))
        return self._max_batch

    def upsert(self, collection: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        target = self._collection(collection)
        ids = [r.id for r in records]
        self._write(
            "upsert",
            lambda: target.upsert(
                ids=ids,
                embeddings=[list(r.embedding or ()) for r in records],
                documents=[r.document for r in records],
                metadatas=[dict(r.metadata) if r.metadata else None for r in records],
            ),
            lambda: _all_stored(target.get(ids=ids, include=["documents", "metadatas"]), records),
        )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        target = self._collection(collection)
        wanted = list(ids)
        self._write(
            "delete",
            lambda: target.delete(ids=wanted),
            lambda: not target.get(ids=wanted, include=[])["ids"],
        )

    def get(
        self, collection: str, ids: Sequence[str], *, embeddings: bool = False
    ) -> dict[str, VectorRecord]:
        if not ids:
            return {}
        target = self._collection(collection)
        include = ["documents", "metadatas", *(["embeddings"] if embeddings else [])]
        found = self._call("get", lambda: target.get(ids=list(ids), include=include))
        return _records(found, embeddings=embeddings)

    def query(
        self, collection: str, embedding: Sequence[float], n_results: int, where: Any = None
    ) -> list[QueryHit]:
        target = self._collection(collection)
        found = self._call(
            "query",
            lambda: target.query(
                query_embeddings=[list(embedding)],
                n_results=n_results,
                where=where,
                include=["distances"],
            ),
        )
        ids = found["ids"][0] if found["ids"] else []
        distances = found["distances"][0] if found.get("distances") else []
        return [QueryHit(id=i, distance=float(d)) for i, d in zip(ids, distances, strict=True)]

    def iter_records(self, collection: str, page_size: int) -> Iterator[list[VectorRecord]]:
        """Every vector of a collection, a page at a time (documents and metadata)."""
        target = self._collection(collection)
        offset = 0
        while True:

            def read(start: int = offset) -> Any:  # bound now: the loop moves offset on
                return target.get(limit=page_size, offset=start, include=["documents", "metadatas"])

            page = _records(self._call("page", read), embeddings=False)
            if not page:
                return
            yield list(page.values())
            offset += len(page)

    def count(self, collection: str) -> int:
        target = self._collection(collection)
        return int(self._call("count", target.count))

    def dimension(self, collection: str) -> int | None:
        """The collection's embedding dimension, read from one stored vector."""
        target = self._collection(collection)
        found = self._call("peek", lambda: target.get(limit=1, include=["embeddings"]))
        embeddings = found.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def close(self) -> None:
        """Close the client if this store built it (its files, sockets and threads go
        with it; chromadb shares one per folder or server and counts its users), then
        let another process have the embedded folder."""
        self._collections.clear()
        if self._owned:
            self._owned = False
            _close_client(self.client)
        if self._locked_folder is not None:
            EmbeddedLock.release(self._locked_folder)
            self._locked_folder = None


def _talks_http(client: Any) -> bool:
    """Whether ``client`` reaches Chroma over HTTP: an ``HttpClient`` keeps chromadb's
    HTTP server API, ``FastAPI``, in ``client._server`` (chromadb 1.5)."""
    return isinstance(getattr(client, "_server", None), FastAPI)


def _close_client(client: Any) -> None:
    """Close a client we built, its httpx session included (chromadb's close() leaves
    it open); closing only drops local resources, so a failure there is ignored."""
    with contextlib.suppress(Exception):
        client.close()
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.close()


def _all_stored(found: Any, records: Sequence[VectorRecord]) -> bool:
    """Whether Chroma holds every record as its upsert would leave it."""
    stored = _records(found, embeddings=False)
    return all(_upserted(stored.get(r.id), r) for r in records)


def _upserted(stored: VectorRecord | None, wanted: VectorRecord) -> bool:
    """Whether ``stored`` shows the upsert of ``wanted`` applied, by Chroma's rules: a
    ``None`` document keeps the stored one, metadata is merged and a ``None`` value
    removes its key. ``saga_id`` is in ``wanted``'s metadata, so a vector that another
    saga wrote does not count."""
    if stored is None:
        return False
    if wanted.document is not None and stored.document != wanted.document:
        return False
    have = dict(stored.metadata or {})
    for key, value in (wanted.metadata or {}).items():
        if value is None:
            if key in have:
                return False
        elif key not in have or not _same_value(have[key], value):
            return False
    return True


def _same_value(stored: object, wanted: object) -> bool:
    """Equal, or for floats equal as Chroma keeps them (about 16 significant digits).

    Loose floats cannot confuse two sagas: ``saga_id`` is compared exactly.
    """
    if isinstance(stored, float) and isinstance(wanted, float):
        return math.isclose(stored, wanted, rel_tol=1e-12, abs_tol=1e-300)
    return type(stored) is type(wanted) and stored == wanted


def _records(found: Any, *, embeddings: bool) -> dict[str, VectorRecord]:
    ids = list(found["ids"])
    documents = found.get("documents") or [None] * len(ids)
    metadatas = found.get("metadatas") or [None] * len(ids)
    vectors = found.get("embeddings") if embeddings else None
    records = {}
    for index, vector_id in enumerate(ids):
        embedding = None
        if vectors is not None:
            row = vectors[index]  # a numpy array: tolist() converts in C
            embedding = tuple(row.tolist() if hasattr(row, "tolist") else map(float, row))
        records[vector_id] = VectorRecord(
            id=vector_id,
            embedding=embedding,
            document=documents[index],
            metadata=metadatas[index],
        )
    return records
