"""A vector's document and metadata as canonical JSON, and its digest.

The saga log records this for every vector as last synced; reconcile compares Chroma's
copy against it (drift) and repairs drift from it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from saga._ports import VectorRecord


def content_of(record: VectorRecord) -> tuple[str, str]:
    """(digest, canonical JSON) of ``record``'s document and metadata."""
    metadata = {k: _stable(v) for k, v in (record.metadata or {}).items()}
    body = json.dumps([record.document, metadata], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32], body


def over(record: VectorRecord, stored: VectorRecord | None) -> VectorRecord:
    """``record``, with ``None`` for every metadata key of ``stored`` it lacks (Chroma
    merges metadata on upsert; ``None`` removes a key)."""
    if stored is None or not stored.metadata:
        return record
    metadata: dict[str, Any] = dict(record.metadata or {})
    for key in stored.metadata:
        metadata.setdefault(key, None)
    return attrs.evolve(record, metadata=metadata)


def replacing(record: VectorRecord, stored: VectorRecord | None) -> tuple[VectorRecord, bool]:
    """What to upsert over ``stored`` so that Chroma holds exactly ``record``, and
    whether ``stored`` must be deleted first: an upsert keeps a stored document when
    given none, so a document that must go goes with the vector."""
    if record.document is None and stored is not None and stored.document is not None:
        return record, True  # deleted first: nothing left to name
    return over(record, stored), False


def _stable(value: object) -> object:
    """Chroma keeps float metadata to about 15 significant digits: compare at that."""
    return float(f"{value:.15g}") if isinstance(value, float) else value
