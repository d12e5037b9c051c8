"""The vector step: write (or delete) the saga's vectors in Chroma, in sub-batches.

Forward upserts the new vectors under their deterministic ids (``delete`` sagas delete
them); compensation puts back the before-images recorded in ``pending``: a vector that
did not exist is deleted, one that did is upserted as it was. Both are idempotent, so
recovery may repeat them, and compensation covers every sub-batch, applied or not
(a timed-out request may have been applied).
"""

from __future__ import annotations

import sqlite3

import attrs

from saga._errors import RecordNotFoundError, ValidationError
from saga._steps import Item, SagaContext


@attrs.frozen
class WriteVectors:
    """Upsert (or, for ``op="delete"``, delete) every item's vector."""

    op: str
    name: str = "write_vectors"
    reaches: str = "vector_written"
    local: bool = False

    def prepare(self, ctx: SagaContext, txn: sqlite3.Connection) -> None:
        if self.op == "create":
            # The key is absent from the table and no saga is in flight for it, so no
            # vector of ours can exist under its id; an orphan there is garbage.
            return
        ids = [ctx.vector_id(item) for item in ctx.items]
        found = ctx.vectors.get(ctx.spec.collection, ids, embeddings=True)
        for index, item in enumerate(ctx.items):
            item.before_vector = found.get(ctx.vector_id(item))
            if self.op == "update":
                _complete_update(item, index, many=len(ctx.items) > 1)

    def forward(self, ctx: SagaContext, txn: sqlite3.Connection | None) -> None:
        chunks = ctx.chunks()
        for index, chunk in enumerate(chunks):
            if index in ctx.progress:
                continue
            if self.op == "delete":
                ctx.vectors.delete(ctx.spec.collection, [ctx.vector_id(i) for i in chunk])
            else:
                ctx.vectors.upsert(ctx.spec.collection, [ctx.new_vector(i) for i in chunk])
            if len(chunks) > 1:
                ctx.progress.add(index)
                ctx.save_progress(ctx.progress)

    def compensate(self, ctx: SagaContext) -> None:
        for chunk in ctx.chunks():
            restore = [item.before_vector for item in chunk if item.before_vector is not None]
            remove = [ctx.vector_id(item) for item in chunk if item.before_vector is None]
            if self.op == "delete":
                remove = []  # a delete only removed vectors that existed
            ctx.vectors.upsert(ctx.spec.collection, restore)
            ctx.vectors.delete(ctx.spec.collection, remove)


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
            if k not in ("sqlite_table", "sqlite_record_id", "saga_id")
        }
