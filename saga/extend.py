"""The extension API: what a custom saga is made of.

An application writes with ``SagaRunner``; an *extender* builds new sagas from steps
and runs them with ``runner.run(definition, table, items)``. Everything an extender
needs is here; the README's "Writing your own saga" section has a worked example.

- ``Step``: a step's protocol (``name``, ``reaches``, ``local``, ``prepare``,
  ``forward``, ``compensate``); ``Preloading``, ``Grouping``, ``Syncing``: what a step
  may offer beyond it.
- ``SagaDefinition(name, steps, pivot)``: an ordered list of steps and the pivot (the
  step after which the saga only rolls forward); ``SagaMachine``: its ``transitions``
  machine, which the runner enforces and ``saga diagram`` draws.
- ``SagaContext``: what the steps of one saga share; ``Item``: one record of it.
- ``LogUnit``: the SQLite transaction a local step runs in (``rows`` for tracked
  tables; ``execute``/``executemany`` for a step's own tables).
- The built-in steps, to compose with your own, are ``steps.WriteVectors`` and
  ``steps.CommitRows`` (the ``steps`` package of this distribution).
- The state names, and the records the stores exchange (``TableSpec``,
  ``VectorRecord``, ``SagaRecord``).
"""

from saga._machine import (
    COMPENSATING,
    FAILED,
    PENDING,
    SQLITE_COMMITTED,
    SYNCED,
    VECTOR_WRITTEN,
    SagaDefinition,
    SagaMachine,
)
from saga._ports import LogUnit, Rows, SagaRecord, TableSpec, VectorRecord, VectorStore
from saga._steps import Grouping, Item, Preloading, SagaContext, Step, Syncing, Versions

__all__ = [
    "COMPENSATING",
    "FAILED",
    "PENDING",
    "SQLITE_COMMITTED",
    "SYNCED",
    "VECTOR_WRITTEN",
    "Grouping",
    "Item",
    "LogUnit",
    "Preloading",
    "Rows",
    "SagaContext",
    "SagaDefinition",
    "SagaMachine",
    "SagaRecord",
    "Step",
    "Syncing",
    "TableSpec",
    "VectorRecord",
    "VectorStore",
    "Versions",
]
