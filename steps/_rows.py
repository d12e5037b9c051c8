"""The row step, the pivot: the row change committed with ``sqlite_committed``.

It runs inside the SQLite transaction that records the state change, so the row and
the pivot commit together or not at all; its compensation is that transaction's
rollback, and nothing is left to undo afterwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs

from saga import failpoints
from saga._errors import RecordExistsError, RecordNotFoundError
from saga._steps import Item, SagaContext
from saga._validation import quote

_CHUNK = 500


@attrs.frozen
class CommitRows:
    """INSERT, UPDATE or DELETE every item's row (by ``op``)."""

    op: str
    name: str = "commit_rows"
    reaches: str = "sqlite_committed"
    local: bool = True

    def prepare(self, ctx: SagaContext, txn: sqlite3.Connection) -> None:
        stored = _stored_rows(txn, ctx, [item.key for item in ctx.items])
        many = len(ctx.items) > 1
        for index, item in enumerate(ctx.items):
            row = stored.get(item.key)
            position = index if many else None
            if self.op == "create" and row is not None:
                raise RecordExistsError(
                    f"key {item.key!r} is already stored",
                    field=f"row.{ctx.spec.key}",
                    index=position,
                )
            if self.op != "create" and row is None:
                raise RecordNotFoundError(
                    f"key {item.key!r} is not stored", field="key", index=position
                )
            item.before_row = row

    def forward(self, ctx: SagaContext, txn: sqlite3.Connection | None) -> None:
        if txn is None:
            raise TypeError("CommitRows is a local step: it needs the saga's transaction")
        failpoints.hit("sqlite.commit_rows")
        table, key = quote(ctx.spec.table), quote(ctx.spec.key)
        if self.op == "delete":
            txn.executemany(
                f"DELETE FROM {table} WHERE {key} = ?", [(item.key,) for item in ctx.items]
            )
            return
        for columns, rows in _grouped(ctx, ctx.items, self.op).items():
            names = ", ".join(quote(c) for c in columns)
            if self.op == "create":
                marks = ", ".join("?" * len(columns))
                txn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            else:
                sets = ", ".join(f"{quote(c)} = ?" for c in columns)
                txn.executemany(f"UPDATE {table} SET {sets} WHERE {key} = ?", rows)

    def compensate(self, ctx: SagaContext) -> None:
        """Nothing to undo: a failed pivot transaction rolled back as a whole."""


def _grouped(
    ctx: SagaContext, items: Sequence[Item], op: str
) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    """Rows grouped by their column set, so each group is one executemany."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    link = ctx.spec.vector_id_column
    for item in items:
        values = dict(item.row or {})
        values[link] = ctx.vector_id(item)
        if op == "create":
            values[ctx.spec.key] = item.key
        else:
            values.pop(ctx.spec.key, None)
        columns = tuple(values)
        params = tuple(values.values())
        groups.setdefault(columns, []).append(params if op == "create" else (*params, item.key))
    return groups


def _stored_rows(
    txn: sqlite3.Connection, ctx: SagaContext, keys: Sequence[Any]
) -> dict[Any, dict[str, Any]]:
    table, key = quote(ctx.spec.table), quote(ctx.spec.key)
    found: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = txn.execute(f"SELECT * FROM {table} WHERE {key} IN ({marks})", tuple(chunk))
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            found[row[ctx.spec.key]] = row
    return found
