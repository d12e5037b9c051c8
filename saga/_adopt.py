"""Adopt: take over a tracked table whose rows name vectors stored under the app's own ids.

An application that wrote its vectors itself keeps their ids (``sum_1``, ...) in the
row's vector-id column (or knows them: ``mapping``, key -> legacy id). Adopting re-keys
each vector to the library's id ``table:key`` without re-embedding, through sagas of the
``adopt`` definition (``steps._adopt``), one per page of rows: the legacy vector copied
(embedding bit for bit, document, metadata), the row pointed at the copy with
``sqlite_committed`` (the pivot), the legacy id deleted, and the copy recorded in the log
as synced. A run killed anywhere is finished by running it again: sagas its death left
in flight are settled first (recovery), and rows already adopted are counted, not
touched. Nothing is written half: a legacy vector that fails the library's checks
(dimension, metadata) is reported, never copied.

Also reported: rows without a vector (no link, or a legacy id Chroma does not hold:
the application's embedder can make them, ``reconcile(fix=True, rebuild=...)``),
vectors that no row names (``delete_orphans`` deletes them, each re-checked under
SQLite's write lock), and keys held by sagas of live owners (left alone).

A legacy vector named by several rows is copied to each of them in one saga, so that
it is dropped only once every one of them has its copy. Finding those, and the vectors
no row names, reads the rows twice more (SQLite only) and holds a hash of every row's
vector id: about 60 bytes a row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from saga import _validation as check
from saga import _writes, failpoints
from saga._errors import ConfigurationError, SagaConflictError, ValidationError
from saga._log import logger
from saga._machine import SYNCED, SagaDefinition
from saga._ports import Key, TableSpec, VectorRecord
from saga._reads import row_pages
from saga._recovery import DEFAULT_MAX_ATTEMPTS, recover
from saga._services import Services
from saga._steps import RESERVED_METADATA, Item

ADOPT = "adopt"
PAGE_ATTEMPTS = 3  # a page whose rows changed while read is read again, this often
SCAN_ROWS = 1000  # rows read per SQLite transaction in the passes that only read


@attrs.frozen
class AdoptReport:
    """What ``adopt`` did to one table.

    ``adopted``: rows re-keyed (or recorded as synced) by this run; ``already``: rows
    adopted and synced before it; ``rows_without_vector``: keys whose link is empty or
    names no vector Chroma holds; ``invalid``: (key, reason) of rows whose legacy vector
    fails the library's checks (not adopted); ``vectors_without_row``: collection ids
    that no row names; ``deleted_orphans``: those of them deleted (``delete_orphans``);
    ``skipped``: keys held by sagas in flight (of live owners, or that recovery could
    not settle), left alone, with the rows sharing their legacy vector.
    """

    table: str
    adopted: int = 0
    already: int = 0
    rows_without_vector: tuple[Key, ...] = ()
    invalid: tuple[tuple[Key, str], ...] = ()
    vectors_without_row: tuple[str, ...] = ()
    deleted_orphans: tuple[str, ...] = ()
    skipped: tuple[Key, ...] = ()

    @property
    def complete(self) -> bool:
        """Every row adopted and every vector named by a row: nothing left to resolve."""
        left = set(self.vectors_without_row) - set(self.deleted_orphans)
        return not (self.rows_without_vector or self.invalid or left or self.skipped)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["invalid"] = [{"key": key, "error": error} for key, error in self.invalid]
        data["complete"] = self.complete
        return data


@attrs.define
class _Found:
    adopted: int = 0
    already: int = 0
    without_vector: list[Key] = attrs.field(factory=list)
    invalid: list[tuple[Key, str]] = attrs.field(factory=list)
    skipped: list[Key] = attrs.field(factory=list)

    def add(self, other: _Found) -> None:
        self.adopted += other.adopted
        self.already += other.already
        self.without_vector.extend(other.without_vector)
        self.invalid.extend(other.invalid)
        self.skipped.extend(other.skipped)


@attrs.frozen
class _Table:
    """What every pass needs: the spec, the caller's mapping, the checks' dimension."""

    spec: TableSpec
    mapping: Mapping[Key, str] | None
    dimension: int | None

    def legacy(self, key: Key, link: object) -> str | None:
        """The legacy vector id of a row not yet linked to ``table:key``."""
        named = link if self.mapping is None else self.mapping.get(key, link)
        return named if isinstance(named, str) and named else None


def adopt(
    services: Services,
    *,
    table: str,
    mapping: Mapping[Key, str] | None,
    delete_orphans: bool,
    page_size: int,
    progress: Callable[[int], None] | None = None,
) -> AdoptReport:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValidationError("must be a positive int", field="page_size")
    if not isinstance(delete_orphans, bool):
        raise ValidationError("must be True or False", field="delete_orphans")
    spec = services.tables.spec(table)
    definition = services.definition(ADOPT)
    if definition is None:
        raise ConfigurationError(f"no saga definition {ADOPT!r}", field="definition")
    checked = _checked_mapping(mapping, services)
    recover(
        services,
        older_than=dt.timedelta(0),
        policy="resume",
        dry_run=False,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
    )
    target = _Table(spec, checked, spec.dimension or services.vectors.dimension(spec.collection))
    shared = _shared_legacy_ids(services, target)
    found = _Found()
    deferred: dict[str, list[Key]] = {}
    for page in row_pages(services, spec, page_size):
        failpoints.hit("adopt:page")
        keys: list[Key] = []
        for key, link in page:
            if _legacy_hash(target, key, link) in shared:
                deferred.setdefault(str(target.legacy(key, link)), []).append(key)
            else:
                keys.append(key)
        found.add(_adopt_keys(services, definition, target, keys))
        if progress is not None:
            progress(len(page))
    for keys in _packed(deferred, page_size):  # a shared legacy vector: all its rows at once
        found.add(_adopt_keys(services, definition, target, keys))
    orphans = _vectors_without_row(services, target, page_size)
    deleted = _delete_orphans(services, target, orphans) if delete_orphans else []
    logger.info("adopted {} rows of {}", found.adopted, spec.table)
    return AdoptReport(
        table=spec.table,
        adopted=found.adopted,
        already=found.already,
        rows_without_vector=tuple(found.without_vector),
        invalid=tuple(found.invalid),
        vectors_without_row=tuple(orphans),
        deleted_orphans=tuple(deleted),
        skipped=tuple(found.skipped),
    )


def _checked_mapping(mapping: object, services: Services) -> dict[Key, str] | None:
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"must be a dict, got {type(mapping).__name__}", field="mapping")
    checked: dict[Key, str] = {}
    for key, legacy in mapping.items():
        where = f"mapping[{key!r}]"
        checked_key = check.key(key, "mapping", services.limits)
        if not isinstance(legacy, str) or not legacy:
            raise ValidationError("must be a vector id (a non-empty str)", field=where)
        checked[checked_key] = legacy
    return checked


def _legacy_hash(target: _Table, key: Key, link: object) -> int | None:
    if link == target.spec.vector_id(key):
        return None
    legacy = target.legacy(key, link)
    return None if legacy is None else hash(legacy)


def _shared_legacy_ids(services: Services, target: _Table) -> set[int]:
    """Hashes of the legacy ids more than one row names (a collision only makes rows
    wait for the shared pass, where they are adopted all the same)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for page in row_pages(services, target.spec, SCAN_ROWS):
        for key, link in page:
            value = _legacy_hash(target, key, link)
            if value is not None:
                (shared if value in seen else seen).add(value)
    return shared


