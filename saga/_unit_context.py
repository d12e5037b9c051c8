"""An atomic unit's context, rebuilt from its payload (recovery, late-write re-checks).

The payload names each part's table; each must still be tracked. The keys the unit
holds in the log must be exactly those its payload names (the parts' keys once
sealed, the reserved ones before): a payload changed behind the library's back is left
for an operator, not run.
"""

from __future__ import annotations

from collections.abc import Callable

from saga._errors import ConfigurationError, SagaError
from saga._payload import loads_unit
from saga._ports import TableSpec, VectorStore
from saga._steps import ATOMIC, SagaContext, UnitContext


def unit_context(
    saga_id: str,
    payload: str,
    spec_of: Callable[[str], TableSpec | None],
    vectors: VectorStore,
    *,
    progress: set[int] | None = None,
) -> UnitContext:
    """The unit's context as its payload records it (parts in their order)."""
    try:
        sealed, reserved, parts = loads_unit(payload)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SagaError(f"unreadable payload: {exc}", saga_id=saga_id) from exc
    contexts: list[SagaContext] = []
    for table, op, items in parts:
        spec = spec_of(table)
        if spec is None:
            raise ConfigurationError(f"table {table!r} is no longer tracked", field="table")
        contexts.append(
            SagaContext(saga_id=saga_id, op=op, spec=spec, items=items, vectors=vectors)
        )
    first = contexts[0].spec if contexts else spec_of(reserved[0][0]) if reserved else None
    if first is None:
        raise SagaError("the unit's payload names no tracked table", saga_id=saga_id)
    return UnitContext(
        saga_id=saga_id,
        op=ATOMIC,
        spec=first,
        items=[item for part in contexts for item in part.items],
        vectors=vectors,
        progress=set(progress or ()),
        parts=contexts,
        reserved=reserved,
        sealed=sealed,
    )


def held_ids(ctx: UnitContext) -> set[str]:
    """The vector ids the unit's payload says it holds."""
    if ctx.sealed:
        return {part.vector_id(item) for part in ctx.parts for item in part.items}
    return {f"{table}:{key}" for table, key in ctx.reserved}
