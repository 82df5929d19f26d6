"""Small file-system helpers shared by the writers: atomic replace, filesystem type."""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
_FS_NAMES = {
    TMPFS_MAGIC: "tmpfs",
    RAMFS_MAGIC: "ramfs",
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x794C7630: "overlayfs",
    0x6969: "nfs",
}


def write_new(path: str | os.PathLike[str], data: bytes, mode: int, uid: int = -1,
              gid: int = -1, *, sync: bool = True) -> None:
    """Create ``path`` (which must not exist) with its final mode and owner, then fill it.

    Mode and ownership are set on the descriptor before the first byte is written, so the
    content is never readable by anyone the final file would not admit.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)  # the umask must not narrow or widen what was asked
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the directory's entries durable (a rename into it, a file created in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike[str], mode: int = 0o755) -> list[Path]:
    """Create ``path`` and missing parents with exactly ``mode`` (whatever the umask, which
    ``mkdir(2)`` applies: under the unit's ``UMask=0077`` a 0711 directory would come out
    0700); the directories created, outermost first."""
    missing: list[Path] = []
    directory = Path(path)
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(mode=mode)
        os.chmod(created, mode)
    return list(reversed(missing))


def claim_dir(directory: str | os.PathLike[str], mode: int, *, exact: bool = True,
              deep: bool = True) -> str:
    """Make ``directory`` ours before anything is written in it; why not ('' when done).

    Every existing ancestor must belong to root or to us and be writable by its owner alone,
    unless it is sticky (as /tmp and /dev/shm are: nobody may rename there what is not
    theirs). A missing directory is created with ``mode``. An existing one must be a real
    directory (not a symlink) of ours or root's; it is taken over (its mode set to ``mode``,
    or with ``exact`` false only the group and other write bits removed, so that nobody
    else can add to it), then refused if another user owns an entry in it, or (``deep``) a
    directory or link anywhere below (files below the top may be ones we gave away).
    """
    target = Path(directory)
    problem = _unsafe_parent(target)
    if problem:
        return problem
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        try:
            make_dirs(target, mode)
        except OSError as exc:
            return f"cannot create it: {exc.strerror}"
        return ""
    except OSError as exc:
        return f"cannot inspect it: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "it is a symlink" if stat.S_ISLNK(st.st_mode) else "it is not a directory"
    if st.st_uid not in (0, os.geteuid()):
        return (f"refused: it is owned by uid {st.st_uid}, who could replace what the agent "
                "writes there (remove it, or make it root's)")
    try:
        os.chmod(target, mode if exact else stat.S_IMODE(st.st_mode) & ~0o022)
        return _foreign_inside(target, deep)
    except OSError as exc:
        return f"cannot take it over: {exc.strerror}"


def _unsafe_parent(target: Path) -> str:
    euid = os.geteuid()
    for ancestor in target.parents:
        try:
            st = os.stat(ancestor)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot inspect {ancestor}: {exc.strerror}"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid not in (0, euid) or (writable and not st.st_mode & stat.S_ISVTX):
            who = (f"owned by uid {st.st_uid}" if st.st_uid not in (0, euid)
                   else f"mode {stat.S_IMODE(st.st_mode):04o}")
            return (f"refused: its parent {ancestor} is {who}, so another user could replace "
                    "it (make the parent owned by root and writable by root only)")
    return ""


def _foreign_inside(target: Path, deep: bool) -> str:
    euid = os.geteuid()
    for path, dirs, names in os.walk(target):
        top = Path(path) == target
        for name in dirs + names:
            st = os.lstat(os.path.join(path, name))
            planted = top or not stat.S_ISREG(st.st_mode)
            if planted and st.st_uid not in (0, euid):
                return (f"refused: {os.path.join(path, name)} in it belongs to uid "
                        f"{st.st_uid}, who could have planted it (remove it)")
        if not deep:
            return ""
    return ""


def temp_name(name: str) -> str:
    """A hidden, unique temporary name beside ``name`` (``.name.1a2b3c4d.tmp``)."""
    return f".{name}.{os.urandom(4).hex()}.tmp"


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, uid: int = -1,
                 gid: int = -1, dir_mode: int = 0o755, *, sync: bool = True) -> None:
    """Replace ``path`` in one step: a complete temporary file renamed over it."""
    target = Path(path)
    make_dirs(target.parent, dir_mode)
    temp = target.with_name(temp_name(target.name))
    try:
        write_new(temp, data, mode, uid, gid, sync=sync)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class _Statfs(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
        ("_pad", ctypes.c_char * 64),  # room for any libc's larger layout
    ]


_libc: ctypes.CDLL | None = None


def fs_type(path: str | os.PathLike[str]) -> int:
    """The ``statfs(2)`` ``f_type`` magic of the filesystem holding ``path``."""
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the running process's libc
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(path))
    return int(buf.f_type) & 0xFFFFFFFF


def fs_name(magic: int) -> str:
    """A readable name for a filesystem magic number."""
    return _FS_NAMES.get(magic, f"0x{magic:x}")


def is_memory_fs(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is on tmpfs or ramfs (never written to a disk)."""
    return fs_type(path) in (TMPFS_MAGIC, RAMFS_MAGIC)


MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is the root of a mounted filesystem."""
    return os.path.ismount(path)


def mount_tmpfs(path: str | os.PathLike[str], size: str, mode: int = 0o700) -> bool:
    """Mount a private tmpfs (nosuid, nodev, noexec) at ``path``; True if ``noswap`` took.

    ``noswap`` (Linux >= 6.4) keeps the pages out of swap; older kernels refuse the option
    with EINVAL and get the mount without it. Needs CAP_SYS_ADMIN.
    """
    global _libc  # noqa: PLW0603
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    make_dirs(path, mode)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    for options, noswap in ((f"size={size},mode={mode:o},noswap", True),
                            (f"size={size},mode={mode:o}", False)):
        if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options.encode()) == 0:
            return noswap
        errno = ctypes.get_errno()
        if not (noswap and errno == 22):  # EINVAL: this kernel does not know noswap
            raise OSError(errno, os.strerror(errno), str(path))
    raise AssertionError("unreachable")
