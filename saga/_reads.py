"""The runner's reads: semantic search, one row, vectors by key, counts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from saga import _validation as check
from saga._errors import ValidationError
from saga._ports import Key, TableSpec, VectorRecord
from saga._query import run_query
from saga._results import QueryResult, TableCounts
from saga._services import Services


def query(
    services: Services,
    table: str,
    embedding: Sequence[float],
    n_results: int,
    where: Mapping[str, Any] | None,
) -> list[QueryResult]:
    spec = services.tables.spec(table)
    vector = check.embedding(embedding, spec.dimension, services.limits)
    if isinstance(n_results, bool) or not isinstance(n_results, int) or n_results < 1:
        raise ValidationError("must be a positive int", field="n_results")
    if where is not None and not isinstance(where, Mapping):
        raise ValidationError("must be a dict (a Chroma metadata filter)", field="where")
    return run_query(services, spec, vector, n_results, where)


def row(services: Services, table: str, key: Key) -> dict[str, Any] | None:
    spec = services.tables.spec(table)
    checked = check.key(key, "key", services.limits)
    with services.log.reading() as unit:
        return unit.rows.stored(spec, [checked]).get(checked)


def vectors_of(
    services: Services, table: str, keys: Sequence[Key], *, embeddings: bool
) -> dict[Key, VectorRecord]:
    spec = services.tables.spec(table)
    checked = [check.key(k, "keys", services.limits, i) for i, k in enumerate(keys)]
    by_id = {spec.vector_id(k): k for k in checked}
    found = services.vectors.get(spec.collection, list(by_id), embeddings=embeddings)
    return {by_id[vid]: record for vid, record in found.items()}


def count(services: Services, table: str) -> TableCounts:
    spec = services.tables.spec(table)
    with services.log.reading() as unit:
        rows = unit.rows.count(spec)
    return TableCounts(rows=rows, vectors=services.vectors.count(spec.collection))


def row_pages(services: Services, spec: TableSpec, size: int) -> Iterator[list[tuple[Key, Any]]]:
    """(key, vector-id column) of every committed row, in key order, a page per read
    transaction (keyset: a row written meanwhile is seen or not, never twice)."""
    last: Key | None = None
    while True:
        with services.log.reading() as unit:
            page = unit.rows.page(spec, last, size)
        if not page:
            return
        yield page
        last = page[-1][0]
