"""The Chroma adapter: the one place that talks to ``chromadb`` and translates its errors.

- Collections are opened with ``embedding_function=None`` and every write carries its
  embeddings, so Chroma's default embedding function (a model download) never runs.
- Server mode: ``HttpClient`` is built by chromadb with an httpx session whose timeout
  is ``None``; we set connect/read/write/pool timeouts on that session (httpx's own
  public ``Client.timeout`` setter) so a stalled server fails the call instead of
  hanging it, and transient failures are retried with ``stamina`` within
  ``RetryPolicy.timeout``.
- Errors: timeouts -> ``VectorStoreTimeout`` (the write may have happened),
  connection refused/reset, 5xx, 429 -> ``VectorStoreUnavailable``, the rest ->
  ``VectorStoreError`` (permanent). Nothing from chromadb or httpx leaks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
import stamina
from chromadb.config import Settings
from chromadb.errors import ChromaError

from saga import failpoints
from saga._config import ChromaTimeouts, RetryPolicy
from saga._errors import (
    ConcurrentClientError,
    VectorStoreError,
    VectorStoreTimeout,
    VectorStoreUnavailable,
)
from saga._ports import QueryHit, VectorRecord

T = TypeVar("T")
LOCK_NAME = ".saga-embedded.lock"

failpoints.register_error("chroma-unavailable", lambda n: VectorStoreUnavailable(f"{n}"))
failpoints.register_error("chroma-timeout", lambda n: VectorStoreTimeout(f"{n}"))
failpoints.register_error("chroma-invalid", lambda n: VectorStoreError(f"{n}"))


def translate(exc: BaseException, *, remote: bool) -> VectorStoreError:
    """Map anything chromadb or httpx raised to the project's vector store errors."""
    if isinstance(exc, VectorStoreError):
        return exc
    text = f"Chroma: {type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return VectorStoreTimeout(text)
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return VectorStoreUnavailable(text)
    if isinstance(exc, httpx.HTTPStatusError):
        return _by_status(exc.response.status_code, text)
    if isinstance(exc, ChromaError):
        return _by_status(exc.code(), text)
    if remote and type(exc) is Exception:
        # chromadb raises a bare Exception for an HTTP error without a Chroma body
        # (a proxy's 502, a restarting server): retrying may help.
        return VectorStoreUnavailable(text)
    return VectorStoreError(text)


def _by_status(status: int, text: str) -> VectorStoreError:
    if status == 429 or status >= 500:
        return VectorStoreUnavailable(text)
    return VectorStoreError(text)


class _EmbeddedLock:
    """An advisory lock on an embedded Chroma folder, shared within one process.

    ``PersistentClient`` is not safe for several processes at once; a second process
    that opens the same folder is refused and pointed to server mode.
    """

    _held: dict[Path, tuple[int, int]] = {}  # path -> (fd, users in this process)
    _guard = threading.Lock()

    @classmethod
    def acquire(cls, folder: Path) -> None:
        path = (folder / LOCK_NAME).resolve()
        with cls._guard:
            if path in cls._held:
                fd, users = cls._held[path]
                cls._held[path] = (fd, users + 1)
                return
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConcurrentClientError(
                    f"the embedded Chroma folder {folder} is open in another process; "
                    "PersistentClient is not safe across processes: run `chroma run "
                    "--path DIR` and pass chroma_client=chromadb.HttpClient(...)"
                ) from None
            cls._held[path] = (fd, 1)

    @classmethod
    def release(cls, folder: Path) -> None:
        path = (folder / LOCK_NAME).resolve()
        with cls._guard:
            if path not in cls._held:
                return
            fd, users = cls._held[path]
            if users > 1:
                cls._held[path] = (fd, users - 1)
                return
            del cls._held[path]
            os.close(fd)  # closing the descriptor drops the flock


