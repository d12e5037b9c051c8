"""Putting vectors back in Chroma exactly as the saga log keeps them.

Reconcile's repair of drift and of missing vectors: SQLite is the system of record and
keeps every synced vector (embedding, document, metadata), so a vector Chroma lost or
holds differently is written back from there; no embedder is needed and the embedding
is the one the saga wrote. Done under SQLite's write lock, so no saga can start on those
keys meanwhile; vectors a saga is writing, or that the log does not keep (synced before
schema 5), are left to the caller.

The other way, ``keep_from_chroma`` fills the log's copy of vectors synced before schema
5 from what Chroma holds, once, while Chroma can still be read: reconcile's ``fix`` does
it, so a database written by an older release becomes rebuildable.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga._content import as_synced, replacing
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


def keep_from_chroma(services: Services, spec: TableSpec, page_size: int) -> list[str]:
    """Keep in the log, read from Chroma, each synced vector of ``spec`` the log lacks
    whose document and metadata Chroma holds as they were synced (as reconcile judges
    drift); returns their ids. A saga that started on a key meanwhile wins: the copy
    is kept only while the same saga's vector is still synced and unkept."""
    if not spec.keep_vectors:
        return []
    kept: list[str] = []
    after: str | None = None
    while page := services.log.unkept(spec.table, after, page_size):
        after = page[-1][0]
        ids = [vector_id for vector_id, *_ in page]
        stored = services.vectors.get(spec.collection, ids, embeddings=True)
        matching = [
            (stored[vid], saga_id)
            for vid, saga_id, digest, content in page
            if vid in stored
            and stored[vid].embedding is not None
            and as_synced(stored[vid], (digest, content))
        ]
        with services.log.unit() as unit:
            unit.keep_synced(matching)
            now = unit.kept_ids([record.id for record, _ in matching])
        kept.extend(record.id for record, _ in matching if record.id in now)
    return kept
