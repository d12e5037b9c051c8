"""The services one runner is made of, handed to recovery, reconcile and query.

They get what they need from here, never the runner itself: the runner is the public
face, these are its parts. Built once, by ``saga._compose`` (or by
``SagaRunner.from_stores`` for stores the caller built, such as a test's fault proxy).
"""

from __future__ import annotations

import attrs

from saga._clock import Clock
from saga._config import LeasePolicy, Limits
from saga._engine import Engine
from saga._machine import SagaDefinition
from saga._ports import SagaLog, TableCatalog, VectorStore
from saga._registry import TableRegistry


@attrs.frozen
class Stores:
    """The stores a runner is built on: the saga log, the table catalog (both in the
    application's SQLite file) and the vector store."""

    log: SagaLog
    catalog: TableCatalog
    vectors: VectorStore


@attrs.define
class Services:
    """A runner's parts: the stores, the engine, the clock, the definitions it runs."""

    log: SagaLog
    catalog: TableCatalog
    vectors: VectorStore
    clock: Clock
    lease: LeasePolicy
    limits: Limits
    definitions: dict[str, SagaDefinition]
    engine: Engine = attrs.field(init=False)
    tables: TableRegistry = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # A remote vector step may take a bounded write and its read-back: the lease
        # must outlast that, so the engine renews it before such a step when less is left.
        budget = 2 * (self.vectors.call_bound or 0.0)
        self.engine = Engine(self.log, self.vectors, self.clock, self.lease, step_budget=budget)
        self.tables = TableRegistry(self.catalog, self.vectors, self.limits)

    def definition(self, name: str) -> SagaDefinition | None:
        return self.definitions.get(name)
