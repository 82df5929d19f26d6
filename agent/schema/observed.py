"""What a validation read outside the configuration (a user's id, a template's content).

The validated-configuration cache records these observations while validating and looks them up
again before a cached configuration counts (:mod:`agent.config.cache`).
"""

from __future__ import annotations

import contextvars
from typing import Any

Observation = tuple[str, str, Any]  # (kind, key, value): ("owner", "nobody", 65534)
_observed: contextvars.ContextVar[list[Observation] | None] = contextvars.ContextVar(
    "observed", default=None)


def observe(kind: str, key: str, value: Any) -> None:
    """A validator read something outside the configuration (a uid, a file's content)."""
    seen = _observed.get()
    if seen is not None:
        seen.append((kind, key, value))


def observing() -> tuple[list[Observation], contextvars.Token[list[Observation] | None]]:
    """Start recording what validators read; ``stop(token)`` ends it."""
    seen: list[Observation] = []
    return seen, _observed.set(seen)


def stop(token: contextvars.Token[list[Observation] | None]) -> None:
    """End a recording begun by :func:`observing`."""
    _observed.reset(token)


def file_digest(data: bytes) -> str:
    """What a cached validation remembers of a file it read."""
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(data).hexdigest()
