"""Building and closing chromadb clients, and telling an HTTP client from an embedded one.

- **Nothing happens on import.** The failpoint error kinds (``raise:chroma-unavailable``,
  ``raise:chroma-timeout``, ``raise:chroma-invalid``) are registered, and chromadb's own
  telemetry logger quietened, when the first client or store is built (``prepare``), so
  importing the adapter changes neither the failpoint table nor another library's logging.
- **Embedded**: the folder is created owner-only and locked against other processes
  (``stores._chroma_lock``) before ``PersistentClient`` opens it.
- **HTTP**: building an ``HttpClient`` already talks to the server (identity, tenant,
  database), on a session with no timeout yet: it runs under the whole-call deadline,
  retried within the budget (``stores._chroma_bounds``), and a thread abandoned there
  waits on its socket until the peer closes it.
- **Which kind**: an ``HttpClient`` keeps chromadb's HTTP server API, ``FastAPI``, in
  ``client._server`` (chromadb 1.5); checked against that class, not its name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import chromadb
import httpx
from chromadb.api.fastapi import FastAPI
from chromadb.config import Settings

from saga import failpoints
from saga._config import ChromaTimeouts, RetryPolicy
from saga._errors import (
    ConfigurationError,
    VectorStoreError,
    VectorStoreTimeout,
    VectorStoreUnavailable,
    VectorStoreUnreadable,
)
from saga._retry import retrying
from stores._chroma_bounds import Budget, is_transient, translated, within
from stores._chroma_errors import translate
from stores._chroma_lock import EmbeddedLock
from stores.sqlite import make_private_folder


@functools.cache  # once per process: both steps are global and idempotent
def prepare() -> None:
    """Register the Chroma failpoint error kinds and quieten chromadb's telemetry logger."""
    failpoints.register_error("chroma-unavailable", lambda n: VectorStoreUnavailable(f"{n}"))
    failpoints.register_error("chroma-timeout", lambda n: VectorStoreTimeout(f"{n}"))
    failpoints.register_error("chroma-invalid", lambda n: VectorStoreError(f"{n}"))
    logging.getLogger("chromadb.telemetry.product.posthog").setLevel(logging.CRITICAL)


def open_embedded(folder: Path) -> Any:
    """A ``PersistentClient`` on ``folder`` (created 0700), which stays locked against
    other processes until ``EmbeddedLock.release(folder)``."""
    prepare()  # before the client: its telemetry logger is quiet from the start
    make_private_folder(folder)
    EmbeddedLock.acquire(folder)
    try:
        client = chromadb.PersistentClient(
            path=str(folder), settings=Settings(anonymized_telemetry=False)
        )
        _probe(client, folder)
    except VectorStoreUnreadable:
        EmbeddedLock.release(folder)
        raise
    except Exception as exc:
        EmbeddedLock.release(folder)
        if "already exists" in str(exc) and "different settings" in str(exc):
            raise ConfigurationError(
                f"this process already has a Chroma client on {folder} (opened with other "
                "settings): pass that client as SagaRunner.open(..., chroma_client=client)",
                field="chroma_path",
            ) from exc
        raise translate(exc, remote=False) from exc
    return client


# What chromadb 1.5 says when a folder's index segment cannot be loaded or replayed
# (seen after SIGKILLs during large upserts, and with a damaged segment file).
_UNREADABLE = ("hnsw", "segment", "Failed to apply logs")


def _probe(client: Any, folder: Path) -> None:
    """Touch every collection's index once (a one-result query), so that a folder Chroma
    can no longer read is refused when it is opened, with what to do, rather than at
    some later write. Costs one read and one small query per collection at open."""
    for collection in client.list_collections():
        target = client.get_collection(collection.name, embedding_function=None)
        try:
            stored = target.get(limit=1, include=["embeddings"])["embeddings"]
            if stored is not None and len(stored) > 0:  # an empty collection has no index
                zero = [0.0] * len(stored[0])
                target.query(query_embeddings=[zero], n_results=1, include=[])
        except Exception as exc:
            if not any(word in str(exc) for word in _UNREADABLE):
                raise
            raise VectorStoreUnreadable(
                f"Chroma cannot read the embedded folder {folder} (collection "
                f"{collection.name!r}: {exc}). The saga log keeps every synced vector: move "
                "the folder aside and run `saga rebuild --db DB --chroma-path "
                f"{folder}` to re-create it"
            ) from exc


def connect_http(host: str, port: int, *, retry: RetryPolicy, timeouts: ChromaTimeouts) -> Any:
    """An ``HttpClient`` for the server at ``host``:``port``, built within
    ``max(retry.timeout, timeouts.call)`` seconds or a ``VectorStoreError``."""
    prepare()  # before the client: its telemetry logger is quiet from the start

    def connect() -> Any:
        return chromadb.HttpClient(
            host=host, port=port, settings=Settings(anonymized_telemetry=False)
        )

    budget = Budget(max(retry.timeout, timeouts.call))
    return retrying(
        retry,
        lambda: within(
            budget.slice(timeouts.call, "connect"),
            "connect",
            lambda: translated(connect, remote=True),
        ),
        is_transient,
        f"Chroma connect to {host}:{port}",
    )


def talks_http(client: Any) -> bool:
    """Whether ``client`` reaches Chroma over HTTP (an ``HttpClient``) rather than in-process."""
    return isinstance(getattr(client, "_server", None), FastAPI)


def close_client(client: Any) -> None:
    """Close a client we built, its httpx session included (chromadb's close() leaves
    it open); closing only drops local resources, so a failure there is ignored."""
    with contextlib.suppress(Exception):
        client.close()
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.close()
