"""What a validation read outside the configuration (a user's id, a template's content).

The validated-configuration cache records these facts while validating and looks them up
again before a cached configuration counts (:mod:`agent.config.cache`).
"""

from __future__ import annotations

import contextvars
from typing import Any

Fact = tuple[str, str, Any]  # (kind, key, value): ("owner", "nobody", 65534)
_observed: contextvars.ContextVar[list[Fact] | None] = contextvars.ContextVar(
    "observed", default=None)


def observe(kind: str, key: str, value: Any) -> None:
    """A validator read something outside the configuration (a uid, a file's content)."""
    facts = _observed.get()
    if facts is not None:
        facts.append((kind, key, value))


def observing() -> tuple[list[Fact], contextvars.Token[list[Fact] | None]]:
    """Start recording the facts validators read; ``stop(token)`` ends it."""
    facts: list[Fact] = []
    return facts, _observed.set(facts)


def stop(token: contextvars.Token[list[Fact] | None]) -> None:
    """End a recording begun by :func:`observing`."""
    _observed.reset(token)


def file_digest(data: bytes) -> str:
    """What a cached validation remembers of a file it read."""
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(data).hexdigest()
