"""The vector step: write (or delete) the saga's vectors in Chroma, in sub-batches.

Forward upserts the new vectors under their deterministic ids (``delete`` sagas delete
them); compensation puts back the before-images recorded in ``pending``: a vector that
did not exist is deleted, one that did is upserted as it was. Both are idempotent, so
recovery may repeat them, and compensation covers every sub-batch, applied or not
(a timed-out request may have been applied).

Chroma's upsert *merges* metadata into a stored vector (and keeps a stored document
when given none), so writing over an existing vector names every key that must go
with a ``None`` value, and a document that must go is cleared by deleting the vector
first: the stored vector is then exactly the one intended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import attrs

from saga._content import over, replacing
from saga._errors import (
    RecordNotFoundError,
    ValidationError,
    VectorStoreError,
    VectorStoreTimeout,
)
from saga._ports import LogUnit, Synced, VectorRecord
from saga._steps import RESERVED_METADATA, Item, SagaContext, Versions


@attrs.frozen
class WriteVectors:
    """Upsert (or, for ``op="delete"``, delete) every item's vector."""

    op: str
    name: str = "write_vectors"
    reaches: str = "vector_written"
    local: bool = False

    def preload(self, ctx: SagaContext, versions: Versions) -> None:
        """Find the before-images, outside SQLite's write lock (``prepare`` uses them
        once the engine has seen, inside the ``pending`` transaction, that no saga
        touched these vectors since ``versions`` was read). The saga log keeps every
        vector synced since schema 5, so Chroma is read only for the others (older
        ones, and keys whose row has no vector): a live update or delete of a synced
        vector makes no Chroma read at all."""
        if self.op == "create":
            return
        ids = [ctx.vector_id(item) for item in ctx.items]
        ctx.observed = versions(ids)
        found = dict(ctx.logged or {})  # read with `observed`, for these very ids
        unknown = [vid for vid in ids if vid not in found]
        if unknown:
            found.update(ctx.vectors.get(ctx.spec.collection, unknown, embeddings=True))
        ctx.preloaded = found

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        if self.op == "create":
            # The key is absent from the table and no saga is in flight for it, so no
            # vector of ours can exist under its id; an orphan there is garbage.
            return
        ids = [ctx.vector_id(item) for item in ctx.items]
        found = ctx.preloaded
        if found is None:  # not preloaded (a caller that skips it): read it now
            found = ctx.vectors.get(ctx.spec.collection, ids, embeddings=True)
        for index, item in enumerate(ctx.items):
            item.before_vector = found.get(ctx.vector_id(item))
            if self.op == "update":
                _complete_update(item, index, many=len(ctx.items) > 1)

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        chunks = ctx.chunks()
        for index, chunk in enumerate(chunks):
            if index in ctx.progress:
                continue
            if self.op == "delete":
                with _sending(ctx, index):
                    ctx.vectors.delete(ctx.spec.collection, [ctx.vector_id(i) for i in chunk])
            else:
                stored: dict[str, VectorRecord] = {}
                if self.op == "create":
                    # The key is new to the table and held by this saga, so a vector
                    # under its id is an orphan; Chroma would merge into it (its metadata
                    # keys, its document when ours is None): read it to replace it
                    # exactly. Measured: about 5% of a single create, under 2% of a
                    # batch of 100 (one read per request).
                    ids = [ctx.vector_id(i) for i in chunk]
                    stored = ctx.vectors.get(ctx.spec.collection, ids)
                self._replace(ctx, [(ctx, i) for i in chunk], stored, index=index)
            if len(chunks) > 1:
                ctx.progress.add(index)
                ctx.save_progress(ctx.progress)

    def forward_many(self, contexts: Sequence[SagaContext]) -> None:
        """The forward action of many sagas at once, in shared requests (recovery's
        fast path). Sagas in flight never share a vector id (one owner per key), so a
        request never holds an id twice. Progress is not recorded here: the caller
        marks each saga's sub-batches applied once every request succeeded.

        A vector already stored exactly as it would be written (its writer died after
        the vector step) is not written again: Chroma's upsert over an existing id costs
        about five times a new one, and one read of the group costs far less. The key
        has one owner, this saga, so nothing can change it between read and skip."""
        pending: dict[tuple[str, int], list[tuple[SagaContext, Item]]] = {}
        for ctx in contexts:
            for index, chunk in enumerate(ctx.chunks()):
                if index not in ctx.progress:
                    key = (ctx.spec.collection, id(ctx.vectors))
                    pending.setdefault(key, []).extend((ctx, item) for item in chunk)
        for pairs in pending.values():
            vectors = pairs[0][0].vectors
            size = max(1, vectors.max_batch_size())
            for start in range(0, len(pairs), size):
                self._apply(pairs[start : start + size])

    def _apply(self, pairs: list[tuple[SagaContext, Item]]) -> None:
        ctx = pairs[0][0]
        if self.op == "delete":
            ctx.vectors.delete(ctx.spec.collection, [c.vector_id(i) for c, i in pairs])
        else:
            ids = [c.vector_id(i) for c, i in pairs]
            stored = ctx.vectors.get(ctx.spec.collection, ids, embeddings=True)
            self._replace(ctx, pairs, stored, skip_exact=True)

    @staticmethod
    def _replace(
        ctx: SagaContext,
        pairs: Sequence[tuple[SagaContext, Item]],
        stored: dict[str, VectorRecord],
        *,
        skip_exact: bool = False,
        index: int | None = None,
    ) -> None:
        """Upsert each item's new vector so that Chroma holds exactly it: keys of what
        is there (the before-image, or else what ``stored`` shows) named with ``None``,
        and a stored document that must go cleared by deleting the vector first.
        ``skip_exact``: leave out vectors already stored exactly (recovery)."""
        clear: list[str] = []
        written: list[VectorRecord] = []
        for c, item in pairs:
            new = c.new_vector(item)
            record, first_delete = replacing(new, item.before_vector or stored.get(new.id))
            if first_delete:
                clear.append(record.id)
            if not (skip_exact and _stored_as(stored.get(record.id), record)):
                written.append(record)
        if clear:
            with _sending(ctx, index):
                ctx.vectors.delete(ctx.spec.collection, clear)
        with _sending(ctx, index):
            ctx.vectors.upsert(ctx.spec.collection, written)

    def synced(self, ctx: SagaContext) -> Synced:
        """Each vector as the saga leaves it: written, or (a delete) gone. A table that
        opted out of kept vectors gives no embedding: the log keeps its content hash only."""
        if self.op == "delete":
            return {ctx.vector_id(item): None for item in ctx.items}
        keep = ctx.spec.keep_vectors
        return {
            ctx.vector_id(item): (
                ctx.new_vector(item) if keep else attrs.evolve(ctx.new_vector(item), embedding=None)
            )
            for item in ctx.items
        }

    def compensate(self, ctx: SagaContext) -> None:
        for index, chunk in enumerate(ctx.chunks()):
            if ctx.touched is not None and index not in ctx.touched:
                continue  # this call never sent it: nothing of it can be in Chroma
            remove = [ctx.vector_id(i) for i in chunk if i.before_vector is None]
            if self.op == "delete":
                remove = []  # a delete only removed vectors that existed
            restore = []
            for item in chunk:
                if item.before_vector is None:
                    continue
                written = None if self.op == "delete" else ctx.new_vector(item)
                if written is not None and item.before_vector.document is None:
                    remove.append(written.id)  # only a delete clears a stored document
                    written = None
                restore.append(over(item.before_vector, written))
            ctx.vectors.delete(ctx.spec.collection, remove)
            ctx.vectors.upsert(ctx.spec.collection, restore)


