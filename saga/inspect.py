"""Read-only views of a saga log for ``saga status`` and ``saga show`` (no Chroma needed)."""

from __future__ import annotations

import os
from typing import Any

from saga._clock import SystemClock, parse_stamp
from saga._errors import SagaError
from saga._machine import TERMINAL
from saga._payload import loads, loads_unit
from saga._steps import ATOMIC, Item


def status(db_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts of sagas per state and per table, and the oldest saga in flight."""
    from saga._compose import open_catalog, open_log  # noqa: PLC0415 - keeps chromadb out

    log = open_log(db_path)
    try:
        by_state: dict[str, int] = {}
        by_table: dict[str, dict[str, int]] = {}
        for table, state, count in log.counts():
            by_state[state] = by_state.get(state, 0) + count
            by_table.setdefault(table, {})[state] = count
        by_state = dict(sorted(by_state.items()))
        in_flight = log.in_flight()
        oldest = in_flight[0] if in_flight else None
        return {
            "db": str(db_path),
            "by_state": by_state,
            "by_table": by_table,
            "in_flight": len(in_flight),
            "oldest_in_flight": None
            if oldest is None
            else {
                "saga_id": oldest.saga_id,
                "state": oldest.state,
                "table": oldest.table,
                "created_at": oldest.created_at,
                "age_seconds": round(
                    (SystemClock().now() - parse_stamp(oldest.created_at)).total_seconds(), 3
                ),
            },
            "tracked": [
                {"table": s.table, "collection": s.collection, "dimension": s.dimension}
                for s in open_catalog(log).all_tracked()
            ],
        }
    finally:
        log.close()


def show(db_path: str | os.PathLike[str], saga_id: str) -> dict[str, Any]:
    """One saga: state, lease, attempts, payload summary and its history."""
    from saga._compose import open_log  # noqa: PLC0415 - keeps chromadb out

    log = open_log(db_path)
    try:
        loaded = log.load(saga_id) or log.load(_unique(log.ids_starting(saga_id), saga_id))
        if loaded is None:
            raise SagaError(f"no saga {saga_id!r} in {db_path}")
        saga, payload = loaded
        return {
            "saga_id": saga.saga_id,
            "definition": saga.definition,
            "table": saga.table,
            "state": saga.state,
            "terminal": saga.state in TERMINAL,
            "attempts": saga.attempts,
            "last_error": saga.last_error,
            "lease_owner": saga.lease_owner,
            "lease_expires_at": saga.lease_expires_at,
            "created_at": saga.created_at,
            "updated_at": saga.updated_at,
            "applied_sub_batches": list(saga.progress),
            "payload": _payload_summary(saga.definition, payload),
            "history": log.history(saga_id),
        }
    finally:
        log.close()


def _unique(found: list[str], prefix: str) -> str:
    """The one saga id a prefix names; several are refused, naming some of them."""
    if len(found) > 1:
        more = ", ..." if len(found) >= 5 else ""
        raise SagaError(f"{prefix!r} begins several saga ids: {', '.join(found)}{more}")
    return found[0] if found else prefix


def _payload_summary(definition: str, payload: str | None) -> dict[str, Any] | None:
    """What a saga in flight holds (a settled saga's payload is gone): its operation and
    keys, or an atomic unit's parts (table, operation, keys) and reserved keys."""
    if payload is None:
        return None
    try:
        if definition == ATOMIC:
            sealed, reserved, parts = loads_unit(payload)
            return {
                "operation": ATOMIC,
                "sealed": sealed,
                "reserved": [f"{table}:{key}" for table, key in reserved],
                "parts": [
                    {"table": table, "operation": op, **_keys(items)} for table, op, items in parts
                ],
                "bytes": len(payload),
            }
        op, items = loads(payload)
    except (ValueError, KeyError, TypeError) as exc:
        return {"unreadable": str(exc)}
    return {"operation": op, **_keys(items), "bytes": len(payload)}


def _keys(items: list[Item]) -> dict[str, Any]:
    return {
        "items": len(items),
        "keys": [item.key for item in items[:10]],
        "keys_truncated": len(items) > 10,
    }
