"""Time comes from an injected clock, never from SQL's ``datetime('now')``.

freezegun patches ``datetime.datetime.now``, so ``SystemClock`` is frozen in tests.
Timestamps are stored as ISO-8601 UTC text with microseconds, a fixed width, so that
text order is time order inside SQLite.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time (timezone-aware, UTC)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    """Render a moment as the fixed-width text stored in the saga log."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> dt.datetime:
    """Inverse of ``stamp``."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
