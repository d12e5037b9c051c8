"""A vector's document and metadata as canonical JSON, and its digest.

The saga log records this for every vector as last synced; reconcile compares Chroma's
copy against it (drift) and repairs drift from it.
"""

from __future__ import annotations

import hashlib
import json

from saga._ports import VectorRecord


def content_of(record: VectorRecord) -> tuple[str, str]:
    """(digest, canonical JSON) of ``record``'s document and metadata."""
    metadata = {k: _stable(v) for k, v in (record.metadata or {}).items()}
    body = json.dumps([record.document, metadata], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32], body


def _stable(value: object) -> object:
    """Chroma keeps float metadata to about 15 significant digits: compare at that."""
    return float(f"{value:.15g}") if isinstance(value, float) else value
