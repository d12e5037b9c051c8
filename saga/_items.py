"""Turning a caller's arguments into checked ``Item``s, refusing bad input by field.

Everything here runs before any store is touched: a ``ValidationError`` names the field
(and the batch index), and nothing has been written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from saga import _validation as check
from saga._config import Limits
from saga._errors import UnknownColumnError, ValidationError
from saga._ports import Key, TableShape, TableSpec
from saga._registry import TableRegistry
from saga._steps import Item

CREATE_FIELDS = frozenset({"row", "embedding", "document", "metadata"})
UPDATE_FIELDS = frozenset({"key", "changes", "embedding", "document", "metadata"})


def create_item(
    spec: TableSpec,
    shape: TableShape,
    limits: Limits,
    row: Any,
    embedding: Any,
    document: Any,
    metadata: Any,
    index: int | None = None,
) -> Item:
    if isinstance(row, Mapping) and spec.key in row:
        # Checked before row_values, which would store a bool key as 0/1.
        check.key(row[spec.key], f"row.{spec.key}", limits, index)
    values = check.row_values(
        row, shape.names, field="row", protected=(spec.vector_id_column,), index=index
    )
    if spec.key not in values and spec.key not in shape.integer_keys:
        raise ValidationError("the key column is required", field=f"row.{spec.key}", index=index)
    key: Key | None = None  # left out of an INTEGER PRIMARY KEY: SQLite assigns it
    if spec.key in values:
        key = check.key(values.pop(spec.key), f"row.{spec.key}", limits, index)
    # The key was given (checked above) and the library writes the link column itself.
    given = (spec.key, spec.vector_id_column)
    required = [name for name in shape.required if name not in given]
    check.required_columns(values, required, field="row", index=index, partial=False)
    if key is not None:
        check.key_affinity(key, shape, spec.key, field=f"row.{spec.key}", index=index)
    return Item(
        key=key,
        row=values,
        embedding=check.embedding(embedding, spec.dimension, limits, index),
        document=check.document(document, limits, index),
        metadata=check.metadata(metadata, limits, index),
    )


def update_item(
    spec: TableSpec,
    shape: TableShape,
    limits: Limits,
    key: Any,
    changes: Any,
    embedding: Any,
    document: Any,
    metadata: Any,
    index: int | None = None,
) -> Item:
    values = check.row_values(
        changes,
        shape.names,
        field="changes",
        protected=(spec.vector_id_column, spec.key),
        index=index,
    )
    check.required_columns(values, shape.required, field="changes", index=index, partial=True)
    checked_key = check.key(key, "key", limits, index)
    check.key_affinity(checked_key, shape, spec.key, field="key", index=index)
    return Item(
        key=checked_key,
        row=values,
        embedding=None
        if embedding is None
        else check.embedding(embedding, spec.dimension, limits, index),
        document=check.document(document, limits, index),
        metadata=check.metadata(metadata, limits, index),
    )


def with_fresh_shape(
    tables: TableRegistry, spec: TableSpec, build: Callable[[TableSpec, TableShape], list[Item]]
) -> list[Item]:
    """``build`` the items against the table's known shape; a column it does not know
    has the table read again once (the application may have added it since), so a
    runner notices ALTER TABLE without a restart, and without a PRAGMA per write."""
    try:
        return build(spec, tables.shape(spec.table))
    except UnknownColumnError:
        return build(spec, tables.refresh_shape(spec.table))


def create_items(
    spec: TableSpec, shape: TableShape, limits: Limits, items: Sequence[Mapping[str, Any]]
) -> list[Item]:
    """``create_many``'s items: ``{"row", "embedding", "document", "metadata"}`` each."""
    check.batch_size(items, limits)
    built = []
    for index, entry in enumerate(items):
        data = _entry(entry, index, CREATE_FIELDS)
        if "row" not in data or "embedding" not in data:
            raise ValidationError("needs 'row' and 'embedding'", field="item", index=index)
        built.append(
            create_item(
                spec,
                shape,
                limits,
                data["row"],
                data["embedding"],
                data.get("document"),
                data.get("metadata"),
                index,
            )
        )
    check.unique_keys([item.key for item in built if item.key is not None], spec.key)
    return built


def update_items(
    spec: TableSpec, shape: TableShape, limits: Limits, items: Sequence[Mapping[str, Any]]
) -> list[Item]:
    """``update_many``'s items: ``{"key", "changes", "embedding", ...}`` each."""
    check.batch_size(items, limits)
    built = []
    for index, entry in enumerate(items):
        data = _entry(entry, index, UPDATE_FIELDS)
        if "key" not in data:
            raise ValidationError("needs 'key'", field="item", index=index)
        built.append(
            update_item(
                spec,
                shape,
                limits,
                data["key"],
                {} if data.get("changes") is None else data["changes"],
                data.get("embedding"),
                data.get("document"),
                data.get("metadata"),
                index,
            )
        )
    check.unique_keys([item.key for item in built if item.key is not None], spec.key)
    return built


def delete_items(spec: TableSpec, limits: Limits, keys: Sequence[Key]) -> list[Item]:
    check.batch_size(keys, limits, field="keys")
    built = [Item(key=check.key(k, "key", limits, i)) for i, k in enumerate(keys)]
    check.unique_keys([item.key for item in built if item.key is not None], spec.key)
    return built


def same_dimension(items: Sequence[Item]) -> None:
    """Every embedding as long as the first (a table whose dimension is not known yet)."""
    first = items[0].embedding if items else None
    if first is None:
        return
    for index, item in enumerate(items):
        if item.embedding is not None and len(item.embedding) != len(first):
            raise ValidationError(
                f"has {len(item.embedding)} dimensions, item 0 has {len(first)}",
                field="embedding",
                index=index,
            )


def _entry(entry: object, index: int, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValidationError("must be a dict", field="item", index=index)
    unknown = set(entry) - allowed
    if unknown:
        raise ValidationError(
            f"unknown fields {sorted(map(str, unknown))}", field="item", index=index
        )
    return dict(entry)


def checked_items(
    spec: TableSpec, shape: TableShape, limits: Limits, items: Sequence[Item]
) -> list[Item]:
    """A custom saga's items, each field checked as a write checks it (the key, the row's
    columns and values, the embedding, document and metadata); fresh ``Item``s."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("must be a list of Item", field="items")
    check.batch_size(items, limits)
    built = []
    many = len(items) > 1
    for position, item in enumerate(items):
        index = position if many else None
        if not isinstance(item, Item):
            raise ValidationError("must be a saga.extend.Item", field="item", index=index)
        key = check.key(item.key, "key", limits, index)
        check.key_affinity(key, shape, spec.key, field="key", index=index)
        row = None
        if item.row is not None:
            row = check.row_values(
                item.row,
                shape.names,
                field="row",
                protected=(spec.vector_id_column, spec.key),
                index=index,
            )
        built.append(
            Item(
                key=key,
                row=row,
                embedding=None
                if item.embedding is None
                else check.embedding(item.embedding, spec.dimension, limits, index),
                document=check.document(item.document, limits, index),
                metadata=check.metadata(item.metadata, limits, index),
            )
        )
    check.unique_keys([item.key for item in built if item.key is not None], spec.key)
    return built
