"""The row step, the pivot: the row change committed with ``sqlite_committed``.

It runs inside the SQLite transaction that records the state change (a ``LogUnit``),
so the row and the pivot commit together or not at all; its compensation is that
transaction's rollback, and nothing is left to undo afterwards. The SQL itself lives in
``stores.rows``; this step decides which rows change and how.
"""

from __future__ import annotations

from typing import Any

import attrs

from saga import failpoints
from saga._errors import RecordExistsError, RecordNotFoundError
from saga._ports import LogUnit
from saga._steps import SagaContext


@attrs.frozen
class CommitRows:
    """INSERT, UPDATE or DELETE every item's row (by ``op``)."""

    op: str
    name: str = "commit_rows"
    reaches: str = "sqlite_committed"
    local: bool = True

    def prepare(self, ctx: SagaContext, unit: LogUnit) -> None:
        stored = unit.rows.stored(ctx.spec, [item.known_key for item in ctx.items])
        many = len(ctx.items) > 1
        for index, item in enumerate(ctx.items):
            row = stored.get(item.known_key)
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

    def forward(self, ctx: SagaContext, unit: LogUnit | None) -> None:
        if unit is None:
            raise TypeError("CommitRows is a local step: it needs the saga's transaction")
        failpoints.hit("sqlite.commit_rows")
        spec = ctx.spec
        if self.op == "delete":
            unit.rows.delete(spec, [item.known_key for item in ctx.items])
        elif self.op == "create":
            unit.rows.insert(spec, [_created(ctx, item) for item in ctx.items])
        else:
            unit.rows.update(spec, [(item.known_key, _changed(ctx, item)) for item in ctx.items])

    def compensate(self, ctx: SagaContext) -> None:
        """Nothing to undo: a failed pivot transaction rolled back as a whole."""


def _created(ctx: SagaContext, item: Any) -> dict[str, Any]:
    values = dict(item.row or {})
    values[ctx.spec.vector_id_column] = ctx.vector_id(item)
    values[ctx.spec.key] = item.key
    return values


def _changed(ctx: SagaContext, item: Any) -> dict[str, Any]:
    values = dict(item.row or {})
    values[ctx.spec.vector_id_column] = ctx.vector_id(item)
    values.pop(ctx.spec.key, None)
    return values
