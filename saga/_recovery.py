"""Recovery: find every saga a crash (or a failure) left in flight and settle it.

One short, idempotent pass. For each non-terminal saga older than ``older_than`` whose
owner is gone (no lease, an expired lease, or a dead process on this host), claim it by
compare-and-set and drive it on: forward where it can (``pending`` re-applies the
vector step, which is idempotent; ``vector_written`` commits the row from the payload;
``sqlite_committed`` finishes), backward where it must (``compensating``, or
``policy="compensate"`` before the pivot). A transient failure leaves the saga for the
next run with its attempt counted; once ``max_attempts`` is reached, a saga still
before its pivot is compensated instead. A crash during recovery is recoverable the
same way: the claim names this process, whose death frees the saga at once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs

from saga import _log as log
from saga import _rechecks as rechecks
from saga._clock import parse_stamp, stamp
from saga._engine import Outcome, Settled
from saga._errors import ConfigurationError, LeaseLostError, SagaError, ValidationError
from saga._log import logger
from saga._machine import COMPENSATING, SagaDefinition, machine_for
from saga._payload import loads
from saga._ports import Key, SagaRecord, TableSpec
from saga._results import RecoveryReport
from saga._services import Services
from saga._steps import ATOMIC, Grouping, Item, SagaContext, Step, UnitContext
from saga._unit_context import held_ids, unit_context

Policy = Literal["resume", "compensate"]
DEFAULT_MAX_ATTEMPTS = 5
GROUP_SIZE = 256  # sagas claimed in one transaction and sharing Chroma requests


def recover(
    services: Services,
    *,
    older_than: dt.timedelta,
    policy: Policy,
    dry_run: bool,
    max_attempts: int,
    progress: Callable[[], None] | None = None,
) -> RecoveryReport:
    if policy not in ("resume", "compensate"):
        raise ValidationError("must be 'resume' or 'compensate'", field="policy")
    if older_than < dt.timedelta(0):
        raise ValidationError("must not be negative", field="older_than")
    now = services.clock.now()
    cutoff = stamp(now - older_than)
    buckets: dict[str, list[str]] = {
        "resumed": [],
        "compensated": [],
        "unsettled": [],
        "skipped": [],
    }
    errors: dict[str, str] = {}
    candidates = [s for s in services.log.in_flight() if s.created_at <= cutoff]
    takeable = []
    for saga in candidates:
        if not owner_is_gone(saga, services.log.owner, now):
            buckets["skipped"].append(saga.saga_id)
        elif dry_run:
            buckets[_predicted(services, saga, policy)].append(saga.saga_id)
        else:
            takeable.append(saga)
            continue
        if progress is not None:
            progress()
    for start in range(0, len(takeable), GROUP_SIZE):
        group = takeable[start : start + GROUP_SIZE]
        for saga_id, (bucket, error) in _settle_group(services, group, policy, max_attempts):
            buckets[bucket].append(saga_id)
            if error is not None:
                errors[saga_id] = error
            if progress is not None:
                progress()
    rechecked: list[str] = []
    if not dry_run:
        rechecked, failed_rechecks = rechecks.run_due(services)
        errors.update(failed_rechecks)
    return RecoveryReport(
        resumed=len(buckets["resumed"]),
        compensated=len(buckets["compensated"]),
        unsettled=len(buckets["unsettled"]),
        skipped=len(buckets["skipped"]),
        resumed_ids=tuple(buckets["resumed"]),
        compensated_ids=tuple(buckets["compensated"]),
        unsettled_ids=tuple(buckets["unsettled"]),
        skipped_ids=tuple(buckets["skipped"]),
        rechecked=len(rechecked),
        rechecked_ids=tuple(rechecked),
        errors=errors,
        dry_run=dry_run,
    )


def owner_is_gone(saga: SagaRecord, me: str, now: dt.datetime) -> bool:
    """True if nobody live holds the saga: no lease, an expired one, or a dead local pid."""
    if saga.lease_owner is None or saga.lease_expires_at is None:
        return True
    if saga.lease_owner == me:
        return False  # this very runner is driving it (another thread)
    if parse_stamp(saga.lease_expires_at) <= now:
        return True
    return owner_process_dead(saga.lease_owner)


def owner_process_dead(owner: str) -> bool:
    """Whether ``host:pid:token`` names a process of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _predicted(services: Services, saga: SagaRecord, policy: Policy) -> str:
    definition = services.definitions.get(saga.definition)
    if definition is None:
        return "unsettled"
    machine = machine_for(definition)
    if saga.state == COMPENSATING or (
        policy == "compensate" and machine.can_compensate(saga.state)
    ):
        return "compensated"
    return "resumed"


def _settle_group(
    services: Services, group: list[SagaRecord], policy: Policy, max_attempts: int
) -> list[tuple[str, tuple[str, str | None]]]:
    """Claim a group in one transaction, apply their vector steps in shared Chroma
    requests where the steps allow it, then drive each saga on its own."""
    outcomes: list[tuple[str, tuple[str, str | None]]] = []
    try:
        claimed = services.log.claim_many(group)
    except SagaError as exc:
        return [(saga.saga_id, ("unsettled", str(exc))) for saga in group]
    ready: list[tuple[SagaDefinition, SagaRecord, SagaContext, bool]] = []
    specs: dict[str, TableSpec] = {}
    for original, taken in zip(group, claimed, strict=True):
        if taken is None:
            outcomes.append((original.saga_id, ("skipped", None)))
            continue
        try:
            definition = _definition(services, taken)
            saga, ctx = _context(services, taken, specs)
        except SagaError as exc:
            _release(services, taken)
            outcomes.append((taken.saga_id, ("unsettled", str(exc))))
            continue
        machine = machine_for(definition)
        unsealed = isinstance(ctx, UnitContext) and not ctx.sealed  # its block never ended
        backward = (
            policy == "compensate"
            or unsealed
            or (saga.attempts >= max_attempts and machine.can_compensate(saga.state))
        )
        ready.append((definition, saga, ctx, backward))
    _apply_remote_steps_together(ready)
    outcomes.extend(
        (saga.saga_id, _drive_one(services, definition, saga, ctx, backward))
        for definition, saga, ctx, backward in ready
    )
    return outcomes


