"""Crash-safe dual writes to SQLite and ChromaDB, modelled as persisted sagas.

The engine: the state machine, the runner, recovery, reconciliation, errors, clock,
diagrams and CLI. It depends on protocols; the adapters in ``stores`` and the steps in
``steps`` are wired in by ``SagaRunner.open``.
"""

from loguru import logger as _logger

from saga._clock import Clock, SystemClock
from saga._config import ChromaTimeouts, LeasePolicy, Limits, RetryPolicy, SqliteOptions
from saga._errors import (
    CompensationError,
    ConcurrentClientError,
    ConfigurationError,
    DataIntegrityError,
    FailpointError,
    IllegalTransitionError,
    LeaseLostError,
    RecordExistsError,
    RecordNotFoundError,
    SagaConflictError,
    SagaError,
    SqliteStoreError,
    StoreError,
    ValidationError,
    VectorStoreError,
    VectorStoreTimeout,
    VectorStoreUnavailable,
)
from saga._machine import (
    COMPENSATING,
    FAILED,
    PENDING,
    SQLITE_COMMITTED,
    SYNCED,
    VECTOR_WRITTEN,
    SagaDefinition,
    SagaMachine,
)
from saga._ports import SagaRecord, TableSpec, VectorRecord
from saga._results import (
    QueryResult,
    ReconcileReport,
    RecoveryReport,
    SagaResult,
    TableCounts,
)
from saga._runner import SagaRunner
from saga._steps import Item, SagaContext, Step

# Library etiquette: silent unless the application (or our CLI) enables "saga".
_logger.disable("saga")

__all__ = [
    "COMPENSATING",
    "FAILED",
    "PENDING",
    "SQLITE_COMMITTED",
    "SYNCED",
    "VECTOR_WRITTEN",
    "ChromaTimeouts",
    "Clock",
    "CompensationError",
    "ConcurrentClientError",
    "ConfigurationError",
    "DataIntegrityError",
    "FailpointError",
    "IllegalTransitionError",
    "Item",
    "LeaseLostError",
    "LeasePolicy",
    "Limits",
    "QueryResult",
    "ReconcileReport",
    "RecordExistsError",
    "RecordNotFoundError",
    "RecoveryReport",
    "RetryPolicy",
    "SagaConflictError",
    "SagaContext",
    "SagaDefinition",
    "SagaError",
    "SagaMachine",
    "SagaRecord",
    "SagaResult",
    "SagaRunner",
    "SqliteOptions",
    "SqliteStoreError",
    "Step",
    "StoreError",
    "SystemClock",
    "TableCounts",
    "TableSpec",
    "ValidationError",
    "VectorRecord",
    "VectorStoreError",
    "VectorStoreTimeout",
    "VectorStoreUnavailable",
]
