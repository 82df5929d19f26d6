"""The one retry loop: jittered exponential backoff within a time budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class GaveUp(Exception):
    """The budget ran out; ``last`` is the final transient error, ``attempts`` the count."""

    def __init__(self, last: BaseException, attempts: int, waited: float) -> None:
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts
        self.waited = waited


def backoff_delays(base: float = 0.05, cap: float = 2.0) -> Callable[[int], float]:
    """Full jitter (AWS Architecture Blog): uniform in [0, min(cap, base * 2**n)]."""

    def delay(attempt: int) -> float:
        return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))  # noqa: S311

    return delay


def retry(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    budget: float,
    base: float = 0.05,
    cap: float = 2.0,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call until it succeeds, a permanent error is raised, or ``budget`` seconds pass.

    Permanent errors propagate unchanged; when the budget runs out :class:`GaveUp` wraps
    the last transient error.
    """
    start = clock()
    deadline = start + budget
    delay = backoff_delays(base, cap)
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            pause = delay(attempt)
            attempt += 1
            if clock() + pause >= deadline:
                raise GaveUp(exc, attempt, clock() - start) from exc
            if on_retry is not None:
                on_retry(exc, attempt, pause)
            sleep(pause)
