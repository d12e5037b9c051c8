"""Crash-safe dual writes to SQLite and ChromaDB, modelled as persisted sagas.

The application API: ``SagaRunner``, its configuration, results and errors. Names for
writing your own sagas live in ``saga.extend`` (re-exported here for compatibility).
The engine depends on protocols; the adapters in ``stores`` and the steps in ``steps``
are wired in by one composition root, ``saga._compose``.
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
    VectorStoreUnreadable,
)
from saga._log import log_to_stdlib
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
from saga._recovery import Policy
from saga._results import (
    QueryResult,
    RebuildReport,
    ReconcileReport,
    RecoveryReport,
    SagaResult,
    TableCounts,
)
from saga._runner import SagaRunner
from saga._services import Stores
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
    "Policy",
    "QueryResult",
    "RebuildReport",
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
    "Stores",
    "SystemClock",
    "TableCounts",
    "TableSpec",
    "ValidationError",
    "VectorRecord",
    "VectorStoreError",
    "VectorStoreTimeout",
    "VectorStoreUnavailable",
    "VectorStoreUnreadable",
    "log_to_stdlib",
]
