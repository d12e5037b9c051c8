"""Putting vectors back in Chroma exactly as the saga log keeps them.

Reconcile's repair of drift and of missing vectors: SQLite is the system of record and
keeps every synced vector (embedding, document, metadata), so a vector Chroma lost or
holds differently is written back from there; no embedder is needed and the embedding
is the one the saga wrote. Done under SQLite's write lock, so no saga can start on those
keys meanwhile; vectors a saga is writing, or that the log does not keep (synced before
schema 5), are left to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga._content import replacing
from saga._ports import TableSpec, VectorRecord
from saga._services import Services

_CHUNK = 500


def restore_from_log(
    services: Services, spec: TableSpec, vector_ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(restored, left): each vector written back as last synced, or left as it was."""
    restored: list[str] = []
    left: list[str] = []
    for start in range(0, len(vector_ids), _CHUNK):
        chunk = list(vector_ids[start : start + _CHUNK])
        with services.log.unit() as unit:
            kept = unit.synced_vectors(chunk)
            busy = unit.in_flight_vectors(spec.table)
            todo = [kept[vid] for vid in chunk if vid in kept and vid not in busy]
            _write_exactly(services, spec, todo)
        done = {record.id for record in todo}
        restored.extend(vid for vid in chunk if vid in done)
        left.extend(vid for vid in chunk if vid not in done)
    return restored, left


def _write_exactly(services: Services, spec: TableSpec, records: list[VectorRecord]) -> None:
    """Upsert ``records`` so that Chroma holds exactly them: keys of what it holds now
    named with ``None`` (its upsert merges metadata), a document that must go cleared by
    deleting the vector first."""
    current = services.vectors.get(spec.collection, [r.id for r in records])
    clear: list[str] = []
    written: list[VectorRecord] = []
    for record in records:
        exact, first_delete = replacing(record, current.get(record.id))
        written.append(exact)
        if first_delete:
            clear.append(record.id)
    if clear:
        services.vectors.delete(spec.collection, clear)
    services.vectors.upsert(spec.collection, written)
