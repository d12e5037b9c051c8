"""The one error tree of the library.

Every error a caller can see derives from ``SagaError`` and carries the saga id when
there is one. Store errors (``sqlite3``, ``chromadb``, ``httpx``) are translated at the
adapter seams in ``stores/``; none reaches a caller raw.

::

    SagaError
    ├── ValidationError            bad input, refused before any write (names the field)
    │   ├── UnknownColumnError     a row names a column the table does not have
    │   ├── RecordExistsError      create on a key that is already stored
    │   ├── RecordNotFoundError    update/delete on a key that is not stored
    │   └── ConfigurationError     track() misuse, unknown table, non-saga database
    ├── SagaConflictError          the key (or the saga) is owned by another saga/runner
    │   └── LeaseLostError         this runner's lease was taken over mid-saga
    ├── DataIntegrityError         the saga failed and its compensation ran: nothing left
    ├── CompensationError          compensation failed: saga left in `compensating`
    ├── IllegalTransitionError     a move the state machine does not allow
    ├── StoreError                 a store failed (translated); `transient` says if a
    │   ├── SqliteStoreError       retry may help
    │   └── VectorStoreError
    │       ├── VectorStoreUnreadable    an embedded folder Chroma cannot read: rebuild
    │       ├── VectorStoreUnavailable   connection refused/reset, 5xx, 429
    │       └── VectorStoreTimeout       no answer in time: the write may have happened
    ├── ConcurrentClientError      an embedded Chroma folder already open in another process
    └── FailpointError             a named failpoint fired (tests only)
"""

from __future__ import annotations


class SagaError(Exception):
    """Root of every error raised by the library.

    ``saga_id`` is the saga the error concerns, or ``None`` when it happened before a
    saga existed (bad input, configuration).
    """

    transient: bool = False
    """Whether retrying the same call later may succeed (a store briefly away)."""

    def __init__(self, message: str, *, saga_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.saga_id = saga_id

    def __str__(self) -> str:
        if self.saga_id is None:
            return self.message
        return f"{self.message} (saga {self.saga_id})"


class ValidationError(SagaError):
    """Input refused before anything was written.

    ``field`` names the offending field (``"row.body"``, ``"embedding"``,
    ``"items[3].metadata.k"``); ``index`` is the batch item's position, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        index: int | None = None,
        saga_id: str | None = None,
    ) -> None:
        where = field if index is None else f"items[{index}].{field}"
        super().__init__(f"{where}: {message}", saga_id=saga_id)
        self.field = field
        self.index = index


class UnknownColumnError(ValidationError):
    """A row named a column the table does not have (as last read: the runner reads the
    table again once before refusing, in case it was altered meanwhile)."""


class RecordExistsError(ValidationError):
    """A create named a key that is already stored."""


class RecordNotFoundError(ValidationError):
    """An update or delete named a key that is not stored."""


class ConfigurationError(ValidationError):
    """A table is not tracked, is tracked differently, or a database is not a saga one."""


class SagaConflictError(SagaError):
    """Another saga owns the key, or another runner owns the saga."""

    def __init__(
        self,
        message: str,
        *,
        saga_id: str | None = None,
        key: object = None,
        holder: str | None = None,
    ) -> None:
        super().__init__(message, saga_id=saga_id)
        self.key = key
        self.holder = holder


class LeaseLostError(SagaConflictError):
    """This runner's lease on a saga expired and another owner claimed it."""


class _Caused(SagaError):
    """An error about a saga that failed because of ``cause`` (a translated error).

    ``transient`` and ``operation`` are the cause's: whether trying again later may
    succeed, and which store operation failed (``upsert``, ``delete``, ``readback``,
    ``sqlite commit``, ...), or None when it was not a store's.
    """

    def __init__(self, message: str, *, saga_id: str, cause: BaseException | None) -> None:
        super().__init__(message, saga_id=saga_id)
        self.cause = cause
        self.transient = isinstance(cause, SagaError) and cause.transient
        self.operation = cause.operation if isinstance(cause, StoreError) else None


class DataIntegrityError(_Caused):
    """The saga failed; its compensation ran, so neither store changed.

    ``cause`` is the translated error that made the saga fail; ``transient`` says whether
    the same call may succeed later (a store briefly away) or not (a constraint).
    """


class CompensationError(_Caused):
    """Compensation failed; the saga is persisted for recovery (``saga recover``).

    ``cause`` is the error that stopped the compensation; ``failure`` the one that made
    the saga fail in the first place (None if the compensation was not the first).
    """

    def __init__(
        self,
        message: str,
        *,
        saga_id: str,
        cause: BaseException | None,
        failure: BaseException | None = None,
    ) -> None:
        super().__init__(message, saga_id=saga_id, cause=cause)
        self.failure = failure


class IllegalTransitionError(SagaError):
    """A move that the saga's state machine does not allow."""


class StoreError(SagaError):
    """A store failed. ``transient`` is true when retrying later may succeed;
    ``operation`` names what failed (``upsert``, ``sqlite commit``, ...) when known."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        saga_id: str | None = None,
        transient: bool | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message, saga_id=saga_id)
        if transient is not None:
            self.transient = transient
        self.operation = operation


class SqliteStoreError(StoreError):
    """SQLite refused or failed (constraint, lock held too long, I/O error)."""


class VectorStoreError(StoreError):
    """Chroma refused or failed. ``sent`` is False only when the request provably never
    reached Chroma (every attempt's connection refused before sending): a write that
    failed so was not applied, and there is nothing to undo."""

    sent: bool = True
    ambiguous: bool = False  # a write may have been applied though it failed


class VectorStoreUnreadable(VectorStoreError):
    """An embedded Chroma folder Chroma itself can no longer read (a damaged index
    segment): move it aside and re-create it from the saga log with ``saga rebuild``."""


class VectorStoreUnavailable(VectorStoreError):
    """Chroma could not be reached or answered 5xx/429: retrying may help."""

    transient = True


class VectorStoreTimeout(VectorStoreUnavailable):
    """Chroma did not answer in time; a write may or may not have been applied."""


class ConcurrentClientError(SagaError):
    """An embedded Chroma folder is already open in another process."""


class FailpointError(SagaError):
    """A named failpoint fired with the ``raise`` action (tests and the demo only)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"failpoint {name!r} fired")
        self.name = name
