"""What a saga step is, and the context every step of one saga shares.

A step has a forward action and a compensation. A *remote* step acts on a store
outside SQLite (Chroma) and its completion is persisted afterwards; a *local* step acts
inside the very SQLite transaction that records its completion (the pivot, "row change
and ``sqlite_committed`` together", is one). Local steps get that transaction as a
``LogUnit``: its ``rows`` for tracked tables, and ``execute``/``executemany`` for a
step's own tables.

Rules for step authors: ``forward`` and ``compensate`` must be idempotent (recovery may
repeat them after a crash), and ``compensate`` must be harmless if ``forward`` never
ran or only partly ran.

A step may offer more (each a protocol below, checked with ``isinstance``):
``Preloading.preload(ctx, versions)`` reads what a remote store holds before
``pending`` (such as before-images), *outside* SQLite's write lock; before it reads, it
records ``versions(vector_ids)`` in ``ctx.observed`` (which first refuses what SQLite
alone can refuse), and ``pending`` is only recorded if those versions are unchanged
inside its transaction, otherwise the saga begins again. ``Grouping.forward_many``
applies the forward action of many sagas in shared requests (recovery's fast path).
``Syncing.synced(ctx)`` says what each vector holds once the saga is ``synced``
(recorded in the log for reconcile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from saga._ports import Key, LogUnit, Metadata, Synced, TableSpec, VectorRecord, VectorStore

RESERVED_METADATA = ("sqlite_table", "sqlite_record_id", "saga_id")
ATOMIC = "atomic"  # the definition of atomic units (see steps._unit)

Versions = Callable[[list[str]], dict[str, tuple[Any, ...]]]


class Step(Protocol):
    """One step of a saga definition."""

    @property
    def name(self) -> str:
        """The event that completes the step (``write_vectors``)."""

    @property
    def reaches(self) -> str:
        """The state the saga is in once the step is done (``vector_written``)."""

    @property
    def local(self) -> bool:
        """True if ``forward`` runs inside the SQLite transaction recording it."""

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        """Check preconditions and record before-images, inside the ``pending`` unit."""

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        """Do the step (``unit`` is given to local steps only)."""

    def compensate(self, ctx: SagaContext) -> None:
        """Undo the step, using only before-images recorded in ``pending``."""


@runtime_checkable
class Preloading(Protocol):
    """A step that reads a remote store before ``pending``, outside the write lock."""

    def preload(self, ctx: SagaContext, versions: Versions) -> None: ...


@runtime_checkable
class Grouping(Protocol):
    """A remote step whose forward action can serve many sagas in shared requests."""

    def forward_many(self, contexts: Sequence[SagaContext]) -> None: ...


@runtime_checkable
class Syncing(Protocol):
    """A step that says what each of the saga's vectors holds once it is synced."""

    def synced(self, ctx: SagaContext) -> Synced: ...


@attrs.define
class Item:
    """One record of a saga: its key, the row change and the vector it carries."""

    key: Key | None  # None until SQLite assigns it (inside `pending`)
    row: dict[str, Any] | None = None
    embedding: tuple[float, ...] | None = None
    document: str | None = None
    metadata: Metadata | None = None
    before_row: dict[str, Any] | None = None
    before_vector: VectorRecord | None = None

    @property
    def known_key(self) -> Key:
        """The key, which every step can count on: a key SQLite assigns is reserved
        inside ``pending``, before any step runs."""
        if self.key is None:
            raise AssertionError("the item's key is assigned in `pending`, before any step")
        return self.key


@attrs.define
class SagaContext:
    """Everything the steps of one saga share while it runs or is recovered.

    ``progress`` holds the indexes of vector sub-batches already applied;
    ``save_progress`` persists it (one SQLite commit) so that resume and compensation
    know exactly what was written.
    """

    saga_id: str
    op: str
    spec: TableSpec
    items: list[Item]
    vectors: VectorStore
    progress: set[int] = attrs.field(factory=set)
    save_progress: Callable[[set[int]], None] = lambda _applied: None
    applied_ahead: bool = False  # recovery applied the next remote step in a group
    # Steps applied whose move is not committed yet (it rides on the next local step's
    # transaction): if that transaction fails, compensation records them first.
    unrecorded: tuple[str, ...] = ()
    # What ``preload`` read outside the write lock, and the vector versions it saw.
    preloaded: dict[str, VectorRecord] | None = None
    observed: dict[str, tuple[Any, ...]] | None = None
    # The vectors as the saga log keeps them (read with ``observed``): before-images
    # that need no read of the remote store.
    logged: dict[str, VectorRecord] | None = None
    # Sub-batches a remote step may have applied, known only to the call that began
    # the saga (a set there); None in recovery, where an earlier run may have sent any.
    touched: set[int] | None = None
    # A remote write was sent and never answered: it may land after the compensation.
    late_possible: bool = False

    def vector_id(self, item: Item) -> str:
        return self.spec.vector_id(item.known_key)

    def new_vector(self, item: Item) -> VectorRecord:
        """The vector this saga writes for ``item``: the caller's metadata, and the link
        keys if the table asked for them (which saga wrote it is in the log)."""
        metadata: dict[str, Any] = dict(item.metadata or {})
        if self.spec.link_keys:
            metadata.update(sqlite_table=self.spec.table, sqlite_record_id=item.known_key)
        return VectorRecord(
            id=self.vector_id(item),
            embedding=item.embedding,
            document=item.document,
            metadata=metadata,
        )

    def chunks(self) -> list[list[Item]]:
        """The items split at the vector store's request size limit."""
        size = max(1, self.vectors.max_batch_size())
        return [self.items[i : i + size] for i in range(0, len(self.items), size)]


@attrs.define
class UnitContext(SagaContext):
    """An atomic unit's context: one part (a ``SagaContext``) per table and operation,
    in the order the caller gave them; ``items`` holds every part's items. ``reserved``:
    (table, key) of the keys reserved while the unit was open (``sealed`` False: the
    block has not ended, so the unit can only be undone)."""

    parts: list[SagaContext] = attrs.field(factory=list)
    reserved: list[tuple[str, Key]] = attrs.field(factory=list)
    sealed: bool = True
    _owners: dict[int, tuple[Item, SagaContext]] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    def part_of(self, item: Item) -> SagaContext:
        found = self._owners.get(id(item))  # the item is held there: its id is not reused
        if found is None or found[0] is not item:
            self._owners = {id(mine): (mine, part) for part in self.parts for mine in part.items}
            found = self._owners.get(id(item))
        if found is None or found[0] is not item:
            raise AssertionError("the item belongs to no part of the unit")
        return found[1]

    def vector_id(self, item: Item) -> str:
        return self.part_of(item).vector_id(item)

    def new_vector(self, item: Item) -> VectorRecord:
        return self.part_of(item).new_vector(item)
