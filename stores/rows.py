"""SQL on the application's own tables: reading and writing rows of tracked tables.

Identifiers cannot be bound as parameters, so table and column names are quoted here,
after ``saga._validation.identifier`` allowed them and ``track()`` found them in the
real schema; values are always bound. ``IN`` lists are cut at ``_CHUNK`` parameters,
well under SQLite's limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from saga._ports import Key, TableSpec

_CHUNK = 500


def quote(name: str) -> str:
    """Quote an identifier already validated against the allow-list and the schema."""
    return '"' + name.replace('"', '""') + '"'


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class SqliteRows:
    """``saga._ports.Rows`` inside one transaction of ``conn``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def stored(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        return self._rows_where(spec, spec.key, keys)

    def insert(self, spec: TableSpec, rows: Sequence[Mapping[str, Any]]) -> None:
        table = quote(spec.table)
        for columns, params in _grouped((tuple(row), tuple(row.values())) for row in rows):
            names = ", ".join(quote(c) for c in columns)
            marks = ", ".join("?" * len(columns))
            self._conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", params)

    def update(self, spec: TableSpec, changes: Sequence[tuple[Key, Mapping[str, Any]]]) -> None:
        table, key = quote(spec.table), quote(spec.key)
        groups = _grouped((tuple(values), (*values.values(), k)) for k, values in changes)
        for columns, params in groups:
            sets = ", ".join(f"{quote(c)} = ?" for c in columns)
            self._conn.executemany(f"UPDATE {table} SET {sets} WHERE {key} = ?", params)

    def delete(self, spec: TableSpec, keys: Sequence[Key]) -> None:
        table, key = quote(spec.table), quote(spec.key)
        self._conn.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(k,) for k in keys])

    def by_links(self, spec: TableSpec, vector_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._rows_where(spec, spec.vector_id_column, vector_ids)

    def links(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, Any]:
        table, key, link = quote(spec.table), quote(spec.key), quote(spec.vector_id_column)
        found: dict[Key, Any] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT {key}, {link} FROM {table} WHERE {key} IN ({marks})", tuple(chunk)
            )
            found.update({row[0]: row[1] for row in rows})
        return found

    def page(self, spec: TableSpec, after: Key | None, size: int) -> list[tuple[Key, Any]]:
        table, key, link = quote(spec.table), quote(spec.key), quote(spec.vector_id_column)
        if after is None:
            cursor = self._conn.execute(
                f"SELECT {key}, {link} FROM {table} ORDER BY {key} LIMIT ?", (size,)
            )
        else:
            cursor = self._conn.execute(
                f"SELECT {key}, {link} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
                (after, size),
            )
        return [(row[0], row[1]) for row in cursor]

    def count(self, spec: TableSpec) -> int:
        row = self._conn.execute(f"SELECT COUNT(*) FROM {quote(spec.table)}").fetchone()
        return int(row[0])

    def _rows_where(
        self, spec: TableSpec, column: str, values: Sequence[Any]
    ) -> dict[Any, dict[str, Any]]:
        """Whole rows whose ``column`` is one of ``values``, by that column's value."""
        table, where = quote(spec.table), quote(column)
        found: dict[Any, dict[str, Any]] = {}
        for chunk in _chunks(list(values)):
            marks = ",".join("?" * len(chunk))
            cursor = self._conn.execute(
                f"SELECT * FROM {table} WHERE {where} IN ({marks})", tuple(chunk)
            )
            names = [d[0] for d in cursor.description]
            for row_values in cursor:
                row = dict(zip(names, row_values, strict=True))
                found[row[column]] = row
        return found


def _grouped(
    rows: Iterator[tuple[tuple[str, ...], tuple[Any, ...]]],
) -> list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    """Rows grouped by their column set, so each group is one ``executemany``."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for columns, params in rows:
        groups.setdefault(columns, []).append(params)
    return list(groups.items())
