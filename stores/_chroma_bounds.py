"""Bounded Chroma calls: httpx timeouts, a whole-call deadline, retries within a budget.

- **Bounded calls (server mode).** chromadb's ``HttpClient`` builds its ``httpx.Client``
  with ``timeout=None`` (``chromadb/api/fastapi.py``) and has no setting for it. Two
  bounds are imposed: (1) httpx's own connect/read/write/pool timeouts, set through the
  public ``httpx.Client.timeout`` setter on chromadb's private session
  (``client._server._session``, ``bound_session``); they end a stalled socket and free its
  thread; (2) a whole-call deadline, ``ChromaTimeouts.call``: each request runs in a daemon
  thread and the caller waits that long at most (``within``). (1) alone does not bound a
  call (a server that drips a byte per read timeout never trips it); (2) alone would leave
  hung threads forever. A daemon thread per call rather than a pool: a pool's workers are
  joined at interpreter exit and a pool full of hung calls would queue healthy ones
  behind them.
- **Embedded mode has no deadline thread.** ``PersistentClient`` runs in-process (Rust,
  local disk): there is no network to stall, and a thread deadline could not stop the
  call, only abandon it, so the write would land *after* the saga had decided it failed
  (and compensated), which is exactly the ambiguity the adapter exists to settle.
- **Retries**: transient errors are retried (exponential backoff with jitter) per
  ``RetryPolicy`` (``saga._retry.retrying``, each retry a line of the library's log);
  every attempt is cut so the whole retried
  call ends within ``max(RetryPolicy.timeout, ChromaTimeouts.call)`` seconds (``Budget``).
  Retrying a write is safe: ``upsert`` under a deterministic id and ``delete`` by id are
  idempotent.
- ``bounded_call`` puts these together for one call, between the failpoints
  ``chroma.<point>`` and ``chroma.<point>.after`` (hit on every attempt).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx

from saga import _deadline as deadline
from saga import failpoints
from saga._config import ChromaTimeouts, RetryPolicy
from saga._errors import VectorStoreError, VectorStoreTimeout
from saga._retry import retrying
from stores._chroma_errors import Attempts, translate

T = TypeVar("T")

_last_status = threading.local()  # per thread: the status of its last HTTP response


def _record_status(response: httpx.Response) -> None:
    """httpx response hook: remember the status for ``translate`` (runs in the caller's
    thread, which is the call's own deadline thread)."""
    _last_status.code = response.status_code


def translated(action: Callable[[], T], *, remote: bool) -> T:
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


class BudgetSpent(VectorStoreTimeout):
    """No time was left to try (again): this attempt sent nothing, and retrying it is
    pointless (the caller's time is up), though the call may succeed later."""

    sent = False


class Budget:
    """The time left to a retried call, in seconds; every attempt is cut to fit it.
    Inside an API call's deadline (``saga._deadline``) the budget never outlasts it."""

    def __init__(self, seconds: float) -> None:
        left = deadline.remaining()
        self.ends = time.monotonic() + (seconds if left is None else min(seconds, left))

    def slice(self, most: float, point: str) -> float:
        """Seconds for the next attempt: at most ``most``, never past the end."""
        left = min(most, self.ends - time.monotonic())
        if left <= 0.001:
            raise BudgetSpent(f"Chroma: {point}: no time left for it", operation=point)
        return left


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, VectorStoreError) and exc.transient and not isinstance(exc, BudgetSpent)


def bounded_call(
    point: str,
    action: Callable[[], T],
    *,
    remote: bool,
    retry: RetryPolicy,
    timeouts: ChromaTimeouts,
) -> T:
    """One Chroma call named ``point``: failpoints, the deadline, translation, retries.

    Returns or raises within ``max(retry.timeout, timeouts.call)`` seconds if ``remote``;
    an embedded call runs in the caller's thread, uncut.
    """
    budget = Budget(max(retry.timeout, timeouts.call) if remote else 0.0)
    attempts = Attempts()

    def attempt() -> T:
        try:
            failpoints.hit(f"chroma.{point}")
            if remote:
                seconds = budget.slice(timeouts.call, point)
                result = within(seconds, point, lambda: translated(action, remote=True))
            else:
                result = translated(action, remote=False)
            failpoints.hit(f"chroma.{point}.after")
        except VectorStoreError as error:
            attempts.saw(error)
            raise
        return result

    try:
        return retrying(retry, attempt, is_transient, f"Chroma {point}")
    except VectorStoreError as error:
        error.sent = attempts.reached  # for every attempt, not just the last
        error.ambiguous = attempts.ambiguous
        error.operation = error.operation or point
        raise


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
