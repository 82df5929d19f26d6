"""Generations: a set of files published all at once, on any filesystem (certbot's idea).

Layout of a published directory::

    .gen-000007/            a complete generation: every file, final mode and owner
    .gen-000006/            the previous one (kept for a reader in the middle of a read)
    .current -> .gen-000007 the switch: one rename of a symlink flips the whole set
    db.json -> .current/db.json     the visible names, resolved through .current

A generation is written under ``.gen-N.tmp`` and renamed when complete; anything named
``.*.tmp`` is half-written and :func:`recover` deletes it. Every visible link is created
*before* the switch (a new one dangles until then), so the set a reader can open changes
in one step. The first publish into an empty directory that is not a mount point goes
further: the whole directory (generation, ``.current``, every visible name) is built beside
it and renamed over it, so that a reader listing it sees no name, then all of them. A failure
at any step before the switch leaves the earlier generation current and intact; after it,
only pruning is left (best effort).

No AWS here: the caller hands in the bytes (:class:`Item`), whose repr never shows them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from agent.errors import SecretsError
from agent.frozen import frozen
from agent.fsutil import claim_dir, fsync_dir, is_mount_point, make_dirs, write_new

log = logging.getLogger(__name__)

CURRENT = ".current"
GEN_PREFIX = ".gen-"
TMP_SUFFIX = ".tmp"
LINK_PREFIX = CURRENT + "/"


@frozen(repr=False)
class Item:
    """One file of a generation: where (relative), its bytes, mode and owner."""

    path: str
    content: bytes
    mode: int
    uid: int = -1
    gid: int = -1
    owner: str = ""  # "user:group", for messages

    def __repr__(self) -> str:
        return f"Item({self.path!r}, {len(self.content)} bytes=<redacted>)"


@frozen()
class Publication:
    """A generation made current: its name, and which paths changed or are new."""

    generation: str
    changed: list[str]  # content differs from the previous generation's
    added: list[str]  # not in the previous generation


def existing(root: Path) -> list[Path]:
    """Complete generations, oldest first."""
    found = [p for p in root.glob(GEN_PREFIX + "*") if not p.name.endswith(TMP_SUFFIX)]
    return sorted(found, key=lambda p: p.name)


def current(root: Path) -> Path | None:
    """The generation ``.current`` points to, if it is complete."""
    try:
        target = root / os.readlink(root / CURRENT)
    except OSError:
        return None
    return target if target.is_dir() and not target.name.endswith(TMP_SUFFIX) else None


def contents(generation: Path | None, paths: Iterable[str]) -> dict[str, bytes]:
    """The bytes of each path in ``generation`` (absent or unreadable files left out)."""
    found: dict[str, bytes] = {}
    if generation is None:
        return found
    for path in paths:
        with contextlib.suppress(OSError):
            found[path] = (generation / path).read_bytes()
    return found


def recover(root: Path) -> list[str]:
    """Delete half-written generations and stray temporary links; return what went."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if path.name.endswith(TMP_SUFFIX) and path.name.startswith("."):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
    if removed:
        log.warning("removed half-written state in %s: %s", root, ", ".join(sorted(removed)))
    return removed


def publish(root: Path, items: Sequence[Item], dir_mode: int) -> Publication:
    """Write a complete new generation, link every visible name, switch in one rename.

    On any error before the switch nothing a reader can open changes, the partial
    generation and the links made for it are removed, and :class:`SecretsError` says
    what failed in one line (an ``OSError`` such as ENOSPC or EDQUOT included).
    """
    tops = sorted({PurePosixPath(item.path).parts[0] for item in items})
    made: list[Path] = []  # links created for this publish (removed if it fails)
    staging: Path | None = None
    try:
        problem = claim_dir(root, dir_mode)  # also when it existed (a tmpfs mounted 1777)
        if problem:
            raise SecretsError(f"secrets.dir {root}: {problem}")
        recover(root)
        _refuse_foreign(root, tops)
        whole = _publish_whole(root, items, tops, dir_mode) if (
            current(root) is None and _replaceable(root)) else None
        if whole is not None:
            return whole
        before = contents(current(root), [item.path for item in items])
        found = existing(root)
        number = int(found[-1].name[len(GEN_PREFIX):]) + 1 if found else 1
        name = f"{GEN_PREFIX}{number:06d}"
        staging = root / (name + TMP_SUFFIX)
        _write_generation(staging, items, dir_mode)
        os.rename(staging, root / name)
        staging = None
        previous = current(root)
        for top in tops:  # dangling until .current moves: nothing visible changes yet
            if _symlink(root / top, LINK_PREFIX + top):
                made.append(root / top)
        _symlink(root / CURRENT, name)  # the switch
    except (OSError, SecretsError) as exc:
        _undo(staging, made)
        if isinstance(exc, SecretsError):
            raise
        raise SecretsError(f"cannot publish to {root}: {_reason(exc)}") from None
    except BaseException:
        _undo(staging, made)
        raise
    with contextlib.suppress(OSError):  # the switch is made; the rest is housekeeping
        fsync_dir(root)
        _prune(root, set(tops), keep={name, previous.name if previous else ""})
    return Publication(
        name,
        changed=[i.path for i in items if before.get(i.path, i.content) != i.content],
        added=[i.path for i in items if i.path not in before],
    )


