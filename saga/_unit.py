"""Atomic units: several row changes, on several tracked tables, as one saga.

``with runner.atomic() as unit:`` collects ``unit.create/update/delete`` calls; when
the block ends they run as one saga (``steps._unit``): every vector written first, then
every row change in the pivot's one transaction, in the order given. An exception in
the block writes nothing. Each call is checked at once (bad input raises there, and
nothing is written); a key is used once per unit.

``unit.create`` without the key of an ``INTEGER PRIMARY KEY`` table returns the key
SQLite will hold at once, so a child row can name its parent in the same unit: the
first such call records the unit's saga as ``pending`` with the key reserved (no other
saga may take it; AUTOINCREMENT's sequence moves past it), and the block's end seals
that same saga. Recovery undoes an unsealed unit whose owner is gone (its block never
ended: nothing was written but the reservation), whatever the policy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from saga import _deadline as deadline
from saga import _items, failpoints
from saga import _log as log
from saga import _validation as check
from saga._begin import begin_unit
from saga._engine import Outcome
from saga._errors import SagaError, ValidationError
from saga._items import same_dimension
from saga._log import logger
from saga._payload import dumps_context
from saga._ports import Key, SagaRecord, TableSpec
from saga._results import SagaResult
from saga._services import Services
from saga._steps import ATOMIC, Item, SagaContext, UnitContext
from saga._writes import answer, let_go


class AtomicUnit:
    """One atomic write across tracked tables; see ``SagaRunner.atomic``."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._saga_id = str(uuid.uuid4())
        self._parts: list[SagaContext] = []
        self._used: set[tuple[str, Key]] = set()
        self._reserved: list[tuple[str, Key]] = []
        self._held: SagaRecord | None = None
        self._done = False
        self.result: SagaResult | None = None  # once the block has ended without error

    @property
    def saga_id(self) -> str:
        return self._saga_id

    def create(
        self,
        table: str,
        row: Mapping[str, Any],
        *,
        embedding: Sequence[float],
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Key:
        """Insert ``row`` with its vector when the unit ends; returns its key (reserved
        now when SQLite assigns it)."""
        spec = self._spec(table)
        limits = self._services.limits
        [item] = _items.with_fresh_shape(
            self._services.tables,
            spec,
            lambda s, shape: [
                _items.create_item(s, shape, limits, row, embedding, document, metadata)
            ],
        )
        if item.key is not None:
            self._claim(spec, item.key)
        else:
            item.key = self._reserve(spec)
        self._add(spec, "create", item)
        return item.key

    def update(
        self,
        table: str,
        key: Key,
        changes: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
        document: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a row and its vector when the unit ends (omitted vector fields kept)."""
        spec = self._spec(table)
        limits = self._services.limits
        [item] = _items.with_fresh_shape(
            self._services.tables,
            spec,
            lambda s, shape: [
                _items.update_item(
                    s, shape, limits, key, changes or {}, embedding, document, metadata
                )
            ],
        )
        self._claim(spec, item.known_key)
        self._add(spec, "update", item)

    def delete(self, table: str, key: Key) -> None:
        """Delete a row and its vector when the unit ends."""
        spec = self._spec(table)
        item = Item(key=check.key(key, "key", self._services.limits))
        self._claim(spec, item.known_key)
        self._add(spec, "delete", item)

    # -- collecting -------------------------------------------------------------------

    def _spec(self, table: str) -> TableSpec:
        if self._done:
            raise SagaError("the atomic unit has ended", saga_id=self._saga_id)
        return self._services.tables.spec(table)

    def _claim(self, spec: TableSpec, key: Key) -> None:
        if (spec.table, key) in self._used:
            raise ValidationError(
                f"key {key!r} of {spec.table!r} is already written in this unit", field="key"
            )
        self._used.add((spec.table, key))

    def _add(self, spec: TableSpec, op: str, item: Item) -> None:
        """Consecutive calls on one table with one operation share a part (one request
        per sub-batch); the parts keep the order of the calls."""
        last = self._parts[-1] if self._parts else None
        if last is not None and last.spec.table == spec.table and last.op == op:
            last.items.append(item)
            return
        self._parts.append(
            SagaContext(
                saga_id=self._saga_id,
                op=op,
                spec=spec,
                items=[item],
                vectors=self._services.vectors,
                touched=set(),
            )
        )

    def _reserve(self, spec: TableSpec) -> Key:
        """Reserve the next key SQLite would assign, in the unit's saga (``pending``)."""
        taken = [key for table, key in self._used if table == spec.table]
        with self._services.log.unit(self._saga_id) as unit:
            [key] = unit.assign_keys(spec, 1, taken)
            reserved = [*self._reserved, (spec.table, key)]
            self._held = unit.record_unit(
                saga_id=self._saga_id,
                definition=ATOMIC,
                entries=[(self._services.tables.spec(t), "create", k) for t, k in reserved],
                payload=dumps_context(self._context(sealed=False, reserved=reserved)),
                table=reserved[0][0],
                held=self._held,
            )
        self._reserved = reserved
        self._used.add((spec.table, key))
        failpoints.hit("after:reserve")
        logger.bind(saga_id=self._saga_id).debug("unit reserved {}:{}", spec.table, key)
        return key

    def _context(self, *, sealed: bool, reserved: list[tuple[str, Key]]) -> UnitContext:
        parts = self._parts if sealed else []
        first = parts[0].spec if parts else self._services.tables.spec(reserved[0][0])
        return UnitContext(
            saga_id=self._saga_id,
            op=ATOMIC,
            spec=first,
            items=[item for part in parts for item in part.items],
            vectors=self._services.vectors,
            touched=set(),
            parts=parts,
            reserved=reserved,
            sealed=sealed,
        )

    # -- ending -----------------------------------------------------------------------

    def __enter__(self) -> AtomicUnit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        self._done = True
        if exc is not None:
            self._abandon()
            return
        if self._parts:
            self.result = self._seal()

    def _seal(self) -> SagaResult:
        services = self._services
        ctx = self._context(sealed=True, reserved=self._reserved)
        for part in self._parts:
            if part.spec.dimension is None:
                same_dimension(part.items)
        definitions = services.definitions
        tables = ",".join(dict.fromkeys(part.spec.table for part in self._parts))
        keys = [item.key for item in ctx.items]
        with (
            deadline.scope(services.vectors.call_deadline),
            log.context(self._saga_id, tables, keys),
        ):
            try:
                saga = begin_unit(services.log, definitions, definitions[ATOMIC], ctx, self._held)
            except SagaError:
                self._abandon()
                raise
            settled = services.engine.drive(definitions[ATOMIC], saga, ctx)
        if settled.outcome is Outcome.UNSETTLED:
            let_go(services, settled.saga)
        if settled.outcome is Outcome.SYNCED:
            for part in self._parts:
                if part.spec.dimension is None:
                    services.tables.learn_dimension(part.spec, part.items[0].embedding)
        return answer(settled, ctx)

    def _abandon(self) -> None:
        """Release the keys an unsealed unit reserved: its saga ends ``failed``, with
        nothing written anywhere (a failure here leaves it to recovery, which undoes it)."""
        if self._held is None:
            return
        ctx = self._context(sealed=False, reserved=self._reserved)
        definition = self._services.definitions[ATOMIC]
        try:
            settled = self._services.engine.drive(definition, self._held, ctx, compensate=True)
        except SagaError as exc:
            logger.bind(saga_id=self._saga_id).warning("could not abandon the unit: {}", exc)
            return
        if settled.outcome is Outcome.UNSETTLED:
            let_go(self._services, settled.saga)
