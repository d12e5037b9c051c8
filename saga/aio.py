"""``AsyncSagaRunner``: every operation of ``SagaRunner`` as a coroutine, for asyncio.

::

    from saga.aio import AsyncSagaRunner

    async with await AsyncSagaRunner.open("app.db", chroma_path="app_chroma") as runner:
        await runner.track("notes")
        result = await runner.create("notes", {"id": 1, "body": "..."}, embedding=[...])
        async with runner.atomic() as unit:  # one saga over several tables
            key = await unit.create("summaries", {"body": "..."}, embedding=[...])

**Threads underneath.** Each call runs the synchronous runner's method in a thread pool
that the async runner owns: ``max_workers`` threads (default 8), so a thousand concurrent
tasks queue for a thread rather than start a thousand; the event loop never waits on
SQLite or Chroma. The synchronous runner is made for this: each thread has its own
SQLite connection, SQLite's write lock orders the writers, and a second saga on a key
still in flight is refused with ``SagaConflictError``, raised by the coroutine.
Callbacks (``progress``, reconcile's ``rebuild``) are called in that thread.

**Chroma through a synchronous client**: ``chroma_path``, ``chroma_host``/``chroma_port``
or ``chroma_client=chromadb.HttpClient(...)``. Chroma's asyncio client
(``chromadb.AsyncHttpClient``) is refused, here as by ``SagaRunner.open``.

**Cancellation.** Cancelling a task whose call has not yet reached a thread cancels the
call: nothing is written. Once in a thread, a saga runs to its end (synced, compensated,
or left to recovery): the awaiting task is cancelled, the write is not, and like any
call that did not return it may or may not have happened; ``close`` waits for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from saga._clock import Clock
from saga._config import ChromaTimeouts, LeasePolicy, Limits, RetryPolicy, SqliteOptions
from saga._errors import SagaError, ValidationError
from saga._machine import SagaDefinition
from saga._results import SagaResult
from saga._runner import SagaRunner
from saga._services import Stores
from saga._unit import AtomicUnit

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")  # the synchronous object a coroutine method calls

DEFAULT_MAX_WORKERS = 8
"""Threads per async runner: enough to overlap Chroma's network and disk waits; SQLite
takes one writer at a time whatever the count."""

ASYNC_RUNNER_ADVICE = (
    "cannot be used by AsyncSagaRunner, which runs the synchronous runner in a thread "
    "pool: pass a synchronous client (chromadb.HttpClient), chroma_host/chroma_port or "
    "chroma_path"
)


class _Threaded(Generic[S]):
    """An object whose coroutine methods (``_threaded``) call ``_sync``'s in a thread."""

    _sync: S

    async def _in_thread(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        raise NotImplementedError


def _threaded(
    method: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[_Threaded[S], P], Coroutine[Any, Any, T]]:
    """``method`` as a coroutine method that runs it on ``self._sync`` in a thread of the
    runner's pool, with the same parameters (and docstring, after one line saying so)."""

    @functools.wraps(method)
    async def threaded(self: _Threaded[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._in_thread(method, self._sync, *args, **kwargs)

    threaded.__doc__ = f"Awaitable; run in the runner's thread pool.\n\n{method.__doc__ or ''}"
    return threaded


class AsyncSagaRunner(_Threaded[SagaRunner]):
    """A ``SagaRunner`` driven from asyncio (see the module's docstring).

    Build it with ``await AsyncSagaRunner.open(...)``, or around a runner built elsewhere
    with ``AsyncSagaRunner(runner)``; then ``async with``, or ``await runner.close()``.
    """

    def __init__(self, runner: SagaRunner, *, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        """Drive ``runner`` (now owned: ``close`` closes it) from ``max_workers`` threads."""
        self._sync = runner
        self._pool = ThreadPoolExecutor(_workers(max_workers), thread_name_prefix="saga-aio")
        self._closed = False

    @classmethod
    async def open(
        cls,
        db_path: str | os.PathLike[str],
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
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
    ) -> AsyncSagaRunner:
        """``SagaRunner.open`` with the same arguments (run in a thread), and a pool of
        ``max_workers`` threads to run its calls."""
        from saga._compose import refuse_async_client  # noqa: PLC0415 - keeps chromadb out

        refuse_async_client(chroma_client, ASYNC_RUNNER_ADVICE)
        _workers(max_workers)  # refused before anything is opened
        opening = asyncio.ensure_future(
            asyncio.to_thread(
                SagaRunner.open,
                db_path,
                chroma_path=chroma_path,
                chroma_client=chroma_client,
                chroma_host=chroma_host,
                chroma_port=chroma_port,
                clock=clock,
                lease=lease,
                retry=retry,
                chroma_timeouts=chroma_timeouts,
                sqlite=sqlite,
                limits=limits,
                create=create,
                recover_every=recover_every,
            )
        )
        try:
            runner = await asyncio.shield(opening)
        except asyncio.CancelledError:  # the open goes on in its thread: close what it opens
            opening.add_done_callback(_close_opened)
            raise
        return cls(runner, max_workers=max_workers)

    async def _in_thread(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` in the pool, in a copy of the caller's context
        variables (as ``asyncio.to_thread``: loguru's ``contextualize`` carries over)."""
        if self._closed:
            raise SagaError("the runner is closed")
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(context.run, function, *args, **kwargs)
        )

    # -- plain: no I/O ----------------------------------------------------------------

    @property
    def sync(self) -> SagaRunner:
        """The synchronous runner underneath (its calls block: not on the event loop)."""
        return self._sync

    @property
    def stores(self) -> Stores:
        """The stores the runner writes (``SagaRunner.stores``)."""
        return self._sync.stores

    clock = property(lambda self: self._sync.clock, doc="The runner's clock.")
    lease = property(lambda self: self._sync.lease, doc="Its lease policy.")
    limits = property(lambda self: self._sync.limits, doc="Its input limits.")

    def atomic(self) -> AsyncAtomicUnit:
        """``async with runner.atomic() as unit:``: ``await unit.create/update/delete``
        collect row changes across tracked tables, run as one saga when the block ends
        (``SagaRunner.atomic``); ``unit.result`` is then its ``SagaResult``."""
        return AsyncAtomicUnit(self, self._sync.atomic())

    def register(self, definition: SagaDefinition) -> None:
        """Make a custom saga definition known (``SagaRunner.register``)."""
        self._sync.register(definition)

    def definition(self, name: str) -> SagaDefinition:
        """The saga definition registered under ``name`` (``SagaRunner.definition``)."""
        return self._sync.definition(name)

    # -- coroutines: each the synchronous method, in a thread of the pool -------------

    track = _threaded(SagaRunner.track)
    spec = _threaded(SagaRunner.spec)
    tracked = _threaded(SagaRunner.tracked)

    create = _threaded(SagaRunner.create)
    create_many = _threaded(SagaRunner.create_many)
    update = _threaded(SagaRunner.update)
    update_many = _threaded(SagaRunner.update_many)
    delete = _threaded(SagaRunner.delete)
    delete_many = _threaded(SagaRunner.delete_many)
    run = _threaded(SagaRunner.run)

    recover = _threaded(SagaRunner.recover)
    reconcile = _threaded(SagaRunner.reconcile)
    rebuild = _threaded(SagaRunner.rebuild)
    adopt = _threaded(SagaRunner.adopt)
    detect_orphaned_records = _threaded(SagaRunner.detect_orphaned_records)
    recover_orphaned_vectors = _threaded(SagaRunner.recover_orphaned_vectors)

    query = _threaded(SagaRunner.query)
    in_flight = _threaded(SagaRunner.in_flight)
    row = _threaded(SagaRunner.row)
    vectors_of = _threaded(SagaRunner.vectors_of)
    count = _threaded(SagaRunner.count)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (new calls are then refused)."""
        return self._closed

    async def close(self) -> None:
        """Refuse new calls, wait for those already made, then close the runner (its
        SQLite connections and Chroma folder) and the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._shut_down)

    def _shut_down(self) -> None:
        try:
            self._pool.shutdown(wait=True)
        finally:
            self._sync.close()

    async def __aenter__(self) -> AsyncSagaRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncAtomicUnit(_Threaded[AtomicUnit]):
    """``SagaRunner.atomic``'s unit for asyncio: its calls, and the saga run when the
    ``async with`` block ends (abandoned if it raised), in the runner's pool; one call
    at a time, in the order awaited (the unit is one saga's plan)."""

    def __init__(self, runner: AsyncSagaRunner, unit: AtomicUnit) -> None:
        self._runner = runner
        self._sync = unit
        self._turn = asyncio.Lock()

    async def _in_thread(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._turn:
            return await self._runner._in_thread(function, *args, **kwargs)

    @property
    def saga_id(self) -> str:
        """The unit's saga."""
        return self._sync.saga_id

    @property
    def result(self) -> SagaResult | None:
        """The ``SagaResult``, once the block has ended without error."""
        return self._sync.result

    create = _threaded(AtomicUnit.create)
    update = _threaded(AtomicUnit.update)
    delete = _threaded(AtomicUnit.delete)

    async def __aenter__(self) -> AsyncAtomicUnit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._in_thread(self._sync.__exit__, exc_type, exc, tb)


def _close_opened(opening: asyncio.Future[SagaRunner]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _workers(max_workers: object) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValidationError(f"must be a positive int, got {max_workers!r}", field="max_workers")
    return max_workers


__all__ = ["DEFAULT_MAX_WORKERS", "AsyncAtomicUnit", "AsyncSagaRunner"]
