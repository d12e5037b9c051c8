"""Rebuild: re-create the tracked collections from the saga log, SQLite's own copy.

SQLite is the system of record; Chroma an index. Every vector a saga synced is kept in
the log (embedding, document, metadata) until its row is deleted, so a Chroma that lost
its collections (an empty or new folder, a fresh server, a folder Chroma can no longer
read, moved aside) can be filled again without the application's embedder. Sagas in
flight are settled first (recovery takes those whose owner is gone); if a live owner
still holds one, rebuild refuses, since its vectors may be half-written.

Upserts are idempotent, so a rebuild killed midway is completed by running it again.
Rows whose vector the log does not keep (synced before schema 5 and not written or
backfilled since, or of a table tracked with ``keep_vectors=False``)
are reported, never skipped silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from saga import failpoints
from saga._errors import SagaError, ValidationError
from saga._log import logger
from saga._ports import Key
from saga._recovery import DEFAULT_MAX_ATTEMPTS, recover
from saga._results import RebuildReport
from saga._services import Services

PAGE_ROWS = 1000  # rows read per SQLite transaction while looking for unkept vectors
# Vectors per upsert: the page's Python floats and Chroma's working memory grow with the
# request, and Chroma's time per vector hardly changes (see bench/rebuild.py).
PAGE_VECTORS = 1000


def rebuild(
    services: Services,
    *,
    table: str | None,
    page_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise ValidationError("must be a positive int", field="page_size")
    specs = [services.tables.spec(table)] if table is not None else services.tables.all()
    recover(
        services,
        older_than=dt.timedelta(0),
        policy="resume",
        dry_run=False,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
    )
    names = {spec.table for spec in specs}
    held = [s.saga_id for s in services.log.in_flight() if s.table in names]
    if held:
        raise SagaError(
            f"{len(held)} saga(s) in flight under a live owner ({', '.join(held[:3])}): "
            "rebuild when they have settled"
        )
    rebuilt = 0
    missing: list[str] = []
    size = max(1, page_size or min(PAGE_VECTORS, services.vectors.max_batch_size()))
    for spec in specs:
        after: str | None = None
        while True:
            page = services.log.kept_vectors(spec.table, after, size)
            if not page:
                break
            failpoints.hit("rebuild:page")
            services.vectors.upsert(spec.collection, page)
            rebuilt += len(page)
            after = page[-1].id
            if progress is not None:
                progress(len(page))
        missing.extend(_not_kept(services, spec.table))
        logger.info("rebuilt {} from the log", spec.collection)
    return RebuildReport(
        rebuilt=rebuilt, tables=tuple(sorted(names)), not_rebuildable=tuple(missing)
    )


def _not_kept(services: Services, table: str) -> list[str]:
    """Vector ids of committed rows whose vector the log does not keep."""
    spec = services.tables.spec(table)
    missing: list[str] = []
    last: Key | None = None
    while True:
        with services.log.reading() as unit:
            page = unit.rows.page(spec, last, PAGE_ROWS)
            ids = [spec.vector_id(key) for key, _link in page]
            kept = unit.kept_ids(ids)
        if not page:
            return missing
        missing.extend(vid for vid in ids if vid not in kept)
        last = page[-1][0]
