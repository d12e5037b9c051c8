"""The library's log: loguru under the name ``saga``, off unless the application (or
the CLI) turns it on.

Every line a saga causes names it: ``context(saga_id, table, keys)`` puts them in the
log context (a context variable, so the lines of the stores' calls made for the saga,
Chroma's retries among them, carry them too), and the patched ``logger`` begins each
message with them. Nothing is printed anywhere unless enabled: ``logger.enable("saga")``
and a sink of your own, or ``log_to_stdlib()`` to hand the lines to ``logging``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger as _loguru

if TYPE_CHECKING:
    from loguru import Message, Record

SHOWN_KEYS = 5


def _prefixed(record: Record) -> None:
    extra = record["extra"]
    if "saga_id" in extra:
        where = f"saga {extra['saga_id']}"
        if extra.get("table"):
            where += f" {extra['table']}"
        if extra.get("keys"):
            where += f" keys {extra['keys']}"
        record["message"] = f"[{where}] {record['message']}"


logger = _loguru.patch(_prefixed)


def shown(keys: Sequence[Any]) -> str:
    """Keys as a log line shows them: the first few, and how many more."""
    head = ", ".join(repr(k) for k in keys[:SHOWN_KEYS])
    return head + (f" (+{len(keys) - SHOWN_KEYS})" if len(keys) > SHOWN_KEYS else "")


@contextlib.contextmanager
def context(saga_id: str, table: str, keys: Sequence[Any] = ()) -> Iterator[None]:
    """Lines logged inside name this saga, its table(s) and keys."""
    with _loguru.contextualize(saga_id=saga_id, table=table, keys=shown(keys)):
        yield


def log_to_stdlib(level: str | int = "DEBUG") -> int:
    """Enable the library's log and hand every line, from ``level`` up, to the
    standard library's ``logging.getLogger("saga")`` (so ``logging.basicConfig`` shows
    them). Returns the loguru sink id (``loguru.logger.remove(id)`` undoes it)."""
    target = logging.getLogger("saga")

    def sink(message: Message) -> None:
        record = message.record
        target.log(record["level"].no, record["message"])

    _loguru.enable("saga")
    return _loguru.add(sink, level=level, format="{message}", filter="saga")
