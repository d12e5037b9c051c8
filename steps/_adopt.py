"""The adopt steps: vectors stored under the application's own ids re-keyed to the library's.

An application that wrote its vectors itself (``sum_1``, ...) and kept their ids in the
row's vector-id column is taken over one page of rows per saga, without re-embedding:

- ``copy_vectors`` (remote): upsert each legacy vector's embedding, document and
  metadata under the library's id ``table:key``, exactly (what a stray vector already
  holds under that id is replaced, as a create replaces an orphan). Compensation
  deletes the copies.
- ``point_rows`` (local, the pivot): the row's vector-id column set to ``table:key`` in
  the transaction that records ``sqlite_committed``; ``prepare`` refuses a row whose
  vector-id column changed since it was read.
- ``drop_legacy`` (remote, after the pivot): delete the legacy ids. It only rolls
  forward, and deleting is idempotent, so recovery simply runs it again.

Each item carries what recovery needs in the payload: ``embedding``, ``document`` and
``metadata`` are the content to copy, ``before_vector.id`` the legacy id, ``before_row``
the row's vector-id column as read (the legacy id, unless a mapping named it). A row that
already names its library id, but whose vector the log does not know as synced, is
adopted the same way: its ``before_vector`` is the stored vector itself (content
included, which compensation puts back), the copy is an exact rewrite, and there is
nothing to drop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs

from saga._content import over, replacing
from saga._errors import SagaConflictError, VectorStoreError, VectorStoreTimeout
from saga._machine import SYNCED
from saga._ports import LogUnit, Synced, VectorRecord
from saga._steps import Item, SagaContext


def legacy_id(item: Item) -> str:
    """The id the item's vector had before: the application's, or (already linked) ours."""
    if item.before_vector is None:
        raise AssertionError("an adopt item always carries its legacy vector's id")
    return item.before_vector.id


def relinked(ctx: SagaContext, item: Item) -> bool:
    """Whether the row already named the library's id (nothing to copy from elsewhere)."""
    return legacy_id(item) == ctx.vector_id(item)


@attrs.frozen
class CopyVectors:
    """Upsert each legacy vector's content under the library's id."""

    name: str = "copy_vectors"
    reaches: str = "vector_written"
    local: bool = False

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        """Nothing: the caller read and checked the legacy vectors; ``point_rows``
        checks, in this same transaction, that the rows still name them."""

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        chunks = ctx.chunks()
        for index, chunk in enumerate(chunks):
            if index in ctx.progress:
                continue
            ids = [ctx.vector_id(item) for item in chunk]
            # What is under the new ids: nothing, a stray vector (a copy an interrupted
            # run left, garbage), or the row's own vector (already linked). Chroma merges
            # an upsert into it, so it is read to be replaced exactly.
            stored = ctx.vectors.get(ctx.spec.collection, ids)
            clear: list[str] = []
            written: list[VectorRecord] = []
            for item in chunk:
                new = ctx.new_vector(item)
                record, first_delete = replacing(new, stored.get(new.id))
                written.append(record)
                if first_delete:
                    clear.append(record.id)
            with _noting(ctx):
                ctx.vectors.delete(ctx.spec.collection, clear)
                ctx.vectors.upsert(ctx.spec.collection, written)
            if len(chunks) > 1:
                ctx.progress.add(index)
                ctx.save_progress(ctx.progress)

    def compensate(self, ctx: SagaContext) -> None:
        """Delete the copies; a row that already named its library id gets its vector
        back as it was (its before-image)."""
        for chunk in ctx.chunks():
            remove = [ctx.vector_id(item) for item in chunk if not relinked(ctx, item)]
            restore: list[VectorRecord] = []
            for item in chunk:
                before = item.before_vector
                if before is None or not relinked(ctx, item):
                    continue
                if before.document is None:  # an upsert would keep the copy's document
                    remove.append(before.id)
                    restore.append(before)
                else:
                    restore.append(over(before, ctx.new_vector(item)))
            ctx.vectors.delete(ctx.spec.collection, remove)
            ctx.vectors.upsert(ctx.spec.collection, restore)

    def synced(self, ctx: SagaContext) -> Synced:
        """Each copy, as the log keeps it (no embedding for a table that opted out)."""
        keep = ctx.spec.keep_vectors
        return {
            ctx.vector_id(item): (
                ctx.new_vector(item) if keep else attrs.evolve(ctx.new_vector(item), embedding=None)
            )
            for item in ctx.items
        }


@attrs.frozen
class PointRows:
    """The pivot: each row's vector-id column set to the library's id."""

    name: str = "point_rows"
    reaches: str = "sqlite_committed"
    local: bool = True

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        """Each row's vector-id column must still be as read, and a row already linked
        must not have been synced meanwhile (another saga wrote it): else the page was
        read stale (``SagaConflictError``), and the caller reads it again."""
        _check_rows(ctx, unit)

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        if unit is None:
            raise TypeError("PointRows is a local step: it needs the saga's transaction")
        _check_rows(ctx, unit)  # nothing changes a held row but a write behind our back
        column = ctx.spec.vector_id_column
        unit.rows.update(
            ctx.spec, [(item.known_key, {column: ctx.vector_id(item)}) for item in ctx.items]
        )

    def compensate(self, ctx: SagaContext) -> None:
        """Nothing to undo: a failed pivot transaction rolled back as a whole."""


@attrs.frozen
class DropLegacy:
    """After the pivot: delete the legacy ids (rolled forward only, idempotent)."""

    name: str = "drop_legacy"
    reaches: str = "legacy_dropped"
    local: bool = False

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        """Nothing: the legacy ids travel in the payload."""

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        ids = list(dict.fromkeys(legacy_id(item) for item in ctx.items if not relinked(ctx, item)))
        size = max(1, ctx.vectors.max_batch_size())
        for start in range(0, len(ids), size):
            ctx.vectors.delete(ctx.spec.collection, ids[start : start + size])

    def compensate(self, ctx: SagaContext) -> None:
        """Never called: the step comes after the pivot."""


def _check_rows(ctx: SagaContext, unit: LogUnit) -> None:
    keys = [item.known_key for item in ctx.items]
    links = unit.rows.links(ctx.spec, keys)
    linked = [ctx.vector_id(item) for item in ctx.items if relinked(ctx, item)]
    versions = unit.vector_versions(linked) if linked else {}
    for item in ctx.items:
        key = item.known_key
        if key not in links or links[key] != read_link(ctx, item):
            raise SagaConflictError(f"row {key!r} changed since it was read", key=key)
        version = versions.get(ctx.vector_id(item))
        if version is not None and version[1] == SYNCED:
            raise SagaConflictError(f"row {key!r} was written meanwhile", key=key)


def read_link(ctx: SagaContext, item: Item) -> object:
    """The row's vector-id column as it was read (``before_row``): the legacy id, or
    whatever the row held when the caller's mapping named the legacy id."""
    if item.before_row is None:
        raise AssertionError("an adopt item always carries its row's link as read")
    return item.before_row.get(ctx.spec.vector_id_column)


@contextlib.contextmanager
def _noting(ctx: SagaContext) -> Iterator[None]:
    """A write sent and never answered may still land after the compensation: say so,
    so the engine schedules a late-write re-check (as ``WriteVectors`` does)."""
    try:
        yield
    except VectorStoreError as error:
        if error.sent and (error.ambiguous or isinstance(error, VectorStoreTimeout)):
            ctx.late_possible = True
        raise