FIRST_PREFIX = "first-"  # the directory built beside ``root`` for its first publish


def _replaceable(root: Path) -> bool:
    """Whether ``root`` can be replaced by one rename: an empty directory, not a mount point
    (a rename cannot cross into or replace one)."""
    return not any(root.iterdir()) and not is_mount_point(root)


def _publish_whole(root: Path, items: Sequence[Item], tops: Sequence[str],
                   dir_mode: int) -> Publication | None:
    """The first publish: ``root`` built complete beside it, then renamed over it (empty).

    None when nothing can be made beside it (a parent the agent may not write): then the
    links are made inside, as at every later publish.
    """
    for stale in root.parent.glob(f".{FIRST_PREFIX}{root.name}.*{TMP_SUFFIX}"):  # a kill's
        shutil.rmtree(stale, ignore_errors=True)
    staging = root.with_name(f".{FIRST_PREFIX}{root.name}.{os.urandom(4).hex()}{TMP_SUFFIX}")
    name = f"{GEN_PREFIX}{1:06d}"
    try:
        staging.mkdir(mode=dir_mode)
    except OSError as exc:
        log.debug("first publish built in place: %s: %s", staging.parent, exc.strerror)
        return None
    try:
        os.chmod(staging, dir_mode)  # whatever the umask
        _write_generation(staging / name, items, dir_mode)
        for top in tops:
            os.symlink(LINK_PREFIX + top, staging / top)
        os.symlink(name, staging / CURRENT)
        fsync_dir(staging)
        os.rename(staging, root)  # the switch: an empty directory, then all of them
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SecretsError(f"cannot publish to {root}: {_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        fsync_dir(root.parent)
    return Publication(name, changed=[], added=[item.path for item in items])


def wipe(root: Path) -> bool:
    """Remove everything under ``root`` (the directory itself stays); False if absent."""
    if not root.is_dir():
        return False
    for path in root.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return True


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror} (the filesystem is out of space or inodes)"
    return exc.strerror or str(exc)


def _refuse_foreign(root: Path, tops: Iterable[str]) -> None:
    for top in tops:
        visible = root / top
        ours = visible.is_symlink() and os.readlink(visible).startswith(LINK_PREFIX)
        if (visible.exists() or visible.is_symlink()) and not ours:
            raise SecretsError(f"{visible} exists and is not managed by the agent; move it away")


def _write_generation(staging: Path, items: Sequence[Item], dir_mode: int) -> None:
    make_dirs(staging, dir_mode)
    euid, egid = os.geteuid(), os.getegid()
    for item in items:
        target = staging / item.path
        make_dirs(target.parent, dir_mode)
        uid = item.uid if item.uid not in (-1, euid) else -1
        gid = item.gid if item.gid not in (-1, egid) else -1
        try:
            write_new(target, item.content, item.mode, uid, gid)
        except PermissionError:
            if uid == -1 and gid == -1:
                raise
            raise SecretsError(
                f"{item.path}: cannot give it to {item.owner}: the agent runs as uid {euid}, "
                "and only root can give files away") from None
    fsync_dir(staging)


def _symlink(link: Path, target: str) -> bool:
    """Point ``link`` at ``target`` in one step (a new link renamed over the old one).

    True when ``link`` did not exist before (it was created, not replaced).
    """
    try:
        if os.readlink(link) == target:
            return False
        created = False
    except FileNotFoundError:
        created = True
    except OSError:
        created = False
    temp = link.with_name(f"{link.name}.{os.getpid()}{TMP_SUFFIX}")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    try:
        os.rename(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return created


def _undo(staging: Path | None, made: list[Path]) -> None:
    """Best effort after a failed publish: the partial generation, the new links."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    for link in made:
        with contextlib.suppress(OSError):
            link.unlink()


def _prune(root: Path, tops: set[str], keep: set[str]) -> None:
    """Generations but the current and previous go; so do links no entry names."""
    for gen in existing(root):
        if gen.name not in keep:
            shutil.rmtree(gen, ignore_errors=True)
    for path in root.iterdir():
        if (path.is_symlink() and path.name != CURRENT and path.name not in tops
                and os.readlink(path).startswith(LINK_PREFIX)):
            path.unlink()

