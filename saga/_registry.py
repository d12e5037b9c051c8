"""The tracked tables: ``track()``'s checks, and each table's spec and shape, cached.

A spec is read from the catalog once and kept; its dimension is learnt from the first
successful write when ``track()`` was not told it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs

from saga import _validation as check
from saga._config import Limits
from saga._errors import ConfigurationError, ValidationError
from saga._ports import TableCatalog, TableShape, TableSpec, VectorStore


class TableRegistry:
    """Which tables are tracked, how, and what columns they have."""

    def __init__(self, catalog: TableCatalog, vectors: VectorStore, limits: Limits) -> None:
        self._catalog = catalog
        self._vectors = vectors
        self._limits = limits
        self._specs: dict[str, TableSpec] = {}
        self._shapes: dict[str, TableShape] = {}
        self._lock = threading.Lock()

    def track(
        self,
        table: str,
        *,
        collection: str | None,
        key: str,
        vector_id_column: str,
        dimension: int | None,
        migrate: bool,
        keep_vectors: bool = True,
        link_keys: bool | None = None,
    ) -> TableSpec:
        """See ``SagaRunner.track``."""
        if not isinstance(keep_vectors, bool):
            raise ValidationError("must be True or False", field="keep_vectors")
        if link_keys is not None and not isinstance(link_keys, bool):
            raise ValidationError("must be True, False or None", field="link_keys")
        check.identifier(table, "table")
        check.identifier(key, "key")
        check.identifier(vector_id_column, "vector_id_column")
        check.collection_name(collection or table)
        if dimension is not None and (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= self._limits.max_dimension
        ):
            raise ValidationError(
                f"must be an int from 1 to {self._limits.max_dimension}", field="dimension"
            )
        shape = self._read_shape(table)
        for field, name in (("key", key), ("vector_id_column", vector_id_column)):
            if name not in shape.names:
                raise ValidationError(f"{table!r} has no column {name!r}", field=field)
        if key == vector_id_column:
            raise ValidationError("must differ from the key column", field="vector_id_column")
        if key not in shape.unique:
            # An update or delete by a column that is not unique would hit every row
            # sharing the value (and reconcile could not tell those rows apart).
            raise ValidationError(
                f"{key!r} must be the table's PRIMARY KEY or have a UNIQUE constraint of its "
                "own (not part of a composite one, not a partial index)",
                field="key",
            )
        wanted = TableSpec(
            table=table,
            collection=collection or table,
            key=key,
            vector_id_column=vector_id_column,
            dimension=dimension,
            keep_vectors=keep_vectors,
            link_keys=self._link_keys(table, link_keys),
        )
        self._refuse_conflicting_tracking(wanted, migrate=migrate)
        if wanted.dimension is None:
            wanted = attrs.evolve(wanted, dimension=self._vectors.dimension(wanted.collection))
        spec = self._catalog.save_tracked(wanted, migrate=migrate)
        with self._lock:
            self._specs[table] = spec
        return spec

    def _link_keys(self, table: str, wanted: bool | None) -> bool:
        """``link_keys`` as asked, or else as recorded (a table tracked before schema 7
        keeps them), or else none."""
        if wanted is not None:
            return wanted
        known = self._catalog.tracked(table)
        return known.link_keys if known is not None else False

    def _refuse_conflicting_tracking(self, wanted: TableSpec, *, migrate: bool) -> None:
        """Checks that need no Chroma call, made before any (a refused track() must not
        create a collection): the table's real spelling, a collection already used by
        another table (reconcile would take its vectors for orphans), a changed
        configuration without ``migrate``."""
        real = self._catalog.spelling(wanted.table)
        if real is not None and real != wanted.table:
            raise ValidationError(f"the table is spelt {real!r}", field="table")
        for other in self._catalog.all_tracked():
            if other.table != wanted.table and other.collection == wanted.collection:
                raise ValidationError(
                    f"collection {wanted.collection!r} already holds table {other.table!r}",
                    field="collection",
                )
            if (
                other.table == wanted.table
                and not migrate
                and (_configuration(other) != _configuration(wanted))
            ):
                raise ConfigurationError(
                    f"table {wanted.table!r} is tracked as {other}; pass migrate=True to change",
                    field="table",
                )

    def spec(self, table: object) -> TableSpec:
        """The tracked configuration of ``table`` (refused if it is not tracked)."""
        name = check.identifier(table, "table")
        with self._lock:
            known = self._specs.get(name)
        if known is not None and known.dimension is not None:
            return known
        stored = self._catalog.tracked(name)
        if stored is None:
            raise ConfigurationError(f"{name!r} is not tracked: call track() first", field="table")
        with self._lock:
            self._specs[name] = stored
        return stored

    def all(self) -> list[TableSpec]:
        return self._catalog.all_tracked()

    def shape(self, table: str) -> TableShape:
        """The table's columns, read once and cached."""
        with self._lock:
            cached = self._shapes.get(table)
        return cached if cached is not None else self._read_shape(table)

    def refresh_shape(self, table: str) -> TableShape:
        """Read the table's columns again (the application altered it meanwhile)."""
        return self._read_shape(table)

    def _read_shape(self, table: str) -> TableShape:
        shape = self._catalog.shape(table)
        if shape is None:
            raise ValidationError(f"no table {table!r} in the database", field="table")
        with self._lock:
            self._shapes[table] = shape
        return shape

    def learn_dimension(self, spec: TableSpec, embedding: Sequence[float] | None) -> None:
        """Record the dimension once a first write has succeeded (Chroma now holds it)."""
        if embedding is None:
            return
        self._catalog.set_dimension(spec.table, len(embedding))
        with self._lock:
            self._specs.pop(spec.table, None)


def _configuration(spec: TableSpec) -> tuple[object, ...]:
    """What ``track()`` may not change without ``migrate`` (the dimension is learnt)."""
    return (spec.collection, spec.key, spec.vector_id_column, spec.keep_vectors, spec.link_keys)
