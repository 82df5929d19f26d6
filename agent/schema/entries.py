"""The entries of a list section: where each is configured, and whether their outputs clash."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def labelled(kind: str, entries: Iterable[T]) -> list[tuple[str, T]]:
    """Each entry of a list section with where it is configured: ``("files[2]", entry)``."""
    return [(f"{kind}[{index}]", entry) for index, entry in enumerate(entries)]


def clash(outputs: list[tuple[str, str, bool]], *, nested: bool = True,
          given: bool = False) -> str:
    """Why these outputs ``(where, path, conditional)`` cannot all be written ('' if they can).

    Two entries may name one path only when both have a ``when`` condition (one image, a
    file per role): at load that is allowed, and the boot checks the entries it keeps.
    ``nested``: a path inside another is a clash too; ``given``: the "paths" are phrased
    things the entries give (a credential of a unit), shown as they are.
    """
    seen: dict[str, tuple[str, bool]] = {}
    for where, path, conditional in outputs:
        for other, (first, first_conditional) in seen.items():
            if conditional and first_conditional:
                continue
            if other == path:
                return (f"{where} and {first} both give {path}" if given else
                        f"{where} and {first} both write {path!r}")
            if nested and (other.startswith(path + "/") or path.startswith(other + "/")):
                return f"{path!r} and {other!r} collide (file vs directory)"
        seen.setdefault(path, (where, conditional))
    return ""
