"""Chroma's answers as ``VectorRecord`` objects, and whether they show an upsert applied.

The read-back of an ambiguous upsert (``stores.chroma``) asks the second question. It is
judged by Chroma's own rules for an upsert, not by equality: a ``None`` document keeps
the stored one, metadata is merged and a ``None`` value removes its key; the embedding
must be the one sent, as float32 (what Chroma keeps). A vector left by an earlier write
with the same content is indistinguishable, and equally what the saga wanted.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

from saga._ports import VectorRecord


def records_of(found: Any, *, embeddings: bool) -> dict[str, VectorRecord]:
    """The records in a ``get`` answer, by id (with their embeddings if ``embeddings``)."""
    ids = list(found["ids"])
    documents = found.get("documents") or [None] * len(ids)
    metadatas = found.get("metadatas") or [None] * len(ids)
    vectors = found.get("embeddings") if embeddings else None
    records = {}
    for index, vector_id in enumerate(ids):
        embedding = None
        if vectors is not None:
            row = vectors[index]  # a numpy array: tolist() converts in C
            embedding = tuple(row.tolist() if hasattr(row, "tolist") else map(float, row))
        records[vector_id] = VectorRecord(
            id=vector_id,
            embedding=embedding,
            document=documents[index],
            metadata=metadatas[index],
        )
    return records


def all_stored(found: Any, records: Sequence[VectorRecord]) -> bool:
    """Whether Chroma holds every record as its upsert would leave it."""
    stored = records_of(found, embeddings=True)
    return all(_upserted(stored.get(r.id), r) for r in records)


def _upserted(stored: VectorRecord | None, wanted: VectorRecord) -> bool:
    """Whether ``stored`` shows the upsert of ``wanted`` applied, by Chroma's rules: a
    ``None`` document keeps the stored one, metadata is merged and a ``None`` value
    removes its key; the embedding is the one sent, as float32."""
    if stored is None:
        return False
    if wanted.embedding is not None and not _same_float32(stored.embedding, wanted.embedding):
        return False
    if wanted.document is not None and stored.document != wanted.document:
        return False
    have = dict(stored.metadata or {})
    for key, value in (wanted.metadata or {}).items():
        if value is None:
            if key in have:
                return False
        elif key not in have or not _same_value(have[key], value):
            return False
    return True


def _same_float32(stored: Sequence[float] | None, wanted: Sequence[float]) -> bool:
    return stored is not None and array("f", stored) == array("f", wanted)


def _same_value(stored: object, wanted: object) -> bool:
    """Equal, or for floats equal as Chroma keeps them (about 16 significant digits)."""
    if isinstance(stored, float) and isinstance(wanted, float):
        return math.isclose(stored, wanted, rel_tol=1e-12, abs_tol=1e-300)
    return type(stored) is type(wanted) and stored == wanted
