"""Named failpoints: deterministic fault injection for tests and the demo.

Code calls ``hit("after:pending")`` at interesting moments. Nothing happens unless the
point is armed, in-process by ``armed(...)`` or ``configure(...)``, or from the
``SAGA_FAILPOINTS`` environment variable by an explicit ``load_from_env()`` call, which
only test workers and the demo's worker make. Importing the library never reads the
variable: one stray ``SAGA_FAILPOINTS=after:pending=kill`` in a production environment
must not be able to SIGKILL the application. The spec is a ``;``-separated list of
``name=action`` where action is one of:

- ``raise``          raise ``FailpointError``
- ``raise:KIND``     raise the error registered for KIND by a store adapter
                     (``sqlite-ioerror``, ``sqlite-locked``, ``chroma-unavailable``, ...)
- ``exit``           ``os._exit(86)``: the process dies at once, no cleanup
- ``kill``           SIGKILL to this process
- ``sleep:SECONDS``  pause (a runner "stuck" mid-saga while its lease is live)

An action may end in ``*N`` to fire only the next N hits (``raise*1``) and/or ``@K`` to
let K-1 hits pass first (``kill@2``: the second hit kills).
Unarmed, ``hit`` is one dict lookup on an empty dict.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from saga._errors import FailpointError

ENV_VAR = "SAGA_FAILPOINTS"
EXIT_CODE = 86

_armed: dict[str, list[str | int]] = {}  # name -> [action, remaining or -1, hits to skip]
_lock = threading.Lock()
_error_kinds: dict[str, Callable[[str], BaseException]] = {}
_hits: dict[str, int] = {}


def register_error(kind: str, factory: Callable[[str], BaseException]) -> None:
    """Let ``raise:KIND`` raise a realistic store error built by ``factory(name)``."""
    _error_kinds[kind] = factory


def parse(spec: str) -> dict[str, list[str | int]]:
    """Parse ``name=action[*N][@K];...`` into the armed table; raise ValueError if bad."""
    table: dict[str, list[str | int]] = {}
    for raw_part in spec.split(";"):
        part = raw_part.strip()
        if not part:
            continue
        name, sep, action = part.partition("=")
        if not sep or not name.strip() or not action.strip():
            raise ValueError(f"bad failpoint spec {part!r}: expected name=action")
        action, at, start = action.strip().partition("@")
        action, star, times = action.partition("*")
        table[name.strip()] = [action, int(times) if star else -1, int(start) - 1 if at else 0]
    return table


def configure(spec: str) -> None:
    """Replace every armed failpoint by those in ``spec`` (empty string disarms all)."""
    table = parse(spec)
    with _lock:
        _armed.clear()
        _armed.update(table)


def load_from_env() -> None:
    """Arm the failpoints named in ``SAGA_FAILPOINTS``, replacing any armed ones.

    For test and demo worker processes only: a parent arms a child by setting the
    variable, and the child opts in by calling this first thing. Unset or empty, it
    disarms every point. A malformed spec raises ValueError.
    """
    configure(os.environ.get(ENV_VAR, ""))


@contextmanager
def armed(spec: str) -> Iterator[None]:
    """Arm failpoints for the duration of a ``with`` block, then restore the previous set."""
    with _lock:
        saved = {name: list(entry) for name, entry in _armed.items()}
    configure(spec)
    try:
        yield
    finally:
        with _lock:
            _armed.clear()
            _armed.update(saved)


def hits(name: str) -> int:
    """How many times an armed point ``name`` has fired in this process."""
    return _hits.get(name, 0)


def hit(name: str) -> None:
    """Fire the failpoint ``name`` if it is armed; otherwise do nothing, cheaply."""
    if not _armed:
        return
    with _lock:
        entry = _armed.get(name)
        if entry is None:
            return
        action, remaining, skip = str(entry[0]), int(entry[1]), int(entry[2])
        if skip > 0:
            entry[2] = skip - 1
            return
        if remaining == 0:
            return
        if remaining > 0:
            entry[1] = remaining - 1
        _hits[name] = _hits.get(name, 0) + 1
    _fire(name, action)


def _fire(name: str, action: str) -> None:
    verb, _, arg = action.partition(":")
    if verb == "raise" and not arg:
        raise FailpointError(name)
    if verb == "raise":
        factory = _error_kinds.get(arg)
        if factory is None:
            raise FailpointError(f"{name} (unknown error kind {arg!r})")
        raise factory(name)
    if verb == "exit":
        os._exit(EXIT_CODE)
    if verb == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if verb == "sleep":
        time.sleep(float(arg))
        return
    raise FailpointError(f"{name} (unknown action {action!r})")
