"""What the runner returns: frozen value objects."""

from __future__ import annotations

import warnings
from typing import Any

import attrs


@attrs.frozen
class SagaResult:
    """The outcome of one dual write (``state`` is ``synced`` when it returns)."""

    saga_id: str
    state: str
    vector_ids: tuple[str, ...]
    keys: tuple[Any, ...] = ()  # each item's key, those SQLite assigned included


@attrs.frozen
class TableCounts:
    """How many rows a tracked table holds, and how many vectors its collection."""

    rows: int
    vectors: int


@attrs.frozen
class RebuildReport:
    """What a rebuild wrote back from the saga log.

    ``rebuilt``: vectors upserted; ``tables``: the tables rebuilt; ``not_rebuildable``:
    vector ids of committed rows whose vector the log does not keep (synced before
    schema 5 and neither written since nor backfilled by ``reconcile(fix=True)``, or of a
    table tracked with ``keep_vectors=False``): only the application's embedder can
    make those.
    """

    rebuilt: int = 0
    tables: tuple[str, ...] = ()
    not_rebuildable: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.not_rebuildable

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["complete"] = self.complete
        return data


@attrs.frozen
class QueryResult:
    """One row found by semantic search, with its vector's distance."""

    key: Any
    distance: float
    row: dict[str, Any]


@attrs.frozen
class RecoveryReport:
    """What one recovery run did. Counts, and the saga ids behind them.

    ``resumed``: rolled forward to ``synced``; ``compensated``: undone to ``failed``
    (the state; "failed" always means compensated); ``unsettled``: could not be settled
    this run (left in flight for the next run, its error recorded); ``skipped``: held by
    a live owner, or claimed by another recovery first; ``rechecked``: compensated
    sagas whose unanswered write was undone once more after the grace period (see
    ``saga._rechecks``).
    """

    resumed: int = 0
    compensated: int = 0
    unsettled: int = 0
    skipped: int = 0
    resumed_ids: tuple[str, ...] = ()
    compensated_ids: tuple[str, ...] = ()
    unsettled_ids: tuple[str, ...] = ()
    skipped_ids: tuple[str, ...] = ()
    rechecked: int = 0
    rechecked_ids: tuple[str, ...] = ()
    errors: dict[str, str] = attrs.field(factory=dict)
    dry_run: bool = False

    @property
    def clean(self) -> bool:
        return self.unsettled == 0

    @property
    def failed(self) -> int:
        """Deprecated name of ``unsettled`` (not the ``failed`` state: see above)."""
        warnings.warn(
            "RecoveryReport.failed is now RecoveryReport.unsettled",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.unsettled

    @property
    def failed_ids(self) -> tuple[str, ...]:
        """Deprecated name of ``unsettled_ids``."""
        warnings.warn(
            "RecoveryReport.failed_ids is now RecoveryReport.unsettled_ids",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.unsettled_ids

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class ReconcileReport:
    """Inconsistencies between the stores, found (and with ``fix``, repaired).

    ``orphan_vectors``: vector ids with no row; ``missing_vectors``: vector ids of rows
    whose vector is absent; ``drift``: vector ids whose document/metadata differ from
    the committed state; ``in_flight``: ids of the sagas in flight during the scan,
    whose vectors were left alone (not checked); ``stuck_sagas``: those of them whose
    owner is gone (no lease, an expired one, or a dead process on this host), or in
    flight longer than the threshold. ``backfilled`` (with ``fix``): vector ids whose
    synced copy the log lacked (synced before schema 5) and now keeps, read from Chroma.
    """

    orphan_vectors: tuple[str, ...] = ()
    missing_vectors: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()
    stuck_sagas: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    unfixable: tuple[str, ...] = ()
    rows_checked: int = 0
    vectors_checked: int = 0
    in_flight: tuple[str, ...] = ()
    backfilled: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """True when nothing inconsistent remains (after fixing, if asked) and no saga
        was in flight: vectors a saga is writing were not checked, so the stores are
        not known to agree."""
        found = {*self.orphan_vectors, *self.missing_vectors, *self.drift}
        return not (found - set(self.fixed)) and not self.stuck_sagas and not self.in_flight

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["clean"] = self.clean
        return data
