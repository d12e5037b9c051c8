"""Input validation: one module used by every entry point (API and CLI).

Every refusal is a ``ValidationError`` naming the field (and the batch index), raised
before anything is written to either store.
"""

from __future__ import annotations

import math
import re
import reprlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

from saga._config import Limits
from saga._errors import UnknownColumnError, ValidationError
from saga._ports import Key, Metadata, TableShape
from saga._steps import RESERVED_METADATA

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
COLLECTION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")
INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = 3.4028234663852886e38


def _show(value: object) -> str:
    """A short, safe rendering of a bad value for an error message (never recursion)."""
    return reprlib.repr(value) if isinstance(value, str | int | float) else type(value).__name__


def _encodable(text: str, field: str, index: int | None) -> None:
    """Both stores keep UTF-8: a lone surrogate would fail there, after the saga began."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("is not valid Unicode text", field=field, index=index) from None


def identifier(name: object, field: str, index: int | None = None) -> str:
    """A table or column name: allow-listed here, checked against the schema by callers."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ValidationError(
            f"{_show(name)} is not an allowed identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64)",
            field=field,
            index=index,
        )
    return name


def collection_name(name: object) -> str:
    if not isinstance(name, str) or not COLLECTION.match(name):
        raise ValidationError(
            f"{_show(name)} is not a Chroma collection name (3-512 of [a-zA-Z0-9._-], "
            "starting and ending alphanumeric)",
            field="collection",
        )
    return name


def key(value: object, field: str, limits: Limits, index: int | None = None) -> Key:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(
            f"must be an int or a str, got {type(value).__name__}", field=field, index=index
        )
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ValidationError("does not fit in 64 bits", field=field, index=index)
    if isinstance(value, str):
        if not value or len(value) > limits.max_key_chars:
            raise ValidationError(
                f"must be 1 to {limits.max_key_chars} characters", field=field, index=index
            )
        if any(ord(ch) < 32 for ch in value):
            raise ValidationError("must not hold control characters", field=field, index=index)
        _encodable(value, field, index)
    return value


def embedding(
    value: object, dimension: int | None, limits: Limits, index: int | None = None
) -> tuple[float, ...]:
    """A non-empty sequence of finite numbers of the collection's dimension."""
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        value = value.tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValidationError(
            f"must be a sequence of numbers, got {type(value).__name__}",
            field="embedding",
            index=index,
        )
    if not value or len(value) > limits.max_dimension:
        raise ValidationError(
            f"must hold 1 to {limits.max_dimension} numbers", field="embedding", index=index
        )
    floats = _plain_floats(value)
    if floats is None:
        floats = _checked_floats(value, index)
    if dimension is not None and len(floats) != dimension:
        raise ValidationError(
            f"has {len(floats)} dimensions, the collection has {dimension}",
            field="embedding",
            index=index,
        )
    return floats


def _plain_floats(value: Sequence[Any]) -> tuple[float, ...] | None:
    """The fast path: only floats and ints, all finite float32; None means look closer.

    The values are cast to float32 in C (what Chroma keeps): a value beyond float32
    becomes infinite there, so one sum tells whether all are finite (a sum of at most
    ``max_dimension`` finite float32 values cannot overflow a double). The caller's
    float objects are kept, not copied: a batch of 10,000 384-dim embeddings would
    otherwise hold 90 MB more.
    """
    types = set(map(type, value))
    if not types <= {float, int}:
        return None
    try:
        packed = array("f", value)
    except OverflowError:  # an int beyond the double range
        return None
    if not math.isfinite(sum(packed)):
        return None
    return tuple(value) if types == {float} else tuple(map(float, value))


def _checked_floats(value: Sequence[Any], index: int | None) -> tuple[float, ...]:
    """The slow path, value by value, naming the first bad position."""
    floats = []
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, Real):  # numpy scalars are Real
            raise ValidationError(
                f"[{position}] is {type(number).__name__}, not a number",
                field="embedding",
                index=index,
            )
        try:
            as_float = float(number)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float) or abs(as_float) > FLOAT32_MAX:
            raise ValidationError(
                f"[{position}] is not a finite float32 (Chroma stores float32)",
                field="embedding",
                index=index,
            )
        floats.append(as_float)
    return tuple(floats)


