"""Consistent reads: semantic search that only answers with committed rows.

The join goes through the row's own ``vector_id`` column: a vector is returned only if
a committed row points at it. So a vector written by an in-flight create (its row is
not committed yet) or an orphan is never returned, and an in-flight update returns the
row as last committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from saga._ports import TableSpec
from saga._results import QueryResult
from saga._services import Services


def run_query(
    services: Services,
    spec: TableSpec,
    vector: Sequence[float],
    n_results: int,
    where: Mapping[str, Any] | None,
) -> list[QueryResult]:
    with services.log.reading() as unit:
        fetch = n_results + len(unit.in_flight_vectors(spec.table))
    while True:
        hits = services.vectors.query(
            spec.collection, vector, fetch, dict(where) if where else None
        )
        with services.log.reading() as unit:
            rows = unit.rows.by_links(spec, [hit.id for hit in hits])
        results = [
            QueryResult(key=rows[hit.id][spec.key], distance=hit.distance, row=rows[hit.id])
            for hit in hits
            if hit.id in rows
        ]
        if len(results) >= n_results or len(hits) < fetch:
            break
        fetch *= 2  # orphans crowded the answer: ask for more
    # Ties by key in the key's own order (ints numerically), ints before strs.
    results.sort(key=lambda r: (r.distance, isinstance(r.key, str), r.key))
    return results[:n_results]
