"""The forward actions and compensations that dual-write sagas are built from."""

from steps._adopt import CopyVectors, DropLegacy, PointRows
from steps._rows import CommitRows
from steps._vectors import WriteVectors
from steps.definitions import (
    ADOPT,
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
    "ADOPT",
    "CREATE",
    "CREATE_MANY",
    "DEFINITIONS",
    "DELETE",
    "DELETE_MANY",
    "UPDATE",
    "UPDATE_MANY",
    "CommitRows",
    "CopyVectors",
    "DropLegacy",
    "PointRows",
    "WriteVectors",
    "dual_write",
]
