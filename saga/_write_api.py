"""The runner's writes: one saga per call (``SagaRunner`` inherits these).

Each write checks its input against the table's tracked configuration and current
shape before any store is touched, then runs its saga through ``saga._writes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from saga import _items, _writes
from saga import _validation as check
from saga._adopt import AdoptReport, adopt
from saga._config import Limits
from saga._errors import ConfigurationError, SagaError
from saga._machine import SagaDefinition
from saga._ports import Key, TableShape, TableSpec
from saga._results import SagaResult
from saga._services import Services
from saga._steps import Item
from saga._unit import AtomicUnit


class WriteMethods:
    """create/update/delete (and their ``_many``) and ``run``, over ``_services``."""

    _services: Services
    _closed: bool

    @property
    def limits(self) -> Limits:
        """Its input limits."""
        return self._services.limits

    def spec(self, table: object) -> TableSpec:
        """The tracked configuration of ``table`` (refused if it is not tracked)."""
        return self._services.tables.spec(table)

    def definition(self, name: str) -> SagaDefinition:
        """The saga definition registered under ``name`` (built-in or ``register``ed)."""
        found = self._services.definition(name)
        if found is None:
            raise ConfigurationError(f"no saga definition {name!r}", field="definition")
        return found

    def _ensure_open(self) -> None:
        if self._closed:
            raise SagaError("the runner is closed")

    def create(
        self,
        table: str,
        row: Mapping[str, Any],
        *,
        embedding: Sequence[float],
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SagaResult:
        """Insert ``row`` and upsert its vector, as one saga. Returns once ``synced``."""
        spec, items = self._built(
            table,
            lambda spec, shape: [
                _items.create_item(spec, shape, self.limits, row, embedding, document, metadata)
            ],
        )
        return self._run("create", spec, items)

    def create_many(self, table: str, items: Sequence[Mapping[str, Any]]) -> SagaResult:
        """Insert many rows with their vectors as one saga (all or nothing).

        Each item is ``{"row": {...}, "embedding": [...], "document": ..., "metadata": ...}``.
        """
        spec, built = self._built(
            table, lambda spec, shape: _items.create_items(spec, shape, self.limits, items)
        )
        return self._run("create_many", spec, built)

    def update(
        self,
        table: str,
        key: Key,
        changes: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SagaResult:
        """Change a row and its vector as one saga; omitted vector fields are kept."""
        spec, items = self._built(
            table,
            lambda spec, shape: [
                _items.update_item(
                    spec,
                    shape,
                    self.limits,
                    key,
                    {} if changes is None else changes,
                    embedding,
                    document,
                    metadata,
                )
            ],
        )
        return self._run("update", spec, items)

    def update_many(self, table: str, items: Sequence[Mapping[str, Any]]) -> SagaResult:
        """Update many rows as one saga: ``{"key": k, "changes": {...}, "embedding": ...}``."""
        spec, built = self._built(
            table, lambda spec, shape: _items.update_items(spec, shape, self.limits, items)
        )
        return self._run("update_many", spec, built)

    def delete(self, table: str, key: Key) -> SagaResult:
        """Delete a row and its vector as one saga."""
        spec = self.spec(table)
        return self._run("delete", spec, [Item(key=check.key(key, "key", self.limits))])

    def delete_many(self, table: str, keys: Sequence[Key]) -> SagaResult:
        """Delete many rows and their vectors as one saga."""
        spec = self.spec(table)
        return self._run("delete_many", spec, _items.delete_items(spec, self.limits, keys))

    def run(
        self,
        definition: SagaDefinition,
        table: str,
        items: Sequence[Item],
        *,
        op: str | None = None,
    ) -> SagaResult:
        """Run a custom saga ``definition`` over ``items`` of ``table``, like a built-in
        write: ``SagaResult`` once synced, ``DataIntegrityError`` once compensated,
        ``CompensationError`` when left to ``saga recover``.

        The definition is registered first (recovery finds it by name; a different
        definition already registered under its name is refused). Each item's
        key, row, embedding, document and metadata are checked as a write's are, before
        any store is touched. ``op`` is recorded in the payload for the steps (default:
        the definition's name).
        """
        spec, checked = self._built(
            table, lambda spec, shape: _items.checked_items(spec, shape, self.limits, items)
        )
        _writes.register(self._services, definition)
        return self._write(definition, spec, op or definition.name, checked)

    def adopt(
        self,
        table: str,
        *,
        mapping: Mapping[Key, str] | None = None,
        delete_orphans: bool = False,
        page_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> AdoptReport:
        """Take over ``table``'s existing vectors, stored under the application's own ids
        (each row's vector-id column, or ``mapping[key]``): re-keyed to ``table:key``
        without re-embedding, one saga per ``page_size`` rows, recorded as synced; run
        it again after a crash. Reports rows without a vector, vectors without a row
        (``delete_orphans`` deletes them) and what it could not adopt (``saga._adopt``)."""
        self._ensure_open()
        return adopt(
            self._services,
            table=table,
            mapping=mapping,
            delete_orphans=delete_orphans,
            page_size=page_size,
            progress=progress,
        )

    def atomic(self) -> AtomicUnit:
        """``with runner.atomic() as unit:``: the ``unit.create/update/delete`` calls of
        the block run as one saga when it ends, across tracked tables (``saga._unit``);
        ``unit.create`` returns the key at once; ``unit.result`` is the ``SagaResult``."""
        self._ensure_open()
        return AtomicUnit(self._services)

    def _built(
        self, table: str, build: Callable[[TableSpec, TableShape], list[Item]]
    ) -> tuple[TableSpec, list[Item]]:
        spec = self.spec(table)
        return spec, _items.with_fresh_shape(self._services.tables, spec, build)

    def _run(self, name: str, spec: TableSpec, items: list[Item]) -> SagaResult:
        return self._write(self.definition(name), spec, name.removesuffix("_many"), items)

    def _write(
        self, definition: SagaDefinition, spec: TableSpec, op: str, items: list[Item]
    ) -> SagaResult:
        self._ensure_open()
        return _writes.run(self._services, definition, spec, op, items)
