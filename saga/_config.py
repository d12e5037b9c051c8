"""Configuration value objects: frozen, explicit, passed in (never globals)."""

from __future__ import annotations

import attrs


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class LeasePolicy:
    """How long a runner owns a saga without renewing it.

    ``ttl`` is in seconds. The lease is renewed at every persisted step, so a saga only
    loses it when one step (one bounded Chroma call) outlasts the whole ttl.
    """

    ttl: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen
class RetryPolicy:
    """Retries of transient store failures (Chroma unreachable, SQLite busy).

    ``attempts`` counts the first try; ``wait_initial``/``wait_max`` are seconds of
    exponential backoff with jitter; ``timeout`` bounds the whole retried call.
    """

    attempts: int = 3
    wait_initial: float = 0.05
    wait_max: float = 1.0
    timeout: float = 10.0

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One try, no waiting: what tests use to see the first failure."""
        return cls(attempts=1, wait_initial=0.0, wait_max=0.0)


@attrs.frozen
class ChromaTimeouts:
    """Bounds on every Chroma call, in seconds: connect, read, and the whole call."""

    connect: float = attrs.field(default=2.0, validator=_positive)
    read: float = attrs.field(default=5.0, validator=_positive)
    call: float = attrs.field(default=8.0, validator=_positive)


@attrs.frozen
class SqliteOptions:
    """SQLite connection settings.

    ``synchronous="FULL"`` survives power loss; ``"NORMAL"`` survives a process crash
    only (an opt-in). ``busy_timeout`` is seconds SQLite waits for a write lock;
    ``settle_timeout`` is how long the runner keeps retrying to persist a compensation
    while another connection holds the lock.
    """

    synchronous: str = attrs.field(
        default="FULL", validator=attrs.validators.in_(("FULL", "NORMAL", "EXTRA"))
    )
    busy_timeout: float = attrs.field(default=5.0, validator=_positive)
    settle_timeout: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen
class Limits:
    """Input size limits (refused with a ValidationError above them)."""

    max_document_chars: int = 1_000_000
    max_key_chars: int = 512
    max_batch_items: int = 100_000
    max_metadata_keys: int = 64
    max_dimension: int = 65_536
