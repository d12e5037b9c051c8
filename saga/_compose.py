"""The composition root: the one module of ``saga`` that imports ``stores`` and ``steps``.

Everything else in ``saga`` depends on the ports (``saga._ports``) and on the extension
API (``saga.extend``); the adapters and the built-in dual-write definitions are chosen
and wired together here, and nowhere else (the layer contract in ``pyproject.toml``
checks it).
"""

from __future__ import annotations

import os
from typing import Any

from saga._clock import Clock, SystemClock
from saga._config import LeasePolicy, SqliteOptions
from saga._machine import SagaDefinition
from saga._owner import lease_owner_id
from steps import DEFINITIONS
from stores.saga_log import SqliteSagaLog
from stores.sqlite import Database


def builtin_definitions() -> dict[str, SagaDefinition]:
    """The dual-write sagas: create, update, delete and their batches, by name."""
    return dict(DEFINITIONS)


def open_log(db_path: str | os.PathLike[str], clock: Clock | None = None) -> Any:
    """The saga log of an existing saga database, never creating one."""
    database = Database.open(db_path, SqliteOptions(), create=False)
    return SqliteSagaLog(database, clock or SystemClock(), LeasePolicy(), lease_owner_id())
