"""Consistent reads: semantic search that only answers with committed rows.

The join goes through the row's own ``vector_id`` column: a vector is returned only if
a committed row points at it. So a vector written by an in-flight create (its row is
not committed yet) or an orphan is never returned, and an in-flight update returns the
row as last committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from saga._errors import ValidationError
from saga._ports import TableSpec
from saga._results import QueryResult
from saga._validation import quote

if TYPE_CHECKING:
    from saga._runner import SagaRunner

_CHUNK = 500


def run_query(
    runner: SagaRunner,
    spec: TableSpec,
    vector: Sequence[float],
    n_results: int,
    where: Mapping[str, Any] | None,
) -> list[QueryResult]:
    if where is not None and not isinstance(where, Mapping):
        raise ValidationError("must be a dict (a Chroma metadata filter)", field="where")
    fetch = n_results + _in_flight(runner, spec)
    while True:
        hits = runner.vectors.query(spec.collection, vector, fetch, dict(where) if where else None)
        rows = _committed_rows(runner, spec, [hit.id for hit in hits])
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


def _in_flight(runner: SagaRunner, spec: TableSpec) -> int:
    with runner.database.read() as conn:
        return len(runner.log.in_flight_vectors(conn, spec.table))


def _committed_rows(
    runner: SagaRunner, spec: TableSpec, vector_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    table, link = quote(spec.table), quote(spec.vector_id_column)
    found: dict[str, dict[str, Any]] = {}
    with runner.database.read() as conn:
        for start in range(0, len(vector_ids), _CHUNK):
            chunk = vector_ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT * FROM {table} WHERE {link} IN ({marks})", chunk):
                as_dict = dict(row)
                found[as_dict[spec.vector_id_column]] = as_dict
    return found
