"""The composition root: the one module of ``saga`` that imports ``stores`` and ``steps``.

Everything else in ``saga`` depends on the ports (``saga._ports``) and the extension
API; the adapters and the built-in dual-write definitions are chosen and wired here,
and nowhere else (the layer contract in ``pyproject.toml`` checks it).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from saga._clock import Clock, SystemClock
from saga._config import ChromaTimeouts, LeasePolicy, RetryPolicy, SqliteOptions
from saga._errors import ConfigurationError
from saga._machine import SagaDefinition
from saga._owner import lease_owner_id
from saga._services import Stores
from steps import DEFINITIONS
from stores.catalog import SqliteTableCatalog
from stores.chroma import ChromaVectorStore
from stores.saga_log import SqliteSagaLog
from stores.sqlite import Database


def builtin_definitions() -> dict[str, SagaDefinition]:
    """The dual-write sagas: create, update, delete and their batches, by name."""
    return dict(DEFINITIONS)


def refuse_async_client(client: object, advice: str) -> None:
    """Refuse an asyncio Chroma client (the coroutine ``chromadb.AsyncHttpClient(...)``
    returns, or the client it gives) with ``advice``: the stores call Chroma synchronously,
    and such a client only fails at the first call. A coroutine is closed first, so
    Python does not also warn that it was never awaited."""
    if inspect.iscoroutine(client):
        client.close()
    elif not (
        inspect.isawaitable(client)
        or inspect.iscoroutinefunction(getattr(client, "get_or_create_collection", None))
    ):
        return
    raise ConfigurationError(
        f"an asyncio Chroma client ({type(client).__name__}) {advice}", field="chroma_client"
    )


SYNC_RUNNER_ADVICE = (
    "cannot drive SagaRunner, which calls Chroma synchronously: use "
    "saga.aio.AsyncSagaRunner (`await AsyncSagaRunner.open(...)`), which runs the runner "
    "in a thread pool and so takes a synchronous client (chromadb.HttpClient), "
    "chroma_host/chroma_port or chroma_path"
)


def open_stores(
    db_path: str | os.PathLike[str],
    *,
    chroma_path: str | os.PathLike[str] | None,
    chroma_client: Any,
    chroma_host: str | None,
    chroma_port: int | None,
    clock: Clock,
    lease: LeasePolicy,
    retry: RetryPolicy,
    timeouts: ChromaTimeouts,
    sqlite: SqliteOptions,
    create: bool,
) -> Stores:
    """The SQLite file (created and migrated if ``create``) and a Chroma: the given
    client, a server at host/port, or the embedded folder (default ``<db>.chroma``)."""
    refuse_async_client(chroma_client, SYNC_RUNNER_ADVICE)  # before anything is opened
    database = Database.open(db_path, sqlite, create=create)
    try:
        if chroma_client is not None:
            vectors = ChromaVectorStore.from_client(chroma_client, retry=retry, timeouts=timeouts)
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
    return Stores(
        log=SqliteSagaLog(database, clock, lease, lease_owner_id()),
        catalog=SqliteTableCatalog(database, clock),
        vectors=vectors,
    )


def open_log(db_path: str | os.PathLike[str], clock: Clock | None = None) -> SqliteSagaLog:
    """The saga log of an existing saga database, never creating one."""
    database = Database.open(db_path, SqliteOptions(), create=False)
    return SqliteSagaLog(database, clock or SystemClock(), LeasePolicy(), lease_owner_id())


def open_catalog(log: SqliteSagaLog, clock: Clock | None = None) -> SqliteTableCatalog:
    """The table catalog of the database ``log`` is on."""
    return SqliteTableCatalog(log.db, clock or SystemClock())
