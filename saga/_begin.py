"""T1 of every saga: preconditions checked, before-images and intent recorded as ``pending``.

Steps read what they need from remote stores first (``Preloading``), outside SQLite's
write lock, so a slow Chroma never keeps other writers out; then one write transaction
assigns the keys SQLite assigns, refuses conflicts, checks that what was read is still
current, lets the steps check preconditions and record before-images, and records the
intent with its payload.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from saga import failpoints
from saga._errors import SagaConflictError
from saga._log import logger
from saga._machine import SagaDefinition
from saga._payload import dumps, dumps_context
from saga._ports import LogUnit, SagaLog, SagaRecord, TableSpec, VectorStore
from saga._steps import Item, Preloading, SagaContext, UnitContext, Versions

PRELOAD_ATTEMPTS = 3


class _StaleRead(Exception):
    """A vector read before ``pending`` was touched by another saga meanwhile."""


def _shown(keys: Sequence[Any]) -> str:
    return ", ".join(repr(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")


def begin(
    log: SagaLog,
    vectors: VectorStore,
    definition: SagaDefinition,
    spec: TableSpec,
    op: str,
    items: list[Item],
    saga_id: str | None = None,
) -> tuple[SagaRecord, SagaContext]:
    """T1: check preconditions, record before-images and intent as ``pending``.

    Steps read what they need from remote stores first (``Preloading``), outside
    SQLite's write lock, so a slow Chroma never keeps other writers out. If a
    vector read that way was touched by another saga before ``pending`` could be
    recorded, the reads are made again (``PRELOAD_ATTEMPTS`` in all)."""
    saga_id = saga_id or str(uuid.uuid4())
    ctx = SagaContext(
        saga_id=saga_id, op=op, spec=spec, items=items, vectors=vectors, touched=set()
    )
    # no saga id in the pending unit's errors: it does not exist yet
    saga = _pending(log, [(definition, ctx)], None, lambda u: _record_pending(definition, ctx, u))
    if saga is None:
        keys = [item.key for item in items]
        raise SagaConflictError(
            f"the vectors of keys {_shown(keys)} kept changing while their before-images "
            f"were read ({PRELOAD_ATTEMPTS} tries)",
            key=keys[0] if len(keys) == 1 else None,
        )
    logger.bind(saga_id=saga_id).debug("{} saga pending ({} items)", op, len(items))
    return saga, ctx


def begin_unit(
    log: SagaLog,
    definitions: Mapping[str, SagaDefinition],
    definition: SagaDefinition,
    ctx: UnitContext,
    held: SagaRecord | None,
) -> SagaRecord:
    """T1 of an atomic unit: ``begin`` for each part (by the built-in definition of its
    operation), all recorded in one ``pending`` transaction. ``held``: the unit's saga,
    already ``pending`` since it reserved keys."""
    parts = [(definitions[part.op], part) for part in ctx.parts]

    def record(unit: LogUnit) -> SagaRecord:
        entries: list[tuple[TableSpec, str, Any]] = []
        for steps, part in parts:
            _prepare(steps, part, unit, own=ctx.saga_id)
            entries.extend((part.spec, part.op, item.known_key) for item in part.items)
        return unit.record_unit(
            saga_id=ctx.saga_id,
            definition=definition.name,
            entries=entries,
            payload=dumps_context(ctx),
            table=ctx.spec.table,
            held=held,
        )

    saga = _pending(log, parts, ctx.saga_id, record)
    if saga is None:
        raise SagaConflictError(
            f"the vectors of the unit kept changing while their before-images were read "
            f"({PRELOAD_ATTEMPTS} tries)"
        )
    logger.bind(saga_id=ctx.saga_id).debug("atomic unit pending ({} parts)", len(ctx.parts))
    return saga


def _pending(
    log: SagaLog,
    parts: Sequence[tuple[SagaDefinition, SagaContext]],
    own: str | None,
    record: Callable[[LogUnit], SagaRecord],
) -> SagaRecord | None:
    """Preload each part outside the write lock, then ``record`` ``pending`` in one
    transaction; if a vector read was touched by another saga meanwhile, read again
    (``PRELOAD_ATTEMPTS`` in all; None once they are spent)."""
    for attempt in range(PRELOAD_ATTEMPTS):
        for definition, ctx in parts:
            keys = [item.key for item in ctx.items]
            versions = _versions(log, definition, ctx, keys, precheck=attempt == 0, own=own)
            for step in definition.steps:
                if isinstance(step, Preloading):
                    step.preload(ctx, versions)
        failpoints.hit("after:preload")
        try:
            with log.unit() as unit:
                saga = record(unit)
        except _StaleRead:
            logger.bind(saga_id=parts[0][1].saga_id).debug("a vector changed while read: again")
            continue
        failpoints.hit("after:pending")
        return saga
    return None


def _versions(
    log: SagaLog,
    definition: SagaDefinition,
    ctx: SagaContext,
    keys: list[Any],
    *,
    precheck: bool,
    own: str | None = None,
) -> Versions:
    """What a preload calls before it reads a remote store: the vectors' versions, and
    (in ``ctx.logged``) the vectors as the log keeps them, which spares most reads of the
    remote store. The first time, what SQLite alone refuses (a conflict, a missing row)
    is refused first, naming the key as inside `pending`, so Chroma is not read for
    nothing."""

    def versions(vector_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        with log.reading() as unit:  # one read transaction for all three
            if precheck:
                unit.refuse_conflicts(ctx.spec, keys, own)
                for step in definition.steps:
                    if step.local:
                        step.prepare(ctx, unit)
            ctx.logged = unit.synced_vectors(vector_ids)
            return unit.vector_versions(vector_ids)

    return versions


def _record_pending(definition: SagaDefinition, ctx: SagaContext, unit: LogUnit) -> SagaRecord:
    """Inside the ``pending`` transaction: ``_prepare``, then record the intent."""
    keys = _prepare(definition, ctx, unit)
    return unit.record_pending(
        saga_id=ctx.saga_id,
        definition=definition.name,
        spec=ctx.spec,
        op=ctx.op,
        keys=keys,
        payload=dumps(ctx.op, ctx.items),
    )


def _prepare(
    definition: SagaDefinition, ctx: SagaContext, unit: LogUnit, own: str | None = None
) -> list[Any]:
    """Inside the ``pending`` transaction: assign the keys SQLite assigns, refuse
    conflicts (with sagas other than ``own``), check that preloaded reads are current,
    let the steps check preconditions and record before-images. Returns the keys."""
    unassigned = [item for item in ctx.items if item.key is None]
    if unassigned:  # keys SQLite assigns: reserved here, inside `pending`
        given = [item.key for item in ctx.items if item.key is not None]
        for item, key in zip(
            unassigned, unit.assign_keys(ctx.spec, len(unassigned), given), strict=True
        ):
            item.key = key
    keys = [item.known_key for item in ctx.items]
    unit.refuse_conflicts(ctx.spec, keys, own)
    if ctx.observed is not None and unit.vector_versions(list(ctx.observed)) != ctx.observed:
        raise _StaleRead
    # Local preconditions first (the row exists, or not): a refused write then
    # names the key before a step looks at what it read from Chroma.
    for step in sorted(definition.steps, key=lambda s: not s.local):
        step.prepare(ctx, unit)
    return keys
