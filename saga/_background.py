"""Recovery inside the application: ``SagaRunner.open(..., recover_every=SECONDS)``.

A daemon thread runs one recovery pass (``saga._recovery.recover``) at once, then one
every ``SECONDS``, until the runner closes. The first pass runs in the thread, so
``open`` does not wait for it (nor for Chroma): the sagas a dead run left in flight are
settled moments after the runner opens, while the application already writes.

What a pass touches is exactly what ``saga recover`` touches: in-flight sagas whose
owner is gone (no lease, an expired lease, or a dead process on this host). A saga of
this runner is never taken, whichever thread drives it and even if its lease has run
out (``owner_is_gone`` compares the lease's owner with this runner's first); another
live process's saga only once its lease has expired. The parameters are fixed and
modest: ``policy="resume"`` (forward where it can, backward where it must),
``older_than=0`` (dead owners are found by their lease and pid, not by age) and the
default ``max_attempts``.

A pass that fails (a store away, an unreadable saga) is logged through loguru, bound
with the saga id where there is one, and the thread carries on: the next pass tries
again. ``stop`` (called by ``close``) wakes the thread and waits up to ``CLOSE_WAIT``
seconds for a running pass to end (a pass stops early between sagas, never in the
middle of one); if it is still running then, ``close`` returns anyway and the thread
closes the stores itself when its pass ends, so no store is closed under a saga.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable

from saga._errors import SagaError, ValidationError
from saga._log import logger
from saga._recovery import DEFAULT_MAX_ATTEMPTS, Policy, recover
from saga._results import RecoveryReport
from saga._services import Services

POLICY: Policy = "resume"
OLDER_THAN = dt.timedelta(0)  # dead owners are found by lease and pid, not by age
CLOSE_WAIT = 10.0  # seconds close() waits for a running pass before handing over


def checked_interval(value: object) -> float | None:
    """``recover_every``: None (no background recovery) or a finite number of seconds
    > 0; anything else is refused, naming the field, before anything is opened."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(
            f"must be None or a finite number of seconds > 0, got {value!r}",
            field="recover_every",
        )
    return float(value)


class _Stopping(Exception):
    """Raised between sagas of a pass when the runner is closing."""


class BackgroundRecovery:
    """The thread of one runner: a pass at start, then one every ``every`` seconds."""

    def __init__(self, services: Services, every: float) -> None:
        self.every = every
        self.passes = 0  # passes finished (observability and tests)
        self.settled = 0  # sagas resumed or compensated, over all passes
        self.skipped = 0  # sagas seen held by a live owner, over all passes
        self.failures = 0  # passes that raised, and sagas a pass left with an error
        self.last_report: RecoveryReport | None = None
        self._services = services
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._finished = False
        self._handover: Callable[[], None] | None = None
        self.thread = threading.Thread(target=self._run, name="saga-recover", daemon=True)

    def start(self) -> BackgroundRecovery:
        self.thread.start()
        return self

    def stop(self, close_stores: Callable[[], None], timeout: float | None = None) -> bool:
        """Stop the thread; ``close_stores`` once no pass runs. Waits up to ``timeout``
        (default ``CLOSE_WAIT``) seconds for a running pass; returns whether it ended in
        time (if not, the thread calls ``close_stores`` when its pass ends)."""
        self._stop.set()
        self.thread.join(CLOSE_WAIT if timeout is None else timeout)
        with self._lock:
            if not self._finished:
                self._handover = close_stores
                logger.warning(
                    "background recovery still running after {}s: the stores close when "
                    "its pass ends",
                    CLOSE_WAIT if timeout is None else timeout,
                )
                return False
        close_stores()
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._one_pass()
                if self._stop.wait(self.every):
                    break
        finally:
            with self._lock:
                self._finished = True
                handover = self._handover
            if handover is not None:
                try:
                    handover()
                except Exception as exc:
                    logger.opt(exception=exc).error("closing the stores after recovery failed")

    def _between_sagas(self) -> None:
        if self._stop.is_set():
            raise _Stopping

    def _one_pass(self) -> None:
        try:
            report = recover(
                self._services,
                older_than=OLDER_THAN,
                policy=POLICY,
                dry_run=False,
                max_attempts=DEFAULT_MAX_ATTEMPTS,
                progress=self._between_sagas,
            )
        except _Stopping:
            return
        except SagaError as exc:
            self.failures += 1
            logger.bind(saga_id=exc.saga_id).warning("background recovery pass failed: {}", exc)
            return
        except Exception as exc:  # never let one pass end the thread
            self.failures += 1
            logger.opt(exception=exc).error("background recovery pass failed: {!r}", exc)
            return
        self.passes += 1
        self.last_report = report
        self.settled += report.resumed + report.compensated
        self.skipped += report.skipped
        self.failures += len(report.errors)
        for saga_id, error in report.errors.items():
            logger.bind(saga_id=saga_id).warning("background recovery left saga: {}", error)
        if report.resumed or report.compensated:
            logger.info(
                "background recovery settled {} saga(s): {} resumed, {} compensated",
                report.resumed + report.compensated,
                report.resumed,
                report.compensated,
            )
