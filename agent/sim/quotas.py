"""Request quotas as AWS enforces them: a token bucket per API of a limited service."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TokenBucket:
    """AWS's quota algorithm: ``burst`` tokens, refilled at ``rate`` per second; a call
    takes one, or is throttled when there is none."""

    burst: float
    rate: float
    tokens: float = -1.0  # full at the first call
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """One token, if there is one."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Quotas:
    """Request quotas per API: each action of a limited service has a bucket of its own."""

    def __init__(self) -> None:
        self._limits: dict[str, tuple[float, float]] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def limit(self, service: str, burst: float, rate: float) -> None:
        """Every API of ``service`` (as signed: ``monitoring`` for CloudWatch) gets a
        bucket of ``burst`` tokens refilled at ``rate`` per second."""
        self._limits[service] = (burst, rate)
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] != service}

    def clear(self) -> None:
        """No quotas any more."""
        self._limits.clear()
        self._buckets.clear()

    def admit(self, service: str, action: str, now: float) -> bool:
        """Whether this call is within its API's quota (not thread-safe: hold a lock)."""
        limit = self._limits.get(service)
        if limit is None:
            return True
        bucket = self._buckets.get((service, action))
        if bucket is None:
            bucket = self._buckets[(service, action)] = TokenBucket(*limit)
        return bucket.take(now)
