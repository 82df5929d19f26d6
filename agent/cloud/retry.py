"""The one retry loop: jittered exponential backoff within a time budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Pace = Callable[[BaseException], tuple[float, float]]
"""The (base, cap) of the backoff after this error (a throttle backs off slower than a blip)."""


class GaveUp(Exception):
    """The budget ran out; ``last`` is the final transient error, ``attempts`` the count."""

    def __init__(self, last: BaseException, attempts: int, waited: float) -> None:
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts
        self.waited = waited


def jittered_delay(attempt: int, base: float, cap: float) -> float:
    """Full jitter (AWS Architecture Blog): uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))  # noqa: S311


def backoff_delays(base: float = 0.05, cap: float = 2.0) -> Callable[[int], float]:
    """The full-jitter delay of each attempt, for one (base, cap)."""
    return lambda attempt: jittered_delay(attempt, base, cap)


def retry(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    budget: float | Callable[[], float],
    base: float = 0.05,
    cap: float = 2.0,
    pace: Pace | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call until it succeeds, a permanent error is raised, or the budget runs out.

    ``budget`` is seconds from now (a pause that would not end within it gives up), or a
    function giving the seconds left at each failure: a deadline that can move, as a
    lifecycle action kept alive by heartbeats; then a pause is cut short at the deadline,
    which is read again after the next attempt, and the call gives up once nothing is left.
    ``pace`` chooses base and cap per error, else ``base`` and ``cap``. Permanent errors
    propagate unchanged; when the budget runs out :class:`GaveUp` wraps the last transient
    error.
    """
    start = clock()
    if callable(budget):
        left = budget
    else:
        deadline = start + budget

        def left() -> float:
            return deadline - clock()
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            low, high = pace(exc) if pace is not None else (base, cap)
            pause = jittered_delay(attempt, low, high)
            attempt += 1
            remaining = left()
            if pause >= remaining:
                if not callable(budget) or remaining <= 0:
                    raise GaveUp(exc, attempt, clock() - start) from exc
                pause = remaining  # try again at the deadline, which may have moved by then
            if on_retry is not None:
                on_retry(exc, attempt, pause)
            sleep(pause)
