"""A vector's document and metadata as canonical JSON, and its digest.

The saga log records this for every vector as last synced; reconcile compares Chroma's
copy against it (drift) and repairs drift from it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import attrs

from saga._ports import VectorRecord

_ULPS = 4  # chromadb 1.5.9 hands back about 1 float in 9 (of 16-17 digits) 1 ulp off


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


def as_synced(record: VectorRecord, synced: tuple[str | None, ...]) -> bool:
    """Whether Chroma's ``record`` holds the document/metadata last synced.

    The hash decides when it matches. When it does not, the synced JSON is compared
    value by value: the log keeps floats to 15 significant digits, and a float Chroma
    hands back one ulp off may round to the other side of a digit boundary."""
    digest, content = synced[0], synced[1]
    if digest is None:
        return False
    if content_of(record)[0] == digest:
        return True
    if content is None:
        return False
    document, metadata = json.loads(content)
    return record.document == document and _same_value(dict(record.metadata or {}), metadata)


def _same_value(seen: Any, kept: Any) -> bool:
    """Equal, of the same type; floats within ``_ULPS``; lists and dicts item by item."""
    if type(seen) is not type(kept):
        return False
    if isinstance(seen, float):
        return _same_float(seen, kept)
    if isinstance(seen, dict):
        return seen.keys() == kept.keys() and all(_same_value(seen[k], kept[k]) for k in seen)
    if isinstance(seen, list):
        return len(seen) == len(kept) and all(map(_same_value, seen, kept))
    return bool(seen == kept)


def _same_float(seen: float, kept: float) -> bool:
    """``seen`` within ``_ULPS`` ulps of ``kept``, or of a float whose 15-digit rounding
    (what ``content_of`` keeps) is ``kept``. A change past the 15th digit is drift."""
    if seen == kept or (math.isnan(seen) and math.isnan(kept)):
        return True
    if not (math.isfinite(seen) and math.isfinite(kept)):
        return False
    if abs(seen - kept) <= _ULPS * math.ulp(max(abs(seen), abs(kept))):
        return True
    slack = _ULPS * math.ulp(seen)
    return _rounded(seen - slack) <= kept <= _rounded(seen + slack)


def _rounded(value: float) -> float:
    return float(f"{value:.15g}")  # as saga._content keeps floats
