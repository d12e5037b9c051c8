"""Reconciliation: compare the two stores page by page and report (or fix) what differs.

- orphan vectors: a vector in a tracked collection that no committed row points at
  (and no saga in flight is writing);
- missing vectors: a committed row whose vector is absent (or whose ``vector_id``
  column does not name its vector);
- drift: a vector whose document/metadata differ from what was last synced (a float
  within 4 ulps of the synced one is the same: see ``_same_float``);
- sagas in flight: their vectors are left alone, so the stores are not known to agree
  while any is; stuck, those whose owner is gone (no lease, an expired one, or a dead
  process on this host: at once, whatever their age) or older than ``stuck_after``.

Memory is bounded by the page size: both stores are read a page at a time, and only
the ids of inconsistencies are kept. Chroma is read through once: the vector pass also
tallies, in a fixed number of hash sums, every vector it found linked to its row, and
the row pass (SQLite only) takes each row's vector id off that tally; Chroma is asked
for the vectors of the rows only where the tally does not balance (see ``_Tally``).

``fix=True`` first settles every saga whose owner is gone with recovery (which never
takes a saga from a live owner), then scans, deletes orphans while holding SQLite's
write lock (so no saga can start on that key meanwhile; deleting is idempotent, so a
crash mid-fix leaves only work for the next run), writes drifted and missing vectors
back from the log's copy (or through update sagas, crash-safe like any write, where the
log keeps none), and fills the log's copy of vectors synced before schema 5 from
Chroma (``backfilled``), so that the database becomes rebuildable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from saga import _items, _writes
from saga._clock import stamp
from saga._content import as_synced
from saga._errors import SagaError, ValidationError
from saga._ports import Key, TableSpec, VectorRecord
from saga._reads import row_pages
from saga._recovery import DEFAULT_MAX_ATTEMPTS, owner_is_gone, recover
from saga._repair import keep_from_chroma, restore_from_log
from saga._results import ReconcileReport
from saga._services import Services
from saga._steps import RESERVED_METADATA

Rebuild = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]

_BUCKETS = 1 << 14  # tally buckets (a power of two): about 1 MB once all are in use
_MASK = (1 << 128) - 1
_NO_ROW = object()


class _Findings:
    def __init__(self) -> None:
        self.orphans: list[str] = []
        self.missing: list[tuple[str, Any]] = []  # (vector id, key)
        self.drift: list[tuple[str, Any]] = []
        self.fixed: list[str] = []
        self.unfixable: list[str] = []
        self.backfilled: list[str] = []
        self.rows = 0
        self.vectors = 0

    def add(self, other: _Findings) -> None:
        for name in ("orphans", "missing", "drift", "fixed", "unfixable", "backfilled"):
            getattr(self, name).extend(getattr(other, name))
        self.rows += other.rows
        self.vectors += other.vectors


class _Tally:
    """Which rows the vector pass saw linked to their vector, in constant memory.

    Each vector id seen linked to its row adds a keyed 128-bit hash of the id to one of
    ``_BUCKETS`` sums (the bucket is read off the hash); each committed row takes the
    hash of its expected vector id off again. A bucket back at 0 holds no row without
    its vector (a chance of 2**-128 per bucket aside, the key being drawn per run); the
    rows of any other bucket are looked up in Chroma. A vector seen twice or missed
    (pages shifting under concurrent writes) only unbalances its bucket.
    """

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self._sums = [0] * _BUCKETS

    def _hash(self, vector_id: str) -> int:
        digest = hashlib.blake2b(vector_id.encode(), digest_size=16, key=self._key).digest()
        return int.from_bytes(digest, "little")

    def add(self, vector_id: str) -> None:
        value = self._hash(vector_id)
        bucket = value & (_BUCKETS - 1)
        self._sums[bucket] = (self._sums[bucket] + value) & _MASK

    def take(self, vector_id: str) -> None:
        value = self._hash(vector_id)
        bucket = value & (_BUCKETS - 1)
        self._sums[bucket] = (self._sums[bucket] - value) & _MASK

    def balanced(self) -> bool:
        return not any(self._sums)

    def unbalanced(self, vector_id: str) -> bool:
        return self._sums[self._hash(vector_id) & (_BUCKETS - 1)] != 0


def reconcile(
    services: Services,
    *,
    fix: bool,
    stuck_after: dt.timedelta,
    page_size: int,
    rebuild: Rebuild | None,
    progress: Callable[[int], None] | None = None,
) -> ReconcileReport:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValidationError("must be a positive int", field="page_size")
    if fix and _any_owner_gone(services):
        recover(
            services,
            older_than=dt.timedelta(0),
            policy="resume",
            dry_run=False,
            max_attempts=DEFAULT_MAX_ATTEMPTS,
        )
    in_flight = _sagas_in_flight(services, stuck_after)
    found = _Findings()
    for spec in services.tables.all():
        tally = _Tally()
        table = _Findings()  # fixed per table: its ids are its collection's
        _scan_vectors(services, spec, table, tally, page_size, progress)
        _scan_rows(services, spec, table, tally, page_size, progress)
        if fix:
            _fix(services, spec, table, rebuild)
            table.backfilled.extend(keep_from_chroma(services, spec, page_size))
        found.add(table)
    # A saga that began during the scan may have had vectors skipped too.
    for saga_id, stuck in _sagas_in_flight(services, stuck_after).items():
        in_flight[saga_id] = in_flight.get(saga_id, False) or stuck
    return ReconcileReport(
        orphan_vectors=tuple(found.orphans),
        missing_vectors=tuple(v for v, _ in found.missing),
        drift=tuple(v for v, _ in found.drift),
        stuck_sagas=tuple(saga_id for saga_id, stuck in in_flight.items() if stuck),
        fixed=tuple(found.fixed),
        unfixable=tuple(found.unfixable),
        backfilled=tuple(found.backfilled),
        rows_checked=found.rows,
        vectors_checked=found.vectors,
        in_flight=tuple(in_flight),
    )


def _any_owner_gone(services: Services) -> bool:
    now = services.clock.now()
    return any(owner_is_gone(s, services.log.owner, now) for s in services.log.in_flight())


def _sagas_in_flight(services: Services, stuck_after: dt.timedelta) -> dict[str, bool]:
    """Saga id -> stuck, for every saga in flight: stuck once its owner is gone
    (whatever its age: only recovery will finish it) or once older than ``stuck_after``."""
    now = services.clock.now()
    cutoff = stamp(now - stuck_after)
    return {
        saga.saga_id: saga.created_at <= cutoff or owner_is_gone(saga, services.log.owner, now)
        for saga in services.log.in_flight()
    }


def _scan_vectors(
    services: Services,
    spec: TableSpec,
    found: _Findings,
    tally: _Tally,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Every vector of the collection: has a row pointing at it? same content as synced?
    Each vector found under its row's id, and named by that row, is tallied."""
    for page in services.vectors.iter_records(spec.collection, page_size):
        found.vectors += len(page)
        ids = [record.id for record in page]
        with services.log.reading() as unit:
            linked = _rows_pointing_at(unit.rows, spec, page)
            busy = unit.in_flight_vectors(spec.table)
            synced = unit.synced_content(ids)
        for record in page:
            key = linked.get(record.id, _NO_ROW)
            if key is not _NO_ROW and spec.vector_id(key) == record.id:
                tally.add(record.id)
            if record.id in busy:
                continue
            if key is _NO_ROW:
                found.orphans.append(record.id)
                continue
            if not as_synced(record, synced.get(record.id, (None, None))):
                found.drift.append((record.id, key))
        if progress is not None:
            progress(len(page))


