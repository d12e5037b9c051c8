"""The engine: drives one saga through its definition, persisting every move.

The same ``drive`` serves a live call and recovery; only what happens on a failure
differs (a live call always settles the saga before it answers; recovery may leave a
transiently failing saga for its next run). Every move is checked against the
definition's ``transitions`` machine before the saga log persists it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import Any

import attrs

from saga import failpoints
from saga._begin import begin
from saga._clock import Clock, parse_stamp, stamp
from saga._config import LeasePolicy
from saga._errors import LeaseLostError, SagaError
from saga._log import logger
from saga._machine import (
    COMPENSATE,
    COMPENSATED,
    COMPENSATING,
    FAILED,
    FINISH,
    SYNCED,
    TERMINAL,
    SagaDefinition,
    SagaMachine,
    machine_for,
)
from saga._payload import dumps_context
from saga._ports import (
    Move,
    Recheck,
    SagaLog,
    SagaRecord,
    Synced,
    TableSpec,
    VectorStore,
)
from saga._steps import Item, SagaContext, Step, Syncing, UnitContext


class Outcome(enum.Enum):
    """How a drive ended: ``synced``, ``failed`` (compensated: neither store changed),
    or ``unsettled`` (left in flight: a compensation failed, or a transient error)."""

    SYNCED = "synced"
    FAILED = "failed"
    UNSETTLED = "unsettled"


@attrs.frozen
class Settled:
    """Where a drive ended: the outcome, the saga as persisted, and why if not synced."""

    outcome: Outcome
    saga: SagaRecord
    error: SagaError | None = None
    compensating: bool = False  # the saga is persisted in `compensating`
    failure: SagaError | None = None  # what made it compensate, when ``error`` stopped that


def as_saga_error(exc: BaseException) -> SagaError:
    if isinstance(exc, SagaError):
        return exc
    return SagaError(f"{type(exc).__name__}: {exc}")


# Seconds after a compensation before its late-write re-check is due: a request that
# outlived its call's deadline (20 s by default) has landed by then or will not.
RECHECK_GRACE = 60.0


class Engine:
    """Runs sagas against one saga log and one vector store."""

    def __init__(
        self,
        log: SagaLog,
        vectors: VectorStore,
        clock: Clock,
        lease: LeasePolicy,
        *,
        step_budget: float = 0.0,
    ) -> None:
        """``step_budget``: the most one remote step may take, in seconds (a bounded
        write and its read-back); the lease is renewed before a step if less is left."""
        self.log = log
        self.vectors = vectors
        self.clock = clock
        self.lease = lease
        self.step_budget = step_budget

    def begin(
        self,
        definition: SagaDefinition,
        spec: TableSpec,
        op: str,
        items: list[Item],
        saga_id: str | None = None,
    ) -> tuple[SagaRecord, SagaContext]:
        """T1: check preconditions, record before-images and intent as ``pending``
        (see ``saga._begin``)."""
        return begin(self.log, self.vectors, definition, spec, op, items, saga_id)

    def drive(
        self,
        definition: SagaDefinition,
        saga: SagaRecord,
        ctx: SagaContext,
        *,
        compensate: bool = False,
        leave_transient: bool = False,
    ) -> Settled:
        """Move the saga until it is terminal or cannot go on.

        ``compensate``: undo it if it is still before its pivot (recovery's
        ``policy="compensate"``). ``leave_transient``: a transient forward failure
        leaves the saga in flight for a later run instead of compensating it.
        """
        machine = machine_for(definition)
        cause: SagaError | None = None
        if compensate and saga.state != COMPENSATING and machine.can_compensate(saga.state):
            saga, unsettled = self._enter_compensation(machine, saga, "recovery policy: compensate")
            if unsettled is not None:
                return unsettled
        while saga.state not in TERMINAL:
            if saga.state == COMPENSATING:
                return self._compensate(machine, saga, ctx, cause)
            step = machine.step_from(saga.state)
            try:
                saga = self._forward(machine, saga, ctx, step)
            except LeaseLostError:
                raise
            except Exception as exc:  # every failure is settled, never logged away
                cause = as_saga_error(exc)
                cause.saga_id = cause.saga_id or saga.saga_id
                logger.bind(saga_id=saga.saga_id).warning("step failed: {}", cause)
                done, ctx.unrecorded = ctx.unrecorded, ()
                reached = _checked_moves(machine, saga.state, done)[-1][1] if done else saga.state
                if not machine.can_compensate(reached) or (leave_transient and cause.transient):
                    self._note_error(saga, cause)
                    return Settled(Outcome.UNSETTLED, saga, cause)
                saga, unsettled = self._enter_compensation(
                    machine, saga, str(cause), cause, done=done
                )
                if unsettled is not None:
                    return unsettled
        outcome = Outcome.SYNCED if saga.state == SYNCED else Outcome.FAILED
        return Settled(outcome, saga, cause)

    # -- forward ----------------------------------------------------------------------

    def _forward(
        self, machine: SagaMachine, saga: SagaRecord, ctx: SagaContext, step: Step | None
    ) -> SagaRecord:
        if step is None:  # every step done (a post-pivot crash): only `finish` is left
            return self._persist(machine, saga, ctx, [FINISH])
        if not step.local and ctx.applied_ahead:
            return self._fold_applied(machine, saga, ctx, step)
        if step.local:
            events = [step.name]
            if machine.step_from(machine.next_state(saga.state, step.name)) is None:
                events.append(FINISH)  # fold T4 into the last step's transaction
            return self._persist(machine, saga, ctx, events, local=step)
        saga = self._renew_if_due(saga)
        current = saga
        ctx.save_progress = lambda applied: self.log.save_progress(current, applied)
        failpoints.hit(f"before:{step.name}")
        step.forward(ctx, None)
        failpoints.hit(f"after:{step.name}")
        return self._fold_applied(machine, saga, ctx, step)

    def _fold_applied(
        self, machine: SagaMachine, saga: SagaRecord, ctx: SagaContext, step: Step
    ) -> SagaRecord:
        """A remote step just applied (by this call, or by a grouped request in
        recovery): record it in the next local step's transaction instead of a commit of
        its own, so a dual write commits twice (intent, then row with every state after
        it). A crash before that commit leaves the saga where it was, whose remote step
        is then treated as possibly applied: re-applying it is idempotent, and
        compensating it undoes it. If the local step fails, its transaction rolls back
        and the saga compensates from where it was, the remote step included."""
        ctx.applied_ahead = False
        following = machine.step_from(machine.next_state(saga.state, step.name))
        if following is None:
            return self._persist(machine, saga, ctx, [step.name, FINISH])
        if not following.local:
            return self._persist(machine, saga, ctx, [step.name])
        events = [step.name, following.name]
        after = machine.next_state(machine.next_state(saga.state, step.name), following.name)
        if machine.step_from(after) is None:
            events.append(FINISH)
        ctx.unrecorded = (step.name,)
        saga = self._persist(machine, saga, ctx, events, local=following)
        ctx.unrecorded = ()
        return saga

    def _persist(
        self,
        machine: SagaMachine,
        saga: SagaRecord,
        ctx: SagaContext,
        events: Sequence[str],
        *,
        local: Step | None = None,
    ) -> SagaRecord:
        """Persist ``events`` in one transaction, with the ``local`` step's work in it."""
        moves = _checked_moves(machine, saga.state, events)
        synced = _synced(machine.definition, ctx) if moves[-1][1] == SYNCED else None
        with self.log.unit(saga.saga_id) as unit:
            if local is not None:
                failpoints.hit(f"before:{local.name}")
                local.forward(ctx, unit)
                failpoints.hit(f"during:{local.name}")
            saga = unit.advance(saga, moves, synced=synced)
        for _event, dest in moves:
            failpoints.hit(f"after:{dest}")
        return saga

    def _renew_if_due(self, saga: SagaRecord) -> SagaRecord:
        """Renew the lease before a remote step if less than half of it is left, or
        less than the step may take."""
        if saga.lease_expires_at is None:
            return saga
        left = (parse_stamp(saga.lease_expires_at) - self.clock.now()).total_seconds()
        due = left < max(self.lease.ttl / 2, self.step_budget)
        return self.log.renew(saga) if due else saga

    # -- backward ---------------------------------------------------------------------

    def _enter_compensation(
        self,
        machine: SagaMachine,
        saga: SagaRecord,
        reason: str,
        cause: SagaError | None = None,
        *,
        done: Sequence[str] = (),
    ) -> tuple[SagaRecord, Settled | None]:
        """Persist ``compensating`` (after ``done``: steps applied but not yet recorded,
        so the history shows what ran). If even that fails, the saga stays where it was
        and nothing is undone (undoing unrecorded would mislead recovery)."""
        moves = _checked_moves(machine, saga.state, [*done, COMPENSATE])
        try:
            entered = self.log.advance(saga, moves, error=reason)
        except LeaseLostError:
            raise
        except Exception as exc:
            error = as_saga_error(exc)
            error.saga_id = saga.saga_id
            return saga, Settled(Outcome.UNSETTLED, saga, cause or error)
        origin = moves[-2][1] if done else saga.state
        return attrs.evolve(entered, compensating_from=origin), None

    def _compensate(
        self,
        machine: SagaMachine,
        saga: SagaRecord,
        ctx: SagaContext,
        cause: SagaError | None,
    ) -> Settled:
        for step in reversed(_steps_to_undo(machine, saga)):
            try:
                failpoints.hit(f"compensate:{step.name}")
                step.compensate(ctx)
            except Exception as exc:
                error = as_saga_error(exc)
                error.saga_id = saga.saga_id
                logger.bind(saga_id=saga.saga_id).error("compensation failed: {}", error)
                self._note_error(saga, error)
                return Settled(Outcome.UNSETTLED, saga, error, compensating=True, failure=cause)
        moves = _checked_moves(machine, saga.state, [COMPENSATED])
        try:
            saga = self.log.advance(saga, moves, recheck=self._recheck(saga, ctx))
        except LeaseLostError:
            raise
        except Exception as exc:
            error = as_saga_error(exc)
            error.saga_id = saga.saga_id
            return Settled(Outcome.UNSETTLED, saga, error, compensating=True, failure=cause)
        logger.bind(saga_id=saga.saga_id).info("saga compensated")
        return Settled(Outcome.FAILED, saga, cause)

    def _recheck(self, saga: SagaRecord, ctx: SagaContext) -> Recheck | None:
        """A late-write re-check for a compensated saga whose remote write may still be
        on its way (a request sent and never answered; in recovery, unknown): a remote
        store only, since in-process calls end before they return."""
        if not self.vectors.remote or not (ctx.touched is None or ctx.late_possible):
            return None
        if isinstance(ctx, UnitContext) and not ctx.sealed:
            return None  # an unsealed unit sent nothing
        due = self.clock.now() + dt.timedelta(seconds=RECHECK_GRACE)
        return Recheck(
            saga_id=saga.saga_id,
            definition=saga.definition,
            table=saga.table,
            payload=dumps_context(ctx),
            due_at=stamp(due),
        )

    def _note_error(self, saga: SagaRecord, error: SagaError) -> None:
        try:
            self.log.record_error(saga, str(error))
        except SagaError as exc:  # the log is unwritable: the caller still gets `error`
            logger.bind(saga_id=saga.saga_id).error("could not record error: {}", exc)


def _checked_moves(machine: SagaMachine, source: str, events: Sequence[str]) -> list[Move]:
    moves: list[Move] = []
    for event in events:
        dest = machine.next_state(source, event)
        moves.append((event, dest))
        source = dest
    return moves


def _steps_to_undo(machine: SagaMachine, saga: SagaRecord) -> list[Step]:
    """Steps that ran or may have run (the one in flight included), before the pivot."""
    steps = list(machine.definition.steps[: machine.definition.pivot_index])
    origin = saga.compensating_from
    if origin is None or origin == COMPENSATING:
        return steps
    return steps[: machine.position(origin) + 1]


def _synced(definition: SagaDefinition, ctx: SagaContext) -> Synced:
    """What the steps say each vector holds once the saga is synced."""
    synced: dict[str, Any] = {}
    for step in definition.steps:
        if isinstance(step, Syncing):
            synced.update(step.synced(ctx))
    return synced


FAILED_STATES = frozenset({FAILED, COMPENSATING})