def _packed(groups: Mapping[str, list[Key]], size: int) -> Iterator[list[Key]]:
    """Whole groups, packed into batches of about ``size`` keys."""
    batch: list[Key] = []
    for keys in groups.values():
        if batch and len(batch) + len(keys) > size:
            yield batch
            batch = []
        batch.extend(keys)
    if batch:
        yield batch


def _adopt_keys(
    services: Services, definition: SagaDefinition, target: _Table, keys: Sequence[Key]
) -> _Found:
    """One saga over these rows; a page whose rows changed while read is read again."""
    for attempt in range(PAGE_ATTEMPTS):
        found, items = _plan(services, target, keys)
        if not items:
            return found
        try:
            _writes.run(services, definition, target.spec, ADOPT, items)
        except SagaConflictError:
            if attempt == PAGE_ATTEMPTS - 1:
                raise
            logger.debug("rows changed while read: the page again")
            continue
        found.adopted += len(items)
        return found
    raise AssertionError("unreachable")


def _plan(services: Services, target: _Table, keys: Sequence[Key]) -> tuple[_Found, list[Item]]:
    """What to do with each row: already adopted, held, without a vector, invalid, or an
    item of the saga (its legacy vector read from Chroma and checked)."""
    spec = target.spec
    found = _Found()
    with services.log.reading() as unit:
        links = unit.rows.links(spec, list(keys))
        busy = unit.in_flight_vectors(spec.table)
        versions = unit.vector_versions([spec.vector_id(key) for key in links])
    wanted: dict[Key, str] = {}
    held: set[str] = set()  # legacy ids a held row names: not dropped from under it
    for key, link in links.items():
        vector_id = spec.vector_id(key)
        legacy = vector_id if link == vector_id else target.legacy(key, link)
        if vector_id in busy:
            found.skipped.append(key)
            held.update([legacy] if legacy else [])
        elif link == vector_id and versions.get(vector_id, (None, None))[1] == SYNCED:
            found.already += 1
        elif legacy is None:
            found.without_vector.append(key)
        elif legacy != vector_id and legacy.startswith(f"{spec.table}:"):
            found.invalid.append((key, f"names {legacy!r}, the library's id of another row"))
        else:
            wanted[key] = legacy
    stored = services.vectors.get(spec.collection, list(set(wanted.values())), embeddings=True)
    items: list[Item] = []
    for key, legacy in wanted.items():
        record = stored.get(legacy)
        if legacy in held:
            found.skipped.append(key)
        elif record is None:
            found.without_vector.append(key)
        else:
            try:
                items.append(_item(services, target, key, links[key], record))
            except ValidationError as exc:
                found.invalid.append((key, str(exc)))
    return found, items


