"""The forward actions and compensations that dual-write sagas are built from."""

from steps._rows import CommitRows
from steps._vectors import WriteVectors
from steps.definitions import (
    CREATE,
    CREATE_MANY,
    DEFINITIONS,
    DELETE,
    DELETE_MANY,
    UPDATE,
    UPDATE_MANY,
    dual_write,
)

__all__ = [
    "CREATE",
    "CREATE_MANY",
    "DEFINITIONS",
    "DELETE",
    "DELETE_MANY",
    "UPDATE",
    "UPDATE_MANY",
    "CommitRows",
    "WriteVectors",
    "dual_write",
]
