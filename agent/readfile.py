"""Reading a file whose kind the agent does not control: a regular file only, never blocking.

A template source, the configuration, the state file, what ``bake-check`` inspects: any of
them may be a FIFO (opening one blocks until a writer comes), a device (``/dev/zero`` never
ends) or a link to one. :func:`read_regular` looks before it opens (``stat``), opens without
blocking (``O_NONBLOCK``) and looks again at what it opened (``fstat``: the path may have been
replaced meanwhile), then reads at most ``limit`` bytes. Light enough for ``agent status``.
"""

from __future__ import annotations

import os
import stat

TEMPLATE_LIMIT = 1 << 20  # a template source: 1 MiB is plenty
CONFIG_LIMIT = 1 << 20  # the configuration file
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


class Unreadable(ValueError):
    """A file that was not read: of another kind, too large, or refused by the system. The
    message says which, without the path (the caller names the file)."""


def read_regular(path: str | os.PathLike[str], limit: int, *, follow: bool = True) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    FileNotFoundError when there is nothing at ``path`` (each caller has its own meaning for
    that); :class:`Unreadable` for anything else that is not read. ``follow`` false: a
    symlink is refused rather than followed.
    """
    try:
        _refuse(os.stat(path, follow_symlinks=follow), limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                     | (0 if follow else os.O_NOFOLLOW))
    except (FileNotFoundError, Unreadable):
        raise
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise Unreadable(f"cannot read: {exc}") from None
    try:
        _refuse(os.fstat(fd), limit)  # what was opened, whatever the path names now
        chunks, total = [], 0
        while chunk := os.read(fd, limit + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # a file that grew, or a size stat does not tell (procfs)
                raise Unreadable(f"larger than {size_text(limit)}")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _refuse(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise Unreadable(f"{kind}, not a regular file")
    if st.st_size > limit:
        raise Unreadable(f"larger than {size_text(limit)} ({st.st_size} bytes)")


def size_text(size: int) -> str:
    """Bytes for people: ``1 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def read_template(path: str) -> str:
    """A template's source, whole, as UTF-8 text; ValueError naming why it cannot be read
    (absent, not a regular file, larger than :data:`TEMPLATE_LIMIT`)."""
    try:
        return template_text(read_regular(path, TEMPLATE_LIMIT))
    except FileNotFoundError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None


def template_text(raw: bytes) -> str:
    """A template source's bytes as text; ValueError when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("cannot read: not UTF-8 text") from None