@contextlib.contextmanager
def _sending(ctx: SagaContext, index: int | None) -> Iterator[None]:
    """A write of sub-batch ``index`` in a live call: noted in ``ctx.touched`` (what
    compensation must undo) unless Chroma provably never saw it (``sent`` False) and no
    earlier write of the sub-batch did either. Recovery knows no such thing
    (``touched`` is None): it undoes every sub-batch."""
    if ctx.touched is None or index is None:
        yield
        return
    fresh = index not in ctx.touched
    ctx.touched.add(index)
    try:
        yield
    except VectorStoreError as error:
        if fresh and not error.sent:
            ctx.touched.discard(index)
        if error.sent and (error.ambiguous or isinstance(error, VectorStoreTimeout)):
            ctx.late_possible = True  # sent, unanswered: it may still land
        raise


def _stored_as(stored: VectorRecord | None, wanted: VectorRecord) -> bool:
    """Whether Chroma already holds ``wanted`` exactly (a key named with ``None`` in
    ``wanted`` must be absent). Any doubt (a float rounded, a type changed) says no."""
    if stored is None or stored.document != wanted.document:
        return False
    if wanted.embedding is None or stored.embedding != tuple(wanted.embedding):
        return False
    kept = {k: v for k, v in (wanted.metadata or {}).items() if v is not None}
    held = dict(stored.metadata or {})
    return held == kept and all(type(held[k]) is type(v) for k, v in kept.items())


def _complete_update(item: Item, index: int, *, many: bool) -> None:
    """An update that leaves a vector field out keeps the stored one."""
    before = item.before_vector
    position = index if many else None
    if before is None:
        if item.embedding is None:
            raise RecordNotFoundError(
                "the row has no vector to keep: pass an embedding",
                field="embedding",
                index=position,
            )
        return
    if item.embedding is None:
        if before.embedding is None:
            raise ValidationError("stored vector has no embedding", field="embedding")
        item.embedding = before.embedding
    if item.document is None:
        item.document = before.document
    if item.metadata is None:
        item.metadata = {
            k: v
            for k, v in (before.metadata or {}).items()
            if k not in RESERVED_METADATA and v is not None
        }
