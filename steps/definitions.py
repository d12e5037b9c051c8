"""The dual-write saga definitions, built from the steps of this package.

Every one is ``write_vectors`` then ``commit_rows`` (the pivot): the vector side first,
because it can be undone, and the row last, committed with ``sqlite_committed``.
Batches use the same shape; they differ in size, not in states.

``adopt`` (``runner.adopt``, ``saga adopt``) takes over vectors the application stored
under its own ids: ``copy_vectors``, ``point_rows`` (the pivot), then ``drop_legacy``,
which only rolls forward (see ``steps._adopt``).
"""

from __future__ import annotations

from saga._machine import SagaDefinition
from steps._adopt import CopyVectors, DropLegacy, PointRows
from steps._rows import CommitRows
from steps._unit import UNIT
from steps._vectors import WriteVectors


def dual_write(name: str, op: str) -> SagaDefinition:
    """A dual-write saga for ``op`` (create, update or delete)."""
    return SagaDefinition(name=name, steps=(WriteVectors(op), CommitRows(op)), pivot="commit_rows")


CREATE = dual_write("create", "create")
UPDATE = dual_write("update", "update")
DELETE = dual_write("delete", "delete")
CREATE_MANY = dual_write("create_many", "create")
UPDATE_MANY = dual_write("update_many", "update")
DELETE_MANY = dual_write("delete_many", "delete")
ADOPT = SagaDefinition(
    name="adopt", steps=(CopyVectors(), PointRows(), DropLegacy()), pivot="point_rows"
)

DEFINITIONS = {
    d.name: d for d in (CREATE, UPDATE, DELETE, CREATE_MANY, UPDATE_MANY, DELETE_MANY, UNIT, ADOPT)
}
