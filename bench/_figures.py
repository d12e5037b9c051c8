"""Figures: samples, their median, the ratio to the baseline and the target's verdict."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RELATIVE = ("unprotected", "baseline")  # ratio_of values that divide by a baseline


@dataclass
class Figure:
    """One row of the table.

    ``median`` is in ``unit``; ``ratio`` is, against the unprotected write (or another
    ``"baseline"``, such as Chroma's own ingest), the median of the per-round ratios
    (``paired``; else ``median / baseline``), or, for an absolute target,
    ``median / budget`` (``ratio_of`` says which; ``"none"``: shown for context, no
    reference), so ``ratio <= target`` means the target is met.
    """

    scenario: str
    case: str
    contender: str
    unit: str
    n: int
    samples: list[float]
    baseline: float | None = None
    budget: float | None = None
    target: float | None = None
    target_text: str = ""
    ratio_of: str = "unprotected"
    paired: list[float] = field(default_factory=list)  # per-round ratios to the baseline
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ratio(self) -> float | None:
        if self.ratio_of == "none":
            return None
        relative = self.ratio_of in RELATIVE
        if relative and self.paired:
            return statistics.median(self.paired)
        reference = self.baseline if relative else self.budget
        if reference is None or reference <= 0:
            return None
        return self.median / reference

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median=self.median, ratio=self.ratio, met=self.met)
        return data


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` took (garbage collected before, so no debt is carried in)."""
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def rotated(items: list[Any], offset: int) -> list[Any]:
    """The contenders in the order of round ``offset`` (each goes first in turn)."""
    shift = offset % len(items)
    return items[shift:] + items[:shift]