class ChromaVectorStore:
    """``saga._ports.VectorStore`` on a chromadb client (embedded or HTTP)."""

    def __init__(
        self,
        client: Any,
        *,
        remote: bool,
        retry: RetryPolicy,
        timeouts: ChromaTimeouts,
        locked_folder: Path | None = None,
    ) -> None:
        self.client = client
        self.remote = remote
        self.retry = retry
        self.timeouts = timeouts
        self._locked_folder = locked_folder
        self._collections: dict[str, Any] = {}
        self._max_batch: int | None = None
        if remote:
            self._bound_http_session()

    @classmethod
    def embedded(
        cls, path: str | os.PathLike[str], *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """A ``PersistentClient`` on ``path`` (created 0700), locked against other processes."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _EmbeddedLock.acquire(folder)
        try:
            client = chromadb.PersistentClient(
                path=str(folder), settings=Settings(anonymized_telemetry=False)
            )
        except Exception as exc:
            _EmbeddedLock.release(folder)
            raise translate(exc, remote=False) from exc
        return cls(client, remote=False, retry=retry, timeouts=timeouts, locked_folder=folder)

    @classmethod
    def http(
        cls, host: str, port: int, *, retry: RetryPolicy, timeouts: ChromaTimeouts
    ) -> ChromaVectorStore:
        """An ``HttpClient`` for a ``chroma run`` server."""
        try:
            client = chromadb.HttpClient(
                host=host, port=port, settings=Settings(anonymized_telemetry=False)
            )
        except Exception as exc:
            raise translate(exc, remote=True) from exc
        return cls(client, remote=True, retry=retry, timeouts=timeouts)

    def _bound_http_session(self) -> None:
        session = getattr(getattr(self.client, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):
            session.timeout = httpx.Timeout(
                connect=self.timeouts.connect,
                read=self.timeouts.read,
                write=self.timeouts.read,
                pool=self.timeouts.connect,
            )

    # -- the seam ---------------------------------------------------------------------

    def _call(self, point: str, action: Callable[[], T]) -> T:
        """Run one Chroma call: failpoint, retries of transient errors, translation."""
        policy = self.retry

        def attempt() -> T:
            failpoints.hit(f"chroma.{point}")
            try:
                result = action()
            except Exception as exc:
                raise translate(exc, remote=self.remote) from exc
            failpoints.hit(f"chroma.{point}.after")
            return result

        if policy.attempts <= 1:
            return attempt()
        retrying = stamina.retry_context(
            on=_is_transient,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
        )
        for retry_attempt in retrying:
            with retry_attempt:
                return attempt()
        raise AssertionError("unreachable: stamina re-raises the last error")

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
        self._call(
            "upsert",
            lambda: target.upsert(
                ids=[r.id for r in records],
                embeddings=[list(r.embedding or ()) for r in records],
                documents=[r.document for r in records],
                metadatas=[dict(r.metadata) if r.metadata else None for r in records],
            ),
        )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        target = self._collection(collection)
        self._call("delete", lambda: target.delete(ids=list(ids)))

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
            start = offset
            found = self._call(
                "page",
                lambda: target.get(
                    limit=page_size, offset=start, include=["documents", "metadatas"]
                ),
            )
            page = _records(found, embeddings=False)
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
        self._collections.clear()
        if self._locked_folder is not None:
            _EmbeddedLock.release(self._locked_folder)
            self._locked_folder = None


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, VectorStoreError) and exc.transient


def _records(found: Any, *, embeddings: bool) -> dict[str, VectorRecord]:
    ids = list(found["ids"])
    documents = found.get("documents") or [None] * len(ids)
    metadatas = found.get("metadatas") or [None] * len(ids)
    vectors = found.get("embeddings") if embeddings else None
    records = {}
    for index, vector_id in enumerate(ids):
        embedding = None
        if vectors is not None:
            embedding = tuple(float(x) for x in vectors[index])
        records[vector_id] = VectorRecord(
            id=vector_id,
            embedding=embedding,
            document=documents[index],
            metadata=metadatas[index],
        )
    return records


with contextlib.suppress(AttributeError):  # quiet chromadb's own telemetry logger
    import logging

    logging.getLogger("chromadb.telemetry.product.posthog").setLevel(logging.CRITICAL)
