"""One deadline for a whole API call (a create, an update, ...), compensation included.

The write path opens a scope with the vector store's ``call_deadline``; every remote
store call made inside it is cut to what is left (``stores._chroma_bounds``), so a call
that cannot finish in time fails at once and the saga is left to recovery, persisted.
A context variable, not an argument: the bound must reach every store call a step makes
without each step passing it on. Recovery runs without one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_ends: ContextVar[float | None] = ContextVar("saga_call_deadline", default=None)


@contextlib.contextmanager
def scope(seconds: float | None) -> Iterator[None]:
    """Everything inside must end within ``seconds`` (None: no bound). A scope inside
    another keeps the earlier end."""
    if seconds is None:
        yield
        return
    ends = time.monotonic() + seconds
    outer = _ends.get()
    token = _ends.set(ends if outer is None else min(outer, ends))
    try:
        yield
    finally:
        _ends.reset(token)


def remaining() -> float | None:
    """Seconds left to the current call (never negative), or None outside a scope."""
    ends = _ends.get()
    return None if ends is None else max(0.0, ends - time.monotonic())
