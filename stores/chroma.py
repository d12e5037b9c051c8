"""The Chroma adapter: the one place that talks to ``chromadb`` and translates its errors.

- Collections are opened with ``embedding_function=None`` and every write carries its
  embeddings, so Chroma's default embedding function (a model download) never runs.
- **Bounded calls (server mode).** chromadb's ``HttpClient`` builds its ``httpx.Client``
  with ``timeout=None`` (``chromadb/api/fastapi.py``) and has no setting for it. Two
  bounds are imposed: (1) httpx's own connect/read/write/pool timeouts, set through the
  public ``httpx.Client.timeout`` setter on chromadb's private session
  (``client._server._session``); they end a stalled socket and free its thread;
  (2) a whole-call deadline, ``ChromaTimeouts.call``: each request runs in a daemon thread
  and the caller waits that long at most. (1) alone does not bound a call (a server that
  drips a byte per read timeout never trips it); (2) alone would leave hung threads
  forever. A daemon thread per call rather than a pool: a pool's workers are joined at
  interpreter exit and a pool full of hung calls would queue healthy ones behind them.
- **Embedded mode has no deadline thread.** ``PersistentClient`` runs in-process (Rust,
  local disk): there is no network to stall, and a thread deadline could not stop the
  call, only abandon it, so the write would land *after* the saga had decided it failed
  (and compensated), which is exactly the ambiguity this module exists to settle.
- **Errors** are translated at one seam (``translate``): timeouts -> ``VectorStoreTimeout``;
  connection refused/reset, 5xx, 429 -> ``VectorStoreUnavailable`` (both transient); the
  rest (validation, other 4xx) -> ``VectorStoreError`` (permanent). The HTTP status is
  read from the response itself (an httpx response hook), because chromadb raises a bare
  ``Exception`` for an error body it does not recognise. Nothing from chromadb or httpx
  leaks.
- **Retries**: transient errors are retried with ``stamina`` (exponential backoff with
  jitter) per ``RetryPolicy``; every attempt is cut so the whole retried call ends within
  ``max(RetryPolicy.timeout, ChromaTimeouts.call)`` seconds. Retrying a write is safe:
  ``upsert`` under a deterministic id and ``delete`` by id are idempotent.
- **Ambiguous writes**: a write that still fails with a timeout or a reset connection may
  or may not have been applied. ``upsert``/``delete`` then read the ids back: if the write
  took effect (every id present with the expected document and metadata, ``saga_id``
  included; or every id absent) they return normally; if not, the error is raised (the
  saga compensates, idempotently); if the read-back fails too, ``VectorStoreTimeout``.
  So one write, read-back included, takes at most twice the retried-call bound. An error
  *answer* (5xx, 429) or a refused connection is not read back: nothing or not all was
  done, and compensation (idempotent) covers whatever was.
- **The batch size** is learnt when a server is opened: under a fault, a saga that still
  had to ask could split neither its batch nor its compensation.
- **Known limit**: a request held up in the network longer than the deadline (not lost,
  late) can still land after the saga settled; no client-side bound prevents that, as
  Chroma has no conditional writes. ``saga reconcile`` reports what it leaves behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
from stores.sqlite import make_private_folder

T = TypeVar("T")
LOCK_NAME = ".saga-embedded.lock"

# httpx errors raised before a request left the client: such a write cannot have been
# applied, so no read-back is needed.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The connection died under a request already sent: the server may have applied it.
_CUT_OFF = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, ConnectionError)

failpoints.register_error("chroma-unavailable", lambda n: VectorStoreUnavailable(f"{n}"))
failpoints.register_error("chroma-timeout", lambda n: VectorStoreTimeout(f"{n}"))
failpoints.register_error("chroma-invalid", lambda n: VectorStoreError(f"{n}"))


def translate(exc: BaseException, *, remote: bool, status: int | None = None) -> VectorStoreError:
    """Map anything chromadb or httpx raised to the project's vector store errors.

    ``status`` is the HTTP status of the last response of the failed call, when known.
    """
    if isinstance(exc, VectorStoreError):
        return exc
    text = f"Chroma: {type(exc).__name__}: {exc}"
    wire = _wire_error(exc)
    if isinstance(wire, httpx.TimeoutException | TimeoutError):
        return VectorStoreTimeout(text)
    if wire is not None:
        return VectorStoreUnavailable(text)
    if isinstance(exc, httpx.HTTPStatusError):
        return _by_status(exc.response.status_code, text)
    if status is not None and status >= 400:
        # The response said it, whatever chromadb made of its body.
        return _by_status(status, f"Chroma: HTTP {status}: {exc}")
    if isinstance(exc, ChromaError):
        return _by_status(exc.code(), text)
    if remote and type(exc) is Exception:
        # chromadb raises a bare Exception for an HTTP error without a Chroma body
        # (a proxy's 502, a restarting server) and the status was not seen: retrying
        # may help.
        return VectorStoreUnavailable(text)
    return VectorStoreError(text)


def _by_status(status: int, text: str) -> VectorStoreError:
    if status == 429 or status >= 500:
        return VectorStoreUnavailable(text)
    return VectorStoreError(text)


def _wire_error(exc: BaseException | None) -> BaseException | None:
    """The network error behind ``exc``, if any: chromadb wraps some (a refused
    connection while opening a client becomes ``ValueError("Could not connect...")``)."""
    for _ in range(8):  # a chain is short; a cycle must not loop forever
        if exc is None or isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def maybe_applied(error: VectorStoreError) -> bool:
    """True if a write that failed with ``error`` may nevertheless have been applied:
    no answer in time, or the connection cut under a request already sent."""
    wire = _wire_error(error.__cause__)
    if isinstance(wire, _NEVER_SENT):
        return False
    return isinstance(error, VectorStoreTimeout) or isinstance(wire, _CUT_OFF)


# -- bounded calls ----------------------------------------------------------------------

_last_status = threading.local()  # per thread: the status of its last HTTP response


def _record_status(response: httpx.Response) -> None:
    """httpx response hook: remember the status for ``translate`` (runs in the caller's
    thread, which is the call's own deadline thread)."""
    _last_status.code = response.status_code


def _translated(action: Callable[[], T], *, remote: bool) -> T:
    """Run ``action`` and translate what it raises (with the HTTP status, if one was seen)."""
    _last_status.code = None
    try:
        return action()
    except Exception as exc:
        status = getattr(_last_status, "code", None)
        raise translate(exc, remote=remote, status=status) from exc


def within(seconds: float, point: str, action: Callable[[], T]) -> T:
    """Run ``action`` in a daemon thread; return its result or re-raise its error, or
    raise ``VectorStoreTimeout`` if it has not finished after ``seconds``.

    The abandoned thread is left to end by itself (httpx's timeouts see to that).
    """
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(action())
        except BaseException as exc:  # handed over to the waiting caller
            outcome.set_exception(exc)

    threading.Thread(target=run, name=f"saga-chroma-{point}", daemon=True).start()
    done = threading.Event()
    outcome.add_done_callback(lambda _: done.set())
    if not done.wait(seconds):
        raise VectorStoreTimeout(f"Chroma: no answer to {point} within {seconds:.2f}s")
    return outcome.result()


class _Budget:
    """The time left to a retried call, in seconds; every attempt is cut to fit it."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def slice(self, most: float, point: str) -> float:
        left = min(most, self.ends - time.monotonic())
        if left <= 0.001:
            raise VectorStoreTimeout(f"Chroma: {point}: retry budget spent")
        return left


def _retrying(policy: RetryPolicy, attempt: Callable[[], T]) -> T:
    """``attempt``, retried on transient errors with backoff and jitter (``stamina``).

    The policy is explicit, so nothing here depends on stamina's global testing mode.
    """
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


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, VectorStoreError) and exc.transient


def bound_session(client: Any, timeouts: ChromaTimeouts) -> httpx.Client | None:
    """Set httpx timeouts (and the status hook) on an ``HttpClient``'s session.

    Returns the session, or None if it is not where chromadb 1.5 keeps it
    (``client._server._session``): calls are then bounded by the deadline alone.
    """
    session = getattr(getattr(client, "_server", None), "_session", None)
    if not isinstance(session, httpx.Client):
        return None
    session.timeout = httpx.Timeout(
        connect=timeouts.connect,
        read=timeouts.read,
        write=timeouts.read,
        pool=timeouts.connect,
    )
    hooks = session.event_hooks
    if _record_status not in hooks["response"]:
        hooks["response"] = [*hooks["response"], _record_status]
        session.event_hooks = hooks
    return session


class _EmbeddedLock:
    """An advisory lock on an embedded Chroma folder, shared within one process.

    ``PersistentClient`` is not safe for several processes at once; a second process
    that opens the same folder is refused and pointed to server mode.
    """

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # path -> (fd, users in this process)
    _guard: ClassVar[threading.Lock] = threading.Lock()

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
    """``saga._ports.VectorStore`` on a chromadb client (embedded or HTTP).

    ``read_backs`` counts how ambiguous writes were settled, by ``"<write>:<outcome>"``
    (``"upsert:applied"``, ``"delete:not_applied"``, ``"upsert:unknown"``).
    ``session_bounded`` says whether httpx timeouts could be set on an HTTP client.
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
        make_private_folder(folder)
        _EmbeddedLock.acquire(folder)
        try:
            client = chromadb.PersistentClient(
                path=str(folder), settings=Settings(anonymized_telemetry=False)
            )
        except Exception as exc:
            _EmbeddedLock.release(folder)
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

        def connect() -> Any:
            return chromadb.HttpClient(
                host=host, port=port, settings=Settings(anonymized_telemetry=False)
            )

        budget = _Budget(max(retry.timeout, timeouts.call))
        client = _retrying(
            retry,
            lambda: within(
                budget.slice(timeouts.call, "connect"),
                "connect",
                lambda: _translated(connect, remote=True),
            ),
        )
        try:
            return cls(client, remote=True, retry=retry, timeouts=timeouts, owned=True)
        except BaseException:
            _close_client(client)
            raise

    @property
    def call_bound(self) -> float | None:
        """The most one retried call may take, in seconds; a write followed by its
        read-back takes up to twice that. ``None`` for the embedded client (in-process,
        not cut; see the module docstring)."""
        return max(self.retry.timeout, self.timeouts.call) if self.remote else None

    # -- the seam ---------------------------------------------------------------------

    def _call(self, point: str, action: Callable[[], T]) -> T:
        """One Chroma call: failpoints, the deadline, translation, retries.

        Returns or raises within ``max(retry.timeout, timeouts.call)`` seconds (remote).
        """
        budget = _Budget(self.call_bound or 0.0)

        def attempt() -> T:
            failpoints.hit(f"chroma.{point}")
            if self.remote:
                seconds = budget.slice(self.timeouts.call, point)
                result = within(seconds, point, lambda: _translated(action, remote=True))
            else:
                result = _translated(action, remote=False)
            failpoints.hit(f"chroma.{point}.after")
            return result

        return _retrying(self.retry, attempt)

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
            _EmbeddedLock.release(self._locked_folder)
            self._locked_folder = None


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


with contextlib.suppress(AttributeError):  # quiet chromadb's own telemetry logger
    import logging

    logging.getLogger("chromadb.telemetry.product.posthog").setLevel(logging.CRITICAL)