def _definition(services: Services, saga: SagaRecord) -> SagaDefinition:
    definition = services.definitions.get(saga.definition)
    if definition is None:
        raise SagaError(
            f"unknown saga definition {saga.definition!r}: register() it (from the CLI: "
            "--definitions MODULE)",
            saga_id=saga.saga_id,
        )
    return definition


def _apply_remote_steps_together(
    ready: list[tuple[SagaDefinition, SagaRecord, SagaContext, bool]],
) -> None:
    """Recovery's fast path: sagas whose next step is the same remote step with a
    ``forward_many`` share its requests (10,000 one-vector upserts are slow). Best
    effort: if it fails, each saga's own drive applies its step and handles the error.
    """
    batches: dict[Step, list[SagaContext]] = {}
    for definition, saga, ctx, backward in ready:
        if backward or saga.state == COMPENSATING:
            continue
        step = machine_for(definition).step_from(saga.state)
        if step is not None and not step.local and isinstance(step, Grouping):
            batches.setdefault(step, []).append(ctx)
    for step, contexts in batches.items():
        assert isinstance(step, Grouping)  # only grouping steps were collected
        try:
            step.forward_many(contexts)
        except Exception as exc:
            logger.warning("grouped {} failed, sagas go one by one: {}", step.name, exc)
            continue
        for ctx in contexts:
            ctx.applied_ahead = True


def _drive_one(
    services: Services,
    definition: SagaDefinition,
    saga: SagaRecord,
    ctx: SagaContext,
    backward: bool,
) -> tuple[str, str | None]:
    keys: list[Key | None] = [item.key for item in ctx.items]
    if isinstance(ctx, UnitContext) and not ctx.sealed:
        keys = [key for _table, key in ctx.reserved]
    try:
        with log.context(saga.saga_id, _tables(ctx), keys):
            settled = services.engine.drive(
                definition, saga, ctx, compensate=backward, leave_transient=True
            )
    except LeaseLostError as exc:
        return "skipped", str(exc)
    except SagaError as exc:
        _release(services, saga)
        return "unsettled", str(exc)
    logger.bind(saga_id=saga.saga_id).info("recovered saga: {}", settled.outcome.value)
    return _bucket(services, settled)


def _tables(ctx: SagaContext) -> str:
    """The table a saga writes, or an atomic unit's tables."""
    if isinstance(ctx, UnitContext):
        names = [part.spec.table for part in ctx.parts] or [t for t, _ in ctx.reserved]
        return ",".join(dict.fromkeys(names))
    return ctx.spec.table


def _bucket(services: Services, settled: Settled) -> tuple[str, str | None]:
    if settled.outcome is Outcome.SYNCED:
        return "resumed", None
    if settled.outcome is Outcome.FAILED:
        return "compensated", None
    _release(services, settled.saga)
    return "unsettled", None if settled.error is None else str(settled.error)


def _release(services: Services, saga: SagaRecord) -> None:
    """Free a saga this run could not settle, so the next run need not wait a lease."""
    try:
        services.log.release(saga)
    except SagaError as exc:
        logger.bind(saga_id=saga.saga_id).warning("could not release: {}", exc)


def _check_keys(services: Services, saga: SagaRecord, spec: TableSpec, items: list[Item]) -> None:
    """The payload must name exactly the keys the saga holds (checked in ``pending``):
    a payload changed behind the library's back is left for an operator, not run."""
    held = services.log.vector_ids_of(saga.saga_id)
    keys = [item.key for item in items]
    if any(isinstance(k, bool) or not isinstance(k, int | str) for k in keys) or (
        {spec.vector_id(k) for k in keys if k is not None} != held
    ):
        raise SagaError("payload names keys the saga does not hold", saga_id=saga.saga_id)


def _context(
    services: Services, saga: SagaRecord, specs: dict[str, TableSpec]
) -> tuple[SagaRecord, SagaContext]:
    loaded = services.log.load(saga.saga_id)
    record, payload = loaded if loaded is not None else (None, None)
    if record is None or payload is None:
        raise SagaError("saga has no payload to resume from", saga_id=saga.saga_id)
    saga = attrs.evolve(saga, compensating_from=record.compensating_from)
    if saga.definition == ATOMIC:
        unit = unit_context(
            saga.saga_id,
            payload,
            services.catalog.tracked,
            services.vectors,
            progress=set(record.progress),
        )
        if held_ids(unit) != services.log.vector_ids_of(saga.saga_id):
            raise SagaError("payload names keys the saga does not hold", saga_id=saga.saga_id)
        return saga, unit
    spec = specs.get(saga.table) or services.catalog.tracked(saga.table)
    if spec is None:
        raise ConfigurationError(f"table {saga.table!r} is no longer tracked", field="table")
    specs[saga.table] = spec
    try:
        op, items = loads(payload)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SagaError(f"unreadable payload: {exc}", saga_id=saga.saga_id) from exc
    _check_keys(services, saga, spec, items)
    return saga, SagaContext(
        saga_id=saga.saga_id,
        op=op,
        spec=spec,
        items=items,
        vectors=services.vectors,
        progress=set(record.progress),
    )
