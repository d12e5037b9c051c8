"""Chroma's errors, translated at one seam into the project's vector store errors.

- ``translate``: timeouts -> ``VectorStoreTimeout``; connection refused/reset, 5xx, 429 ->
  ``VectorStoreUnavailable`` (both transient); the rest (validation, other 4xx) ->
  ``VectorStoreError`` (permanent). The HTTP status is read from the response itself (an
  httpx response hook, ``stores._chroma_bounds``), because chromadb raises a bare
  ``Exception`` for an error body it does not recognise. Nothing from chromadb or httpx
  leaks.
- ``maybe_applied``: whether a write that failed may nevertheless have landed, which is
  when the adapter reads it back (``stores.chroma``). A timeout or a connection cut under a
  request already sent may have been applied; an error *answer* (5xx, 429) or a refused
  connection was not, or not all of it, and compensation (idempotent) covers whatever was.
"""

from __future__ import annotations

import httpx
from chromadb.errors import ChromaError

from saga._errors import VectorStoreError, VectorStoreTimeout, VectorStoreUnavailable

# httpx errors raised before a request left the client: such a write cannot have been
# applied, so no read-back is needed.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The connection died under a request already sent: the server may have applied it.
_CUT_OFF = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, ConnectionError)


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


def never_sent(error: VectorStoreError) -> bool:
    """True if the request behind ``error`` never left the client (connection refused,
    connect or pool timeout): it cannot have been applied."""
    return isinstance(_wire_error(error.__cause__), _NEVER_SENT)


def maybe_applied(error: VectorStoreError) -> bool:
    """True if a write that failed with ``error`` may nevertheless have been applied:
    no answer in time, or the connection cut under a request already sent."""
    if not error.sent or never_sent(error):
        return False
    wire = _wire_error(error.__cause__)
    return isinstance(error, VectorStoreTimeout) or isinstance(wire, _CUT_OFF)


class Attempts:
    """What the attempts of one retried call say together: whether any may have reached
    Chroma (``reached``), and whether any may have been applied without an answer
    (``ambiguous``). A refused last attempt does not undo what an earlier one sent."""

    def __init__(self) -> None:
        self.reached = False
        self.ambiguous = False

    def saw(self, error: VectorStoreError) -> None:
        self.reached = self.reached or (error.sent and not never_sent(error))
        self.ambiguous = self.ambiguous or maybe_applied(error)
