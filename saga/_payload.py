"""The payload of a saga in flight, as stored in ``pending_vectors.payload``.

JSON, except embeddings: those are little-endian float32 bytes in base64, four bytes a
dimension instead of ~20 characters of decimal text. Chroma keeps float32, so nothing
is lost that Chroma would have kept. Parsing rejects NaN and duplicate keys.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from saga._ports import VectorRecord
from saga._steps import Item, SagaContext, UnitContext

MAX_PAYLOAD_DEPTH = 32


def pack_embedding(values: Sequence[float]) -> str:
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def unpack_embedding(text: str) -> tuple[float, ...]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        packed.byteswap()
    return tuple(packed)


def _vector_to_json(record: VectorRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "id": record.id,
        "embedding": None if record.embedding is None else pack_embedding(record.embedding),
        "document": record.document,
        "metadata": None if record.metadata is None else dict(record.metadata),
    }


def _vector_from_json(data: dict[str, Any] | None) -> VectorRecord | None:
    if data is None:
        return None
    embedding = data["embedding"]
    return VectorRecord(
        id=data["id"],
        embedding=None if embedding is None else unpack_embedding(embedding),
        document=data["document"],
        metadata=data["metadata"],
    )


def dumps(op: str, items: Sequence[Item]) -> str:
    """Serialise a saga's operation and items."""
    return json.dumps(
        {"op": op, "items": _items_json(items)}, separators=(",", ":"), allow_nan=False
    )


def dumps_context(ctx: SagaContext) -> str:
    """The payload of ``ctx``: a saga's, or an atomic unit's (its parts, by table)."""
    if not isinstance(ctx, UnitContext):
        return dumps(ctx.op, ctx.items)
    parts = [
        {"table": part.spec.table, "op": part.op, "items": _items_json(part.items)}
        for part in ctx.parts
    ]
    body = {"op": ctx.op, "sealed": ctx.sealed, "reserved": ctx.reserved, "parts": parts}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def loads_unit(text: str) -> tuple[bool, list[tuple[str, Any]], list[tuple[str, str, list[Item]]]]:
    """(sealed, reserved (table, key), parts (table, op, items)) of a unit's payload."""
    data = _parsed(text)
    reserved = [(str(table), key) for table, key in data["reserved"]]
    parts = [(str(p["table"]), str(p["op"]), _items_from(p["items"])) for p in data["parts"]]
    return bool(data["sealed"]), reserved, parts


def _items_json(items: Sequence[Item]) -> list[dict[str, Any]]:
    return [
        {
            "key": item.key,
            "row": item.row,
            "embedding": None if item.embedding is None else pack_embedding(item.embedding),
            "document": item.document,
            "metadata": item.metadata,
            "before_row": _tagged(item.before_row),
            "before_vector": _vector_to_json(item.before_vector),
        }
        for item in items
    ]


def loads(text: str) -> tuple[str, list[Item]]:
    """Parse a payload written by ``dumps``; raise ValueError on anything else."""
    data = _parsed(text)
    return str(data["op"]), _items_from(data["items"])


def _parsed(text: str) -> Any:
    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("payload nests too deeply") from None
    _check_depth(data, 0)
    return data


def _items_from(entries: Any) -> list[Item]:
    return [
        Item(
            key=entry["key"],
            row=entry["row"],
            embedding=None if entry["embedding"] is None else unpack_embedding(entry["embedding"]),
            document=entry["document"],
            metadata=entry["metadata"],
            before_row=_untagged(entry["before_row"]),
            before_vector=_vector_from_json(entry["before_vector"]),
        )
        for entry in entries
    ]


def _tagged(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored row as JSON can carry it: BLOBs and non-finite REALs written behind the
    library's back are tagged (the library refuses to write them itself)."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, bytes):
            out[name] = {"$bytes": base64.b64encode(value).decode("ascii")}
        elif isinstance(value, float) and not math.isfinite(value):
            out[name] = {"$float": repr(value)}
        else:
            out[name] = value
    return out


def _untagged(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    if not isinstance(row, dict):
        raise TypeError("payload: before_row is not an object")
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, dict) and "$bytes" in value:
            out[name] = base64.b64decode(value["$bytes"])
        elif isinstance(value, dict) and "$float" in value:
            out[name] = float(value["$float"])
        else:
            out[name] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"payload holds {name}, which JSON does not allow")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"payload repeats the key {key!r}")
        result[key] = value
    return result


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise ValueError("payload nests too deeply")
    if isinstance(value, dict):
        for child in value.values():
            _check_depth(child, depth + 1)
    elif isinstance(value, list):
        for child in value:
            _check_depth(child, depth + 1)
