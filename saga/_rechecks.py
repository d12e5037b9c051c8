"""Late-write re-checks: undo once more what a compensated saga's lost write did.

A request Chroma received but never answered in time may still be applied after the
saga that sent it gave up and compensated (Chroma has no conditional writes). So a
compensation that followed such a write schedules a re-check (``saga_rechecks``,
``RECHECK_GRACE`` seconds later); recovery runs the saga's remote compensations again
once it is due. Compensations are idempotent (delete by id, upsert of the before-image),
and the re-check only touches vectors still in that saga's hands: under SQLite's write
lock, each vector's sync state must still name the saga (no later saga wrote the key).
"""

from __future__ import annotations

from saga import _log as log
from saga._clock import stamp
from saga._errors import SagaError
from saga._log import logger
from saga._payload import loads
from saga._ports import Recheck
from saga._services import Services
from saga._steps import ATOMIC, SagaContext, UnitContext
from saga._unit_context import unit_context


def run_due(services: Services) -> tuple[list[str], dict[str, str]]:
    """Every re-check that is due: the saga ids done, and the errors of those that could
    not be done now (left for the next run)."""
    done: list[str] = []
    errors: dict[str, str] = {}
    for recheck in services.log.due_rechecks(stamp(services.clock.now())):
        try:
            with log.context(recheck.saga_id, recheck.table):
                _run_one(services, recheck)
        except (SagaError, ValueError, KeyError, TypeError) as exc:
            errors[recheck.saga_id] = f"late-write re-check: {exc}"
            logger.bind(saga_id=recheck.saga_id).warning("re-check failed: {}", exc)
            continue
        done.append(recheck.saga_id)
    return done, errors


def _run_one(services: Services, recheck: Recheck) -> None:
    definition = services.definitions.get(recheck.definition)
    with services.log.unit(recheck.saga_id) as unit:  # no saga may start on these keys
        ctx = _context(services, recheck)
        if definition is not None and ctx is not None:
            parts = ctx.parts if isinstance(ctx, UnitContext) else [ctx]
            for part in parts:
                ids = [part.vector_id(item) for item in part.items]
                versions = unit.vector_versions(ids)
                part.items = [
                    item
                    for item, vid in zip(part.items, ids, strict=True)
                    if vid in versions and versions[vid][0] == recheck.saga_id
                ]
            remote = [s for s in definition.steps[: definition.pivot_index] if not s.local]
            for step in reversed(remote if any(part.items for part in parts) else []):
                step.compensate(ctx)
        unit.drop_recheck(recheck.saga_id)
    logger.bind(saga_id=recheck.saga_id).info("late-write re-check done")


def _context(services: Services, recheck: Recheck) -> SagaContext | None:
    """The compensated saga's context from the re-check's payload (None: its table is
    no longer tracked, so there is nothing to re-check)."""
    if recheck.definition == ATOMIC:
        return unit_context(
            recheck.saga_id, recheck.payload, services.catalog.tracked, services.vectors
        )
    spec = services.catalog.tracked(recheck.table)
    if spec is None:
        return None
    op, items = loads(recheck.payload)
    return SagaContext(
        saga_id=recheck.saga_id, op=op, spec=spec, items=items, vectors=services.vectors
    )
