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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
from loguru import logger

from saga._clock import parse_stamp, stamp
from saga._engine import Outcome, Settled
from saga._errors import ConfigurationError, LeaseLostError, SagaError, ValidationError
from saga._machine import COMPENSATING, SagaDefinition, machine_for
from saga._payload import loads
from saga._ports import SagaRecord, TableSpec
from saga._results import RecoveryReport
from saga._steps import SagaContext

if TYPE_CHECKING:
    from saga._runner import SagaRunner

Policy = Literal["resume", "compensate"]
DEFAULT_MAX_ATTEMPTS = 5
GROUP_SIZE = 256  # sagas claimed in one transaction and sharing Chroma requests


def recover(
    runner: SagaRunner,
    *,
    older_than: dt.timedelta,
    policy: Policy,
    dry_run: bool,
    max_attempts: int,
    progress: Any = None,
) -> RecoveryReport:
    if policy not in ("resume", "compensate"):
        raise ValidationError("must be 'resume' or 'compensate'", field="policy")
    if older_than < dt.timedelta(0):
        raise ValidationError("must not be negative", field="older_than")
    now = runner.clock.now()
    cutoff = stamp(now - older_than)
    buckets: dict[str, list[str]] = {"resumed": [], "compensated": [], "failed": [], "skipped": []}
    errors: dict[str, str] = {}
    candidates = [s for s in runner.log.in_flight() if s.created_at <= cutoff]
    takeable = []
    for saga in candidates:
        if not owner_is_gone(saga, runner.log.owner, now):
            buckets["skipped"].append(saga.saga_id)
        elif dry_run:
            buckets[_predicted(runner, saga, policy)].append(saga.saga_id)
        else:
            takeable.append(saga)
            continue
        if progress is not None:
            progress()
    for start in range(0, len(takeable), GROUP_SIZE):
        group = takeable[start : start + GROUP_SIZE]
        for saga_id, (bucket, error) in _settle_group(runner, group, policy, max_attempts):
            buckets[bucket].append(saga_id)
            if error is not None:
                errors[saga_id] = error
            if progress is not None:
                progress()
    return RecoveryReport(
        resumed=len(buckets["resumed"]),
        compensated=len(buckets["compensated"]),
        failed=len(buckets["failed"]),
        skipped=len(buckets["skipped"]),
        resumed_ids=tuple(buckets["resumed"]),
        compensated_ids=tuple(buckets["compensated"]),
        failed_ids=tuple(buckets["failed"]),
        skipped_ids=tuple(buckets["skipped"]),
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


def _predicted(runner: SagaRunner, saga: SagaRecord, policy: Policy) -> str:
    definition = runner.definitions.get(saga.definition)
    if definition is None:
        return "failed"
    machine = machine_for(definition)
    if saga.state == COMPENSATING or (
        policy == "compensate" and machine.can_compensate(saga.state)
    ):
        return "compensated"
    return "resumed"


def _settle_group(
    runner: SagaRunner, group: list[SagaRecord], policy: Policy, max_attempts: int
) -> list[tuple[str, tuple[str, str | None]]]:
    """Claim a group in one transaction, apply their vector steps in shared Chroma
    requests where the steps allow it, then drive each saga on its own."""
    outcomes: list[tuple[str, tuple[str, str | None]]] = []
    try:
        claimed = runner.log.claim_many(group)
    except SagaError as exc:
        return [(saga.saga_id, ("failed", str(exc))) for saga in group]
    ready: list[tuple[SagaDefinition, SagaRecord, SagaContext, bool]] = []
    specs: dict[str, TableSpec] = {}
    for original, taken in zip(group, claimed, strict=True):
        if taken is None:
            outcomes.append((original.saga_id, ("skipped", None)))
            continue
        try:
            definition = _definition(runner, taken)
            saga, ctx = _context(runner, taken, specs)
        except SagaError as exc:
            _release(runner, taken)
            outcomes.append((taken.saga_id, ("failed", str(exc))))
            continue
        machine = machine_for(definition)
        backward = policy == "compensate" or (
            saga.attempts >= max_attempts and machine.can_compensate(saga.state)
        )
        ready.append((definition, saga, ctx, backward))
    _apply_remote_steps_together(ready)
    outcomes.extend(
        (saga.saga_id, _drive_one(runner, definition, saga, ctx, backward))
        for definition, saga, ctx, backward in ready
    )
    return outcomes


def _definition(runner: SagaRunner, saga: SagaRecord) -> SagaDefinition:
    definition = runner.definitions.get(saga.definition)
    if definition is None:
        raise SagaError(
            f"unknown saga definition {saga.definition!r}: register() it", saga_id=saga.saga_id
        )
    return definition


def _apply_remote_steps_together(
    ready: list[tuple[SagaDefinition, SagaRecord, SagaContext, bool]],
) -> None:
    """Recovery's fast path: sagas whose next step is the same remote step with a
    ``forward_many`` share its requests (10,000 one-vector upserts are slow). Best
    effort: if it fails, each saga's own drive applies its step and handles the error.
    """
    batches: dict[Any, list[SagaContext]] = {}
    for definition, saga, ctx, backward in ready:
        if backward or saga.state == COMPENSATING:
            continue
        step = machine_for(definition).step_from(saga.state)
        if step is not None and not step.local and hasattr(step, "forward_many"):
            batches.setdefault(step, []).append(ctx)
    for step, contexts in batches.items():
        try:
            step.forward_many(contexts)
        except Exception as exc:
            logger.warning("grouped {} failed, sagas go one by one: {}", step.name, exc)
            continue
        for ctx in contexts:
            ctx.applied_ahead = True


def _drive_one(
    runner: SagaRunner,
    definition: SagaDefinition,
    saga: SagaRecord,
    ctx: SagaContext,
    backward: bool,
) -> tuple[str, str | None]:
    try:
        settled = runner.engine.drive(
            definition, saga, ctx, compensate=backward, leave_transient=True
        )
    except LeaseLostError as exc:
        return "skipped", str(exc)
    except SagaError as exc:
        _release(runner, saga)
        return "failed", str(exc)
    logger.bind(saga_id=saga.saga_id).info("recovered saga: {}", settled.outcome.value)
    return _bucket(runner, settled)


def _bucket(runner: SagaRunner, settled: Settled) -> tuple[str, str | None]:
    if settled.outcome is Outcome.SYNCED:
        return "resumed", None
    if settled.outcome is Outcome.FAILED:
        return "compensated", None
    _release(runner, settled.saga)
    return "failed", None if settled.error is None else str(settled.error)


def _release(runner: SagaRunner, saga: SagaRecord) -> None:
    """Free a saga this run could not settle, so the next run need not wait a lease."""
    try:
        runner.log.release(saga)
    except SagaError as exc:
        logger.bind(saga_id=saga.saga_id).warning("could not release: {}", exc)


def _check_keys(runner: SagaRunner, saga: SagaRecord, spec: TableSpec, items: list[Any]) -> None:
    """The payload must name exactly the keys the saga holds (checked in ``pending``):
    a payload changed behind the library's back is left for an operator, not run."""
    held = runner.log.vector_ids_of(saga.saga_id)
    keys = [item.key for item in items]
    if any(isinstance(k, bool) or not isinstance(k, int | str) for k in keys) or (
        {spec.vector_id(k) for k in keys} != held
    ):
        raise SagaError("payload names keys the saga does not hold", saga_id=saga.saga_id)


def _context(
    runner: SagaRunner, saga: SagaRecord, specs: dict[str, TableSpec]
) -> tuple[SagaRecord, SagaContext]:
    loaded = runner.log.load(saga.saga_id)
    record, payload = loaded if loaded is not None else (None, None)
    if record is None or payload is None:
        raise SagaError("saga has no payload to resume from", saga_id=saga.saga_id)
    spec = specs.get(saga.table) or runner.log.tracked(saga.table)
    if spec is None:
        raise ConfigurationError(f"table {saga.table!r} is no longer tracked", field="table")
    specs[saga.table] = spec
    try:
        op, items = loads(payload)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SagaError(f"unreadable payload: {exc}", saga_id=saga.saga_id) from exc
    _check_keys(runner, saga, spec, items)
    saga = attrs.evolve(saga, compensating_from=record.compensating_from)
    return saga, SagaContext(
        saga_id=saga.saga_id,
        op=op,
        spec=spec,
        items=items,
        vectors=runner.vectors,
        progress=set(record.progress),
    )
