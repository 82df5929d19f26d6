"""Files the agent writes outside the secrets: what is there, what is wanted, what changes.

A :class:`FilePlan` holds the existing state of a path (read once, by :meth:`Existing.read`),
the desired content and mode, and so the :class:`Change`, the same for ``agent plan`` and
for ``agent run``. :class:`Writer` is the one code that executes plans: every new content is
staged in full beside its target first (with its final mode), then renamed into place; a
failure while staging removes what was staged, and the directories made for it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path

from agent.frozen import frozen
from agent.fsutil import make_dirs, temp_name, write_new


class Change(enum.StrEnum):
    """What applying a plan does to one path."""

    NEW = "new"
    CHANGED = "changed"
    MODE = "mode"  # same content, another mode
    UNCHANGED = "unchanged"
    REMOVE = "remove"
    NOT_WRITTEN = "not written"  # a profile whose values only feed templates


@frozen(repr=False)
class Existing:
    """A path as found: a regular file's bytes and mode, else nothing (absent, other kind)."""

    content: bytes | None
    mode: int | None

    @classmethod
    def read(cls, path: str) -> Existing:
        """Read ``path`` without following a symlink (which is replaced, not written through)."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return cls(None, None)
            return cls(Path(path).read_bytes(), stat.S_IMODE(st.st_mode))
        except (OSError, ValueError):
            return cls(None, None)


@frozen(repr=False)
class FilePlan:
    """One path: existing, desired (None: remove it), and the change between them."""

    path: str
    desired: bytes | None
    mode: int
    existing: Existing = field(default=Existing(None, None))

    @classmethod
    def of(cls, path: str, desired: bytes | None, mode: int = 0o644) -> FilePlan:
        """The plan for ``path``, with what it holds now."""
        return cls(path, desired, mode, Existing.read(path) if path else Existing(None, None))

    @property
    def change(self) -> Change:
        """What applying it does."""
        if not self.path:
            return Change.NOT_WRITTEN
        if self.desired is None:
            return Change.REMOVE if self.existing.content is not None else Change.UNCHANGED
        if self.existing.content is None:
            return Change.NEW
        if self.existing.content != self.desired:
            return Change.CHANGED
        return Change.MODE if self.existing.mode != self.mode else Change.UNCHANGED

    @property
    def writes(self) -> bool:
        """Whether applying it writes the file (new content or another mode)."""
        return self.change in (Change.NEW, Change.CHANGED, Change.MODE)

    def __repr__(self) -> str:
        return f"FilePlan({self.path!r}, {self.change.value})"


class Writer:
    """Stages new files beside their targets, then switches them in; undoes a failed stage."""

    def __init__(self, dir_mode: int = 0o755) -> None:
        self.dir_mode = dir_mode
        self.staged: list[tuple[FilePlan, Path]] = []
        self.created: list[Path] = []  # directories made for the staged files

    def stage(self, plans: Iterable[FilePlan]) -> None:
        """Write every file that changes in full, next to its target; raise OSError."""
        for plan in plans:
            if not plan.writes:
                continue
            assert plan.desired is not None
            target = Path(plan.path)
            temp = target.with_name(temp_name(target.name))
            self.created += make_dirs(target.parent, self.dir_mode)
            try:
                write_new(temp, plan.desired, plan.mode)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink(missing_ok=True)
                raise
            self.staged.append((plan, temp))

    def switch(self) -> None:
        """Rename every staged file into place (each one atomic); raise OSError."""
        while self.staged:
            plan, temp = self.staged[0]
            os.replace(temp, plan.path)
            self.staged.pop(0)

    def undo(self) -> None:
        """Remove what is staged and not yet in place, and the directories made for it."""
        for _, temp in self.staged:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        self.staged.clear()
        for path in reversed(self.created):
            with contextlib.suppress(OSError):
                path.rmdir()


def remove(plans: Iterable[FilePlan]) -> tuple[list[FilePlan], list[str]]:
    """Delete the paths planned for removal: those removed, and a warning per failure."""
    removed, problems = [], []
    for plan in plans:
        if plan.change is not Change.REMOVE:
            continue
        try:
            os.unlink(plan.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"cannot remove {plan.path}: {exc.strerror}")
            continue
        removed.append(plan)
    return removed, problems
