"""Frozen value classes, declared cheaply: :func:`frozen` is ``dataclass(frozen=True)``
whose methods are shared rather than generated per class.

A boot creates some fifty classes (the configuration's sections, the boot's records); a
frozen dataclass generates and compiles six methods for each, which a boot pays for in time.
Here the generated ``__init__`` is the only per-class method; setting each field once (by the
constructor, never again: :class:`dataclasses.FrozenInstanceError`), equality, hashing and
``repr`` are the functions below, with the semantics of ``frozen=True``: compared and hashed
by the fields that ``compare`` (or ``hash``), shown by those that ``repr``. A method the class
defines itself is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen(*, kw_only: bool = False, repr: bool = True) -> Callable[[type[T]], type[T]]:
    """Declare a frozen value class (``repr=False``: the class shows itself, or not at all)."""
    def declare(cls: type[T]) -> type[T]:
        own = set(vars(cls))
        made = dataclasses.dataclass(eq=False, repr=False, kw_only=kw_only)(cls)
        shared: dict[str, Any] = {"__setattr__": _set_once, "__delattr__": _no_delete,
                                  "__eq__": _same, "__hash__": _hashed}
        if repr:
            shared["__repr__"] = _shown
        for name, method in shared.items():
            if name not in own:
                setattr(made, name, method)  # on the class, once it is made
        return made
    return declare


def _set_once(self: Any, name: str, value: Any) -> None:
    """The constructor sets each field once; nothing sets one again, or anything else."""
    if name in vars(self) or name not in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _no_delete(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _same(self: Any, other: Any) -> bool:
    """Equal: the same class, the same compared fields."""
    if type(other) is not type(self):
        return NotImplemented  # type: ignore[no-any-return]
    return all(getattr(self, f.name) == getattr(other, f.name)
               for f in dataclasses.fields(self) if f.compare)


def _hashed(self: Any) -> int:
    """The hash of the hashed fields (a field holding a list or a dict: unhashable)."""
    return hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                      if (f.compare if f.hash is None else f.hash)))


def _shown(self: Any) -> str:
    shown = (f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr)
    return f"{type(self).__name__}({', '.join(shown)})"
