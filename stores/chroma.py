"""The Chroma adapter: the one place that talks to ``chromadb`` (``saga._ports.VectorStore``).

- Collections are opened with ``embedding_function=None`` and every write carries its
  embeddings, so Chroma's default embedding function (a model download) never runs.
- **Ambiguous writes**: a write that still fails with a timeout or a reset connection may
  or may not have been applied (``maybe_applied``). ``upsert``/``delete`` then read the
  ids back: if the write took effect (every id present with the expected document and
  metadata, ``saga_id`` included, judged by Chroma's upsert rules in
  ``stores._chroma_records``; or every id absent) they return normally; if not, the
  error is raised (the saga compensates, idempotently); if the read-back fails too,
  ``VectorStoreTimeout``. So one write, read-back included, takes at most twice the
  retried-call bound. An error *answer* (5xx, 429) or a refused connection is not read
  back: nothing or not all was done, and compensation (idempotent) covers whatever was.
- **The batch size** is learnt when a server is opened: under a fault, a saga that still
  had to ask could split neither its batch nor its compensation.
- **Known limit**: a request held up in the network longer than the deadline (not lost,
  late) can still land after the saga settled; no client-side bound prevents that, as
  Chroma has no conditional writes. ``saga reconcile`` reports what it leaves behind.

The rest is in private modules, each with its reasons: ``stores._chroma_errors`` (the
error seam), ``stores._chroma_bounds`` (timeouts, deadline, retries),
``stores._chroma_clients`` (building, telling apart and closing clients; nothing runs on
import), ``stores._chroma_lock`` (one process per embedded folder) and
``stores._chroma_records`` (Chroma's answers as records).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from saga._config import ChromaTimeouts, RetryPolicy
from saga._errors import VectorStoreError, VectorStoreTimeout
from saga._ports import QueryHit, VectorRecord
from stores._chroma_bounds import bound_session, bounded_call
from stores._chroma_clients import close_client, connect_http, open_embedded, prepare, talks_http
from stores._chroma_errors import maybe_applied, translate
from stores._chroma_lock import LOCK_NAME, EmbeddedLock
from stores._chroma_records import all_stored, records_of

__all__ = ["LOCK_NAME", "ChromaVectorStore", "maybe_applied", "translate"]

T = TypeVar("T")


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
        prepare()
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
        folder = Path(path)
        client = open_embedded(folder)
        return cls(
            client, remote=False, retry=retry, timeouts=timeouts, locked_folder=folder, owned=True
        )

    @classmethod
    def http(
        cls, host: str, port: int, *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """An ``HttpClient`` for a ``chroma run`` server, connected within the bounds
        (``max(retry.timeout, timeouts.call)`` seconds; see ``stores._chroma_clients``)."""
        client = connect_http(host, port, retry=retry, timeouts=timeouts)
        try:
            return cls(client, remote=True, retry=retry, timeouts=timeouts, owned=True)
        except BaseException:
            close_client(client)
            raise

    @classmethod
    def from_client(
        cls, client: Any, *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """A store on a client the caller built and keeps (``close`` leaves it open):
        bounded as a server's if it talks HTTP (``chromadb.HttpClient``), else embedded."""
        return cls(client, remote=talks_http(client), retry=retry, timeouts=timeouts, owned=False)

    @property
    def call_bound(self) -> float | None:
        """The most one retried call may take, in seconds; a write followed by its
        read-back takes up to twice that. ``None`` for the embedded client (in-process,
        not cut; see ``stores._chroma_bounds``)."""
        return max(self.retry.timeout, self.timeouts.call) if self.remote else None

    @property
    def call_deadline(self) -> float | None:
        """``ChromaTimeouts.whole`` for a server; None for the embedded client."""
        return self.timeouts.whole if self.remote else None

    # -- the seam ---------------------------------------------------------------------

    def _call(self, point: str, action: Callable[[], T]) -> T:
        """One Chroma call: failpoints, the deadline, translation, retries.

        Returns or raises within ``max(retry.timeout, timeouts.call)`` seconds (remote).
        """
        return bounded_call(
            point, action, remote=self.remote, retry=self.retry, timeouts=self.timeouts
        )

    def _write(
        self, point: str, action: Callable[[], object], took_effect: Callable[[], bool]
    ) -> None:
        """A write; if its outcome is ambiguous, settled by reading it back."""
        try:
            self._call(point, action)
        except VectorStoreError as error:
            if not error.ambiguous or not self._read_back(point, took_effect, error):
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
            lambda: all_stored(
                target.get(ids=ids, include=["documents", "metadatas", "embeddings"]), records
            ),
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
        return records_of(found, embeddings=embeddings)

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

            page = records_of(self._call("page", read), embeddings=False)
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
            close_client(self.client)
        if self._locked_folder is not None:
            EmbeddedLock.release(self._locked_folder)
            self._locked_folder = None
