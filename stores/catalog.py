"""The application's tables as SQLite describes them, and the tracked ones.

``saga_tracked_tables`` persists each ``track()`` so that the CLI can recover and
reconcile without application code; ``pragma_table_info`` tells which columns a table
has, read before any write so that bad input is refused by name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from saga._clock import Clock, stamp
from saga._errors import ConfigurationError
from saga._ports import TableShape, TableSpec
from stores.sqlite import Database


def shape_of(rows: Sequence[tuple[Any, ...]], unique: Sequence[str] = ()) -> TableShape:
    """A ``TableShape`` from ``pragma_table_info``'s (name, type, notnull, dflt_value, pk)
    and the columns a single-column UNIQUE index covers."""
    single_pk = sum(1 for r in rows if r[4]) == 1
    integer_keys = tuple(
        str(r[0]) for r in rows if r[4] and single_pk and str(r[1]).upper() == "INTEGER"
    )
    required = tuple(
        str(r[0]) for r in rows if r[2] and r[3] is None and str(r[0]) not in integer_keys
    )
    declared = {str(r[0]): str(r[1]).upper() for r in rows}
    return TableShape(
        names=tuple(str(r[0]) for r in rows),
        required=required,
        integer_keys=integer_keys,
        int_affinity=tuple(n for n, t in declared.items() if "INT" in t),
        text_affinity=tuple(
            n
            for n, t in declared.items()
            if "INT" not in t and any(part in t for part in ("CHAR", "CLOB", "TEXT"))
        ),
        unique=tuple(dict.fromkeys([*(str(r[0]) for r in rows if r[4] and single_pk), *unique])),
    )


class SqliteTableCatalog:
    """``saga._ports.TableCatalog`` on one database."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def shape(self, table: str) -> TableShape | None:
        with self.db.read() as conn:
            rows = conn.execute(
                'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) '
                "ORDER BY cid",
                (table,),
            ).fetchall()
            # A UNIQUE constraint or index on one column, not partial (a partial index
            # lets rows outside its WHERE repeat the value).
            unique = conn.execute(
                "SELECT MIN(info.name) FROM pragma_index_list(?) AS list "
                "JOIN pragma_index_info(list.name) AS info "
                'WHERE list."unique" = 1 AND list.partial = 0 '
                "GROUP BY list.name HAVING COUNT(*) = 1",
                (table,),
            ).fetchall()
        if not rows:
            return None
        return shape_of([tuple(r) for r in rows], [str(r[0]) for r in unique if r[0]])

    def spelling(self, table: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (table,),
            ).fetchone()
        return None if row is None else str(row[0])

    def tracked(self, table: str) -> TableSpec | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM saga_tracked_tables WHERE sqlite_table = ?", (table,)
            ).fetchone()
        return None if row is None else _spec(row)

    def all_tracked(self) -> list[TableSpec]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM saga_tracked_tables ORDER BY sqlite_table")
            return [_spec(row) for row in rows]

    def save_tracked(self, spec: TableSpec, *, migrate: bool) -> TableSpec:
        """Record a table's configuration; same again is a no-op, a change needs migrate.

        A dimension not yet recorded is learnt (it is what Chroma holds, not a change).
        """
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT * FROM saga_tracked_tables WHERE sqlite_table = ?", (spec.table,)
            ).fetchone()
            if row is None:
                self._write_spec(conn, spec, replace=False)
                return spec
            current = _spec(row)
            if _same_links(current, spec):
                if current.dimension is None and spec.dimension is not None:
                    set_dimension(conn, spec.table, spec.dimension)
                    return spec
                return current
            if not migrate:
                raise ConfigurationError(
                    f"table {spec.table!r} is tracked as {current}; pass migrate=True to change",
                    field="table",
                )
            self._write_spec(conn, spec, replace=True)
        return spec

    def set_dimension(self, table: str, dimension: int) -> None:
        with self.db.write() as conn:
            set_dimension(conn, table, dimension)

    def _write_spec(self, conn: sqlite3.Connection, spec: TableSpec, *, replace: bool) -> None:
        now = stamp(self.clock.now())
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conn.execute(
            f"{verb} INTO saga_tracked_tables (sqlite_table, collection, key_column, "
            "vector_id_column, dimension, keep_vectors, link_keys, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spec.table,
                spec.collection,
                spec.key,
                spec.vector_id_column,
                spec.dimension,
                int(spec.keep_vectors),
                int(spec.link_keys),
                now,
                now,
            ),
        )


def set_dimension(conn: sqlite3.Connection, table: str, dimension: int) -> None:
    """Record a collection's dimension the first time it is learnt."""
    conn.execute(
        "UPDATE saga_tracked_tables SET dimension = ? WHERE sqlite_table = ? AND dimension IS NULL",
        (dimension, table),
    )


def _spec(row: sqlite3.Row) -> TableSpec:
    return TableSpec(
        table=row["sqlite_table"],
        collection=row["collection"],
        key=row["key_column"],
        vector_id_column=row["vector_id_column"],
        dimension=row["dimension"],
        keep_vectors=bool(row["keep_vectors"]),
        link_keys=bool(row["link_keys"]),
    )


def _same_links(current: TableSpec, wanted: TableSpec) -> bool:
    """Same configuration; a dimension unknown on either side is no difference."""
    return (
        current.collection == wanted.collection
        and current.key == wanted.key
        and current.vector_id_column == wanted.vector_id_column
        and current.keep_vectors == wanted.keep_vectors
        and current.link_keys == wanted.link_keys
        and (None in (wanted.dimension, current.dimension) or wanted.dimension == current.dimension)
    )
