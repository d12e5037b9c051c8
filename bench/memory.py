"""Peak memory of one large ``create_many`` against the unprotected batch, each in a
fresh process; the figure is the peak RSS during the call minus the RSS before it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._spawn import child


def measure(folder: Path, count: int, progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    results = {}
    for mode in ("unprotected", "saga"):
        progress(f"memory: a batch of {count:,}, {mode}")
        target = folder / f"memory-{mode}"
        results[mode] = child("batch-memory", mode, str(target), str(count))
        shutil.rmtree(target, ignore_errors=True)
    return results
