"""One dual write, from begin to a result or a loud error.

Shared by the runner's writes, ``runner.run`` (a custom definition) and reconcile's
repairs, so every write settles the same way: ``SagaResult`` once synced,
``DataIntegrityError`` once compensated, ``CompensationError`` when left to recovery.
"""

from __future__ import annotations

import uuid

from saga import _deadline as deadline
from saga import _log as log
from saga._engine import Outcome, Settled
from saga._errors import (
    CompensationError,
    ConfigurationError,
    DataIntegrityError,
    SagaError,
    StoreError,
)
from saga._items import same_dimension
from saga._log import logger
from saga._machine import SagaDefinition
from saga._ports import SagaRecord, TableSpec
from saga._results import SagaResult
from saga._services import Services
from saga._steps import Item, SagaContext


def run(
    services: Services, definition: SagaDefinition, spec: TableSpec, op: str, items: list[Item]
) -> SagaResult:
    """Begin, drive, and turn the outcome into a result or a loud error."""
    if spec.dimension is None:
        same_dimension(items)
    saga_id = str(uuid.uuid4())
    given = [item.key for item in items if item.key is not None]
    with deadline.scope(services.vectors.call_deadline), log.context(saga_id, spec.table, given):
        saga, ctx = services.engine.begin(definition, spec, op, items, saga_id)
        with log.context(saga_id, spec.table, [item.key for item in ctx.items]):
            settled = services.engine.drive(definition, saga, ctx)
            if settled.outcome is Outcome.UNSETTLED:
                let_go(services, settled.saga)
    if settled.outcome is Outcome.SYNCED and spec.dimension is None and ctx.items:
        services.tables.learn_dimension(spec, ctx.items[0].embedding)
    return answer(settled, ctx)


def register(services: Services, definition: SagaDefinition) -> None:
    """Make ``definition`` known by its name (recovery finds a saga's definition so);
    another definition already registered under that name is refused."""
    known = services.definitions.get(definition.name)
    if known is not None and known != definition:
        raise ConfigurationError(
            f"another definition is registered as {definition.name!r}", field="definition"
        )
    services.definitions[definition.name] = definition


def let_go(services: Services, saga: SagaRecord) -> None:
    """Release a saga this call could not settle, so that `recover` (this runner's
    too) may take it at once instead of waiting for the lease to expire."""
    try:
        services.log.release(saga)
    except SagaError as exc:  # the error about to be raised says more
        logger.bind(saga_id=saga.saga_id).warning("could not release: {}", exc)


def answer(settled: Settled, ctx: SagaContext) -> SagaResult:
    saga = settled.saga
    if settled.outcome is Outcome.SYNCED:
        return SagaResult(
            saga_id=saga.saga_id,
            state=saga.state,
            vector_ids=tuple(ctx.vector_id(item) for item in ctx.items),
            keys=tuple(item.key for item in ctx.items),
        )
    error = settled.error
    if settled.outcome is Outcome.FAILED:
        raise DataIntegrityError(
            f"dual write failed and was compensated: {_text(error)}",
            saga_id=saga.saga_id,
            cause=error,
        ) from error
    where = "compensating" if settled.compensating else saga.state
    failed = "" if settled.failure is None else f" ({_text(settled.failure)})"
    raise CompensationError(
        f"dual write failed{failed} and could not be settled: {_text(error)}; the saga is "
        f"persisted in {where!r}: run `saga recover`",
        saga_id=saga.saga_id,
        cause=error,
        failure=settled.failure,
    ) from error


def _text(error: SagaError | None) -> str:
    """The error's message, naming the store operation that failed when it is known."""
    if error is None:
        return "unknown error"
    if not isinstance(error, StoreError) or error.operation is None:
        return error.message
    return f"{error.operation} failed: {error.message}"
