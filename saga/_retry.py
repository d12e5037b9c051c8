"""Retries of transient store failures: exponential backoff with jitter, bounded in
attempts and in time (``RetryPolicy``).

Written here rather than with a retry library whose instrumentation is process-wide
(stamina reports each retry through hooks shared by the whole process, which with no
logging configured print bare lines on the application's stderr): each retry is a line
of the library's own log, which names the saga (``saga._log``) and is off by default.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from saga._config import RetryPolicy
from saga._log import logger

T = TypeVar("T")


def retrying(
    policy: RetryPolicy,
    attempt: Callable[[], T],
    transient: Callable[[Exception], bool],
    what: str,
) -> T:
    """``attempt()``, tried again after a ``transient`` failure while attempts and
    ``policy.timeout`` last; the wait before try n+1 is ``wait_initial * 2**(n-1)``
    capped at ``wait_max``, half of it drawn at random (jitter). The last failure is
    raised as it was."""
    ends = time.monotonic() + policy.timeout
    number = 1
    while True:
        try:
            return attempt()
        except Exception as error:
            if number >= policy.attempts or not transient(error):
                raise
            backoff = min(policy.wait_max, policy.wait_initial * 2 ** (number - 1))
            wait = backoff / 2 + random.uniform(0, backoff / 2)
            if time.monotonic() + wait >= ends:
                raise
            logger.warning(
                "{}: try {} of {} failed ({}), again in {:.3f}s",
                what,
                number,
                policy.attempts,
                error,
                wait,
            )
            time.sleep(wait)
            number += 1
