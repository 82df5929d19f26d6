"""Frozen value classes: what ``dataclass(frozen=True)`` promises, with shared methods."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from agent.frozen import frozen


@frozen(kw_only=True)
class Entry:
    path: str = ""
    units: list[str] = dataclasses.field(default_factory=list)
    compiled: int = dataclasses.field(default=0, compare=False, repr=False)


@frozen()
class Point:
    x: int
    y: int = 0


@frozen()
class Other:
    x: int
    y: int = 0


@frozen(repr=False)
class Hidden:
    value: bytes

    def __repr__(self) -> str:
        return "Hidden(<withheld>)"


@frozen()
class Derived:
    text: str
    length: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "length", len(self.text))


def test_fields_are_set_once_by_the_constructor_and_never_again() -> None:
    point = Point(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.z = 3  # type: ignore[attr-defined]  # not a field either
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.y  # type: ignore[misc]
    assert (point.x, point.y) == (1, 2)
    assert Derived("abc").length == 3  # a form made from the fields in __post_init__
    assert dataclasses.replace(point, y=5) == Point(1, 5)


def test_equal_by_the_compared_fields_of_the_same_class() -> None:
    assert Entry(path="/a", compiled=1) == Entry(path="/a", compiled=2)  # compiled: not keys
    assert Entry(path="/a") != Entry(path="/b")
    assert Entry(path="/a", units=["x"]) != Entry(path="/a")
    assert Point(1) != Other(1) and Point(1) == Point(1, 0)


def test_hashed_as_a_frozen_dataclass_is() -> None:
    assert hash(Point(1, 2)) == hash(Point(1, 2)) == hash((1, 2))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2
    with pytest.raises(TypeError):
        hash(Entry(path="/a"))  # a list field: unhashable, as with frozen=True


def test_shown_by_the_shown_fields_unless_the_class_shows_itself() -> None:
    assert repr(Entry(path="/a")) == "Entry(path='/a', units=[])"
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert repr(Hidden(b"s3cret")) == "Hidden(<withheld>)"


def test_copied_whole() -> None:
    entry = Entry(path="/a", units=["x.service"], compiled=7)
    for again in (copy.copy(entry), copy.deepcopy(entry)):
        assert again == entry and again.compiled == 7
        with pytest.raises(dataclasses.FrozenInstanceError):
            again.path = "/b"  # type: ignore[misc]
