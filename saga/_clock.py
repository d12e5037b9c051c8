"""Time comes from an injected clock, never from SQL's ``datetime('now')``.

freezegun patches ``datetime.datetime.now``, so ``SystemClock`` is frozen in tests.
Timestamps are stored as ISO-8601 UTC text with microseconds, a fixed width, so that
text order is time order inside SQLite.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

STAMP_LENGTH = len("2026-11-26T14:42:00.000000Z")


class Clock(Protocol):
    """Something that tells the current time (timezone-aware, UTC)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    """Render a moment as the fixed-width text stored in the saga log
    (``2026-11-26T14:42:00.000000Z``; isoformat is several times faster than strftime)."""
    utc = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_stamp(text: str) -> dt.datetime:
    """Inverse of ``stamp``; anything else raises ValueError."""
    if len(text) != STAMP_LENGTH or text[10] != "T" or not text.endswith("Z"):
        raise ValueError(f"not a saga log time stamp: {text!r}")
    return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