def _item(services: Services, target: _Table, key: Key, link: object, record: VectorRecord) -> Item:
    """The saga's item for one row: the legacy vector's content, checked as a write's."""
    spec, limits = target.spec, services.limits
    checked_key = check.key(key, "key", limits)
    linked = record.id == spec.vector_id(key)
    metadata = dict(record.metadata or {})
    if linked:  # written by the library before: its own keys are not the caller's
        metadata = {k: v for k, v in metadata.items() if k not in RESERVED_METADATA}
    return Item(
        key=checked_key,
        embedding=check.embedding(record.embedding, target.dimension, limits),
        document=check.document(record.document, limits),
        metadata=check.metadata(metadata, limits) if metadata else None,
        before_row={spec.vector_id_column: link},
        before_vector=record if linked else VectorRecord(record.id, None, None, None),
    )


def _named_ids(services: Services, target: _Table) -> set[int]:
    """Hashes of every vector id a row names: its link, and (a caller's mapping) the
    legacy id of a row not adopted yet."""
    named: set[int] = set()
    for page in row_pages(services, target.spec, SCAN_ROWS):
        for key, link in page:
            if isinstance(link, str):
                named.add(hash(link))
            value = _legacy_hash(target, key, link) if target.mapping is not None else None
            if value is not None:
                named.add(value)
    return named


def _vectors_without_row(services: Services, target: _Table, page_size: int) -> list[str]:
    """Ids in the collection that no row names (vectors a saga is writing aside)."""
    named = _named_ids(services, target)
    with services.log.reading() as unit:
        busy = unit.in_flight_vectors(target.spec.table)
    return [
        record.id
        for page in services.vectors.iter_records(target.spec.collection, page_size)
        for record in page
        if hash(record.id) not in named and record.id not in busy
    ]


def _delete_orphans(services: Services, target: _Table, orphans: list[str]) -> list[str]:
    """Delete them under SQLite's write lock (no saga starts meanwhile), each re-checked
    inside it: no row names it, no saga is writing it."""
    spec = target.spec
    by_legacy: dict[str, list[Key]] = {}
    for key, legacy in (target.mapping or {}).items():
        by_legacy.setdefault(legacy, []).append(key)
    deleted: list[str] = []
    for start in range(0, len(orphans), 500):
        chunk = orphans[start : start + 500]
        with services.log.unit() as unit:
            linked = unit.rows.by_links(spec, chunk)
            busy = unit.in_flight_vectors(spec.table)
            mapped = [key for vid in chunk for key in by_legacy.get(vid, [])]
            links = unit.rows.links(spec, mapped)
            waiting = {
                target.mapping[key]
                for key, link in links.items()
                if target.mapping is not None and link != spec.vector_id(key)
            }
            still = [v for v in chunk if v not in linked and v not in busy and v not in waiting]
            services.vectors.delete(spec.collection, still)
        deleted.extend(still)
    return deleted