def document(value: object, limits: Limits, index: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(
            f"must be a str, got {type(value).__name__}", field="document", index=index
        )
    if len(value) > limits.max_document_chars:
        raise ValidationError(
            f"is longer than {limits.max_document_chars} characters",
            field="document",
            index=index,
        )
    _encodable(value, "document", index)
    return value


def metadata(value: object, limits: Limits, index: int | None = None) -> Metadata | None:
    """Flat metadata of str/int/float/bool values, without the library's own keys."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"must be a dict, got {type(value).__name__}", field="metadata", index=index
        )
    if len(value) > limits.max_metadata_keys:
        raise ValidationError(
            f"has more than {limits.max_metadata_keys} keys", field="metadata", index=index
        )
    clean: Metadata = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or len(name) > 256:
            raise ValidationError(
                f"key {_show(name)} is not a str of 1 to 256", field="metadata", index=index
            )
        where = f"metadata.{name}"
        if name in RESERVED_METADATA or name.startswith(("chroma:", "#", "$")):
            raise ValidationError("is reserved for the library", field=where, index=index)
        if "\x00" in name:
            raise ValidationError("key holds a NUL byte", field=where, index=index)
        _encodable(name, where, index)
        clean[name] = _scalar(item, where, index)
    return clean


def _scalar(item: object, where: str, index: int | None) -> str | int | float | bool:
    if isinstance(item, str):
        _encodable(item, where, index)
        return item
    if isinstance(item, bool):
        return item
    if isinstance(item, int | float):
        return _number(item, where, index)
    raise ValidationError(
        f"must be str, int, float or bool, got {type(item).__name__}", field=where, index=index
    )


def _number(value: int | float, where: str, index: int | None) -> int | float:
    """An int that fits in 64 bits (SQLite and Chroma), or a finite float."""
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ValidationError("does not fit in 64 bits", field=where, index=index)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("is not finite", field=where, index=index)
    return value


def key_affinity(
    key: object, shape: TableShape, column: str, *, field: str, index: int | None
) -> None:
    """A key SQLite would store as another type breaks the link to its vector id
    (``'02'`` in an INTEGER column is stored as ``2``; ``1`` in a TEXT one as ``'1'``)."""
    if column in shape.int_affinity and not isinstance(key, int):
        raise ValidationError(
            "must be an int: the key column is an integer", field=field, index=index
        )
    if column in shape.text_affinity and not isinstance(key, str):
        raise ValidationError("must be a str: the key column is text", field=field, index=index)


def required_columns(
    values: Mapping[str, Any],
    required: Sequence[str],
    *,
    field: str,
    index: int | None,
    partial: bool,
) -> None:
    """NOT NULL columns without a default must be given (``partial``: if named) and not None."""
    for name in required:
        if name not in values and partial:
            continue
        if values.get(name) is None:
            raise ValidationError(
                "is required (NOT NULL without a default)", field=f"{field}.{name}", index=index
            )


def row_values(
    row: object,
    columns: Iterable[str],
    *,
    field: str,
    protected: Iterable[str],
    index: int | None = None,
) -> dict[str, Any]:
    """A row (or row changes): known columns only, SQLite-storable values."""
    if not isinstance(row, Mapping):
        raise ValidationError(f"must be a dict, got {type(row).__name__}", field=field, index=index)
    known = set(columns)
    blocked = set(protected)
    clean: dict[str, Any] = {}
    for name, value in row.items():
        identifier(name, f"{field}.{name}" if isinstance(name, str) else field, index)
        where = f"{field}.{name}"
        if name not in known:
            raise UnknownColumnError("is not a column of the table", field=where, index=index)
        if name in blocked:
            raise ValidationError("is written by the library", field=where, index=index)
        clean[name] = _column_value(value, where, index)
    return clean


def _column_value(value: object, where: str, index: int | None) -> object:
    if value is None:
        return value
    if isinstance(value, str):
        _encodable(value, where, index)
        return value
    if isinstance(value, bytes):
        # The intent (payload) is JSON: BLOB columns are not written through sagas yet.
        raise ValidationError("bytes (BLOB) values are not supported", field=where, index=index)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return _number(value, where, index)
    raise ValidationError(
        f"{type(value).__name__} cannot be stored in SQLite", field=where, index=index
    )


def batch_size(items: object, limits: Limits, field: str = "items") -> Sequence[Any]:
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("must be a list", field=field)
    if not items:
        raise ValidationError("must not be empty", field=field)
    if len(items) > limits.max_batch_items:
        raise ValidationError(f"holds more than {limits.max_batch_items} items", field=field)
    return items


def unique_keys(keys: Sequence[Key], field: str) -> None:
    seen: dict[Key, int] = {}
    for position, value in enumerate(keys):
        if value in seen:
            raise ValidationError(
                f"repeats the key {_show(value)} of item {seen[value]}",
                field=field,
                index=position,
            )
        seen[value] = position
