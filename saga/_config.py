"""Configuration value objects: frozen, explicit, passed in (never globals).

Every field is checked when the object is built, and a bad value is refused there as a
``ConfigurationError`` naming the field. Later it would act far from its cause, or not
at all: ``attempts=-5`` quietly means one try, a negative ``busy_timeout`` turns
SQLite's busy wait off (the PRAGMA stores 0), a NaN ttl raises a bare ``ValueError`` at
the first lease, mid-saga. A ``bool`` is refused where a number is expected, although
Python counts it as an int: ``ttl=True`` is a mistake, not one second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeGuard

import attrs

from saga._errors import ConfigurationError

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _refusal(
    instance: object, attribute: attrs.Attribute[Any], rule: str, value: object
) -> ConfigurationError:
    owner = type(instance).__name__
    return ConfigurationError(f"must be {rule}, got {value!r} ({owner})", field=attribute.name)


def _finite_number(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the largest float
        return False


def _seconds(*, zero_allowed: bool) -> _Validator:
    """A finite int or float of seconds, > 0 (or >= 0 when ``zero_allowed``)."""
    rule = "a finite number of seconds " + (">= 0" if zero_allowed else "> 0")

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not _finite_number(value) or value < 0 or (value == 0 and not zero_allowed):
            raise _refusal(instance, attribute, rule, value)

    return check


def _count(minimum: int) -> _Validator:
    """An int (not a bool) >= ``minimum``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _refusal(instance, attribute, f"an int >= {minimum}", value)

    return check


def _one_of(choices: tuple[str, ...]) -> _Validator:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or value not in choices:
            raise _refusal(instance, attribute, f"one of {', '.join(choices)}", value)

    return check


_positive_seconds = _seconds(zero_allowed=False)
_seconds_or_zero = _seconds(zero_allowed=True)
_at_least_one = _count(1)


@attrs.frozen
class LeasePolicy:
    """How long a runner owns a saga without renewing it.

    ``ttl`` is in seconds. The lease is renewed at every persisted step, so a saga only
    loses it when one step (one bounded Chroma call) outlasts the whole ttl.
    """

    ttl: float = attrs.field(default=30.0, validator=_positive_seconds)


@attrs.frozen
class RetryPolicy:
    """Retries of transient store failures (Chroma unreachable, SQLite busy).

    ``attempts`` counts the first try; ``wait_initial``/``wait_max`` are seconds of
    exponential backoff with jitter; ``timeout`` bounds the whole retried call.
    """

    attempts: int = attrs.field(default=3, validator=_at_least_one)
    wait_initial: float = attrs.field(default=0.05, validator=_seconds_or_zero)
    wait_max: float = attrs.field(default=1.0, validator=_seconds_or_zero)
    timeout: float = attrs.field(default=10.0, validator=_positive_seconds)

    @wait_max.validator
    def _not_below_wait_initial(self, attribute: attrs.Attribute[Any], value: float) -> None:
        # Runs after every field is set and wait_initial passed its own check.
        if value < self.wait_initial:
            raise _refusal(self, attribute, f">= wait_initial ({self.wait_initial!r})", value)

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One try, no waiting: what tests use to see the first failure."""
        return cls(attempts=1, wait_initial=0.0, wait_max=0.0)


@attrs.frozen
class ChromaTimeouts:
    """Bounds on Chroma in server mode, in seconds: ``connect`` and ``read`` for one
    request, ``call`` for one request's whole attempt, and ``whole`` for everything one
    write of the runner (create, update, ..., its read-backs and compensation included)
    may spend in Chroma: what cannot finish in it is left to recovery at once."""

    connect: float = attrs.field(default=2.0, validator=_positive_seconds)
    read: float = attrs.field(default=5.0, validator=_positive_seconds)
    call: float = attrs.field(default=8.0, validator=_positive_seconds)
    whole: float = attrs.field(default=20.0, validator=_positive_seconds)


@attrs.frozen
class SqliteOptions:
    """SQLite connection settings.

    ``synchronous="FULL"`` survives power loss; ``"NORMAL"`` survives a process crash
    only (an opt-in). ``busy_timeout`` is seconds SQLite waits for a write lock;
    ``settle_timeout`` is how long the runner keeps retrying to persist a compensation
    while another connection holds the lock.
    """

    synchronous: str = attrs.field(default="FULL", validator=_one_of(SYNCHRONOUS_MODES))
    busy_timeout: float = attrs.field(default=5.0, validator=_positive_seconds)
    settle_timeout: float = attrs.field(default=30.0, validator=_positive_seconds)


@attrs.frozen
class Limits:
    """Input size limits (refused with a ValidationError above them), each an int >= 1."""

    max_document_chars: int = attrs.field(default=1_000_000, validator=_at_least_one)
    max_key_chars: int = attrs.field(default=512, validator=_at_least_one)
    max_batch_items: int = attrs.field(default=100_000, validator=_at_least_one)
    max_metadata_keys: int = attrs.field(default=64, validator=_at_least_one)
    max_dimension: int = attrs.field(default=65_536, validator=_at_least_one)