def _scan_rows(
    services: Services,
    spec: TableSpec,
    found: _Findings,
    tally: _Tally,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Every committed row: is its vector there, under the id its column names?

    The vector pass has tallied every vector it saw linked to its row; each row's
    expected vector id is taken off the tally here. Rows whose bucket balances were all
    seen linked, so only the rows of unbalanced buckets (none when the stores agree)
    are looked up in Chroma, in a second pass over the rows in key order."""
    for page in row_pages(services, spec, page_size):
        found.rows += len(page)
        for key, _link in page:
            tally.take(spec.vector_id(key))
        if progress is not None:
            progress(len(page))
    if tally.balanced():
        return
    batch: list[tuple[Any, Any]] = []
    for page in row_pages(services, spec, page_size):
        batch.extend(row for row in page if tally.unbalanced(spec.vector_id(row[0])))
        while len(batch) >= page_size:
            _check_rows(services, spec, found, batch[:page_size])
            del batch[:page_size]
    if batch:
        _check_rows(services, spec, found, batch)


def _check_rows(
    services: Services, spec: TableSpec, found: _Findings, rows: Sequence[tuple[Any, Any]]
) -> None:
    """Look these rows' vectors up in Chroma; report those absent or not linked."""
    expected = {spec.vector_id(key): (key, link) for key, link in rows}
    present = services.vectors.get(spec.collection, list(expected))
    with services.log.reading() as unit:
        busy = unit.in_flight_vectors(spec.table)
    for vector_id, (key, link) in expected.items():
        if vector_id in busy:
            continue
        if vector_id not in present or link != vector_id:
            found.missing.append((vector_id, key))


def _rows_pointing_at(rows: Any, spec: TableSpec, page: Sequence[VectorRecord]) -> dict[str, Any]:
    """vector id -> key of the row whose link column names it, found by primary key
    (read off the id, ``table:key``) rather than by scanning the link column, which the
    application's table need not index. A key that reads as an int is looked up as both
    (the column's affinity decides which is stored); only a row naming the id counts."""
    prefix = f"{spec.table}:"
    claims: dict[str, list[Key]] = {}
    for record in page:
        if record.id.startswith(prefix):
            text = record.id[len(prefix) :]
            claims[record.id] = [text, int(text)] if _canonical_int(text) else [text]
    wanted = list(dict.fromkeys(k for keys in claims.values() for k in keys))
    links = rows.links(spec, wanted)
    return {
        vid: key
        for vid, keys in claims.items()
        for key in keys
        if key in links and links[key] == vid and spec.vector_id(key) == vid
    }


def _canonical_int(text: str) -> bool:
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def _fix(services: Services, spec: TableSpec, found: _Findings, rebuild: Rebuild | None) -> None:
    """Orphans deleted; drifted and missing vectors written back from the log's copy,
    or else rewritten through update sagas (a vector the log does not keep)."""
    deleted = _delete_orphans(services, spec, found.orphans)
    wrong = [*found.drift, *found.missing]
    restored, left = restore_from_log(services, spec, [vector_id for vector_id, _ in wrong])
    found.fixed.extend(restored)
    for vector_id, key in wrong:
        if vector_id in left:
            _rewrite(services, spec, vector_id, key, found, rebuild)
    # An orphan a row still named (under an id of the application's own) is free once
    # that row's vector has been rewritten under its library id: delete it now, so that
    # one pass converges. One still named by a row is left, and said so.
    kept = set(deleted)
    deleted += _delete_orphans(services, spec, [v for v in found.orphans if v not in kept])
    found.fixed.extend(deleted)
    kept = set(deleted)
    found.unfixable.extend(v for v in found.orphans if v not in kept)


def _delete_orphans(services: Services, spec: TableSpec, orphans: list[str]) -> list[str]:
    """Delete orphans under SQLite's write lock, re-checked inside it."""
    deleted: list[str] = []
    for start in range(0, len(orphans), 500):
        chunk = orphans[start : start + 500]
        with services.log.unit() as unit:  # SQLite's write lock: no saga starts meanwhile
            linked = unit.rows.by_links(spec, chunk)
            busy = unit.in_flight_vectors(spec.table)
            still = [v for v in chunk if v not in linked and v not in busy]
            services.vectors.delete(spec.collection, still)
        deleted.extend(still)
    return deleted


def _rewrite(
    services: Services,
    spec: TableSpec,
    vector_id: str,
    key: Any,
    found: _Findings,
    rebuild: Rebuild | None,
) -> None:
    """Re-write one vector through an update saga (crash-safe like any write)."""
    try:
        fields = _fresh_fields(services, spec, vector_id, key, rebuild)
        if fields is None:
            found.unfixable.append(vector_id)
            return
        _update(services, spec.table, key, fields)
    except SagaError:
        found.unfixable.append(vector_id)
        return
    found.fixed.append(vector_id)


def _fresh_fields(
    services: Services,
    spec: TableSpec,
    vector_id: str,
    key: Any,
    rebuild: Rebuild | None,
) -> dict[str, Any] | None:
    """What the vector should hold: from ``rebuild(table, row)`` if given, else the
    embedding Chroma still holds with the document/metadata last synced (a missing
    vector's embedding is gone: only ``rebuild`` can make it again)."""
    if rebuild is not None:
        with services.log.reading() as unit:
            row = unit.rows.stored(spec, [key]).get(key, {})
        made = dict(rebuild(spec.table, row))
        return {k: made.get(k) for k in ("embedding", "document", "metadata")}
    with services.log.reading() as unit:
        synced = unit.synced_content([vector_id]).get(vector_id)
    current = services.vectors.get(spec.collection, [vector_id], embeddings=True).get(vector_id)
    if synced is None or synced[1] is None or current is None:
        return None
    document, metadata = json.loads(synced[1])
    return {
        "embedding": current.embedding,
        "document": document,
        "metadata": _caller_metadata(metadata),
    }


def _caller_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in RESERVED_METADATA}


def _update(services: Services, table: str, key: Any, fields: Mapping[str, Any]) -> None:
    """An update saga that rewrites only the vector, as ``runner.update`` runs it."""
    spec = services.tables.spec(table)
    shape = services.tables.shape(spec.table)
    item = _items.update_item(
        spec,
        shape,
        services.limits,
        key,
        {},
        fields.get("embedding"),
        fields.get("document"),
        fields.get("metadata"),
        None,
    )
    definition = services.definitions["update"]
    _writes.run(services, definition, spec, "update", [item])
