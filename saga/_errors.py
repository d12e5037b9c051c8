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


class DataIntegrityError(SagaError):
    """The saga failed; its compensation ran, so neither store changed.

    ``cause`` is the translated error that made the saga fail.
    """

    def __init__(self, message: str, *, saga_id: str, cause: BaseException | None) -> None:
        super().__init__(message, saga_id=saga_id)
        self.cause = cause


class CompensationError(SagaError):
    """Compensation failed; the saga is persisted in ``compensating`` for recovery."""

    def __init__(self, message: str, *, saga_id: str, cause: BaseException | None) -> None:
        super().__init__(message, saga_id=saga_id)
        self.cause = cause


class IllegalTransitionError(SagaError):
    """A move that the saga's state machine does not allow."""


class StoreError(SagaError):
    """A store failed. ``transient`` is true when retrying later may succeed."""

    transient: bool = False

    def __init__(
        self, message: str, *, saga_id: str | None = None, transient: bool | None = None
    ) -> None:
        super().__init__(message, saga_id=saga_id)
        if transient is not None:
            self.transient = transient


class SqliteStoreError(StoreError):
    """SQLite refused or failed (constraint, lock held too long, I/O error)."""


class VectorStoreError(StoreError):
    """Chroma refused or failed."""


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
