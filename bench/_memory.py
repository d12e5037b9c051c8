"""Resident memory of this process, from ``/proc/self/status`` (Linux), in MB.

``VmHWM`` is the peak resident set; writing ``5`` to ``/proc/self/clear_refs`` resets
it to the current RSS, so a peak can be measured around one call. Elsewhere the peak
falls back to ``getrusage(RUSAGE_SELF).ru_maxrss`` (peak since the process started).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return None


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def rss_mb() -> float:
    """The current resident set (the peak so far where the current one is unknown)."""
    current = _status_mb("VmRSS")
    return current if current is not None else _maxrss_mb()


def peak_mb() -> float:
    """The peak resident set since the start, or since the last ``reset_peak()``."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else _maxrss_mb()


def reset_peak() -> bool:
    """Reset the peak to the current RSS; False where the OS does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
