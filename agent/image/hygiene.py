"""Clone hygiene: what an image must not carry because it must differ per instance, or
because it is the build's own.

* ``/etc/machine-id`` holding an id: every instance would share it (journald, D-Bus and
  DHCP rely on it). Empty or ``uninitialized``, systemd makes one at each first boot.
* SSH host keys: every instance would share them (one stolen key impersonates the fleet).
* ``authorized_keys`` in a home: the builder's key would open every instance.
* Shell and tool histories, the build's persistent journal and its logs under ``/var/log``.

:func:`problems` says each, one line per kind; :func:`fix` removes or empties what it is
safe to and says what it did. Symbolic links are never followed (an image's absolute link
would point into the host).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from agent.errors import escape
from agent.frozen import frozen

MACHINE_IDS = ("etc/machine-id", "var/lib/dbus/machine-id")
UNSET_MACHINE_ID = ("", "uninitialized")
HOST_KEYS = "etc/ssh"
HOST_KEY = re.compile(r"^ssh_host_\w+_key(?:\.pub|-cert\.pub)?$")
AUTHORIZED_KEYS = (".ssh/authorized_keys", ".ssh/authorized_keys2")
HISTORIES = (".bash_history", ".zsh_history", ".sh_history", ".ash_history", ".histfile",
             ".python_history", ".mysql_history", ".psql_history", ".sqlite_history",
             ".node_repl_history", ".lesshst", ".viminfo", ".wget-hsts",
             ".local/share/fish/fish_history")
JOURNAL = "var/log/journal"
LOGS = "var/log"
ROTATED = re.compile(r"(?:\.\d+|\.gz|\.xz|\.bz2|\.zst|\.old|-\d{8})(?:\.gz|\.xz|\.bz2|\.zst)?$")
SHOWN = 3  # file names in a line; the count says how many


def _regular(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _names(root: Path, paths: list[Path]) -> str:
    shown = ", ".join("/" + escape(str(p.relative_to(root))) for p in paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def homes(root: Path) -> list[Path]:
    """``/root`` and each directory in ``/home`` (not links)."""
    found = [root / "root"]
    home = root / "home"
    if home.is_dir() and not home.is_symlink():
        found += sorted(p for p in home.iterdir() if p.is_dir() and not p.is_symlink())
    return [p for p in found if p.is_dir() and not p.is_symlink()]


def _walk(top: Path) -> list[Path]:
    """Regular files under ``top``, links not followed."""
    if not top.is_dir() or top.is_symlink():
        return []
    return sorted(Path(d) / name for d, _, names in os.walk(top) for name in names
                  if _regular(Path(d) / name))


@frozen()
class Found:
    """The files of one kind of problem, found in an image root."""

    machine_ids: list[Path]
    host_keys: list[Path]
    authorized_keys: list[Path]
    histories: list[Path]
    journal: list[Path]
    logs: list[Path]  # non-empty, outside the journal


def find(root: Path) -> Found:
    """Everything an instance must not inherit from the build."""
    machine_ids = []
    for name in MACHINE_IDS:
        path = root / name
        try:
            if _regular(path) and path.read_text(errors="replace").strip() not in UNSET_MACHINE_ID:
                machine_ids.append(path)
        except OSError:
            continue
    keys = root / HOST_KEYS
    host_keys = sorted(p for p in keys.iterdir() if HOST_KEY.match(p.name) and _regular(p)) \
        if keys.is_dir() and not keys.is_symlink() else []
    every_home = homes(root)
    journal = _walk(root / JOURNAL)
    logs = [p for p in _walk(root / LOGS) if p not in set(journal) and _size(p)]
    return Found(
        machine_ids, host_keys,
        [home / name for home in every_home for name in AUTHORIZED_KEYS
         if _regular(home / name) and _size(home / name)],
        [home / name for home in every_home for name in HISTORIES if _regular(home / name)],
        journal, logs)


def problems(root: Path) -> list[str]:
    """One line for each kind of thing that would make every instance a clone."""
    found = find(root)
    lines = [f"/{escape(str(p.relative_to(root)))} holds an id: every instance would "
             "share it (empty it, or --fix)" for p in found.machine_ids]
    if found.host_keys:
        lines.append(f"{len(found.host_keys)} SSH host key file(s) ({_names(root, found.host_keys)}"
                     "): every instance would share them (remove them, or --fix)")
    for path in found.authorized_keys:
        lines.append(f"/{escape(str(path.relative_to(root)))}: the build's key would open "
                     "every instance (remove it, or --fix)")
    if found.histories:
        lines.append(f"{len(found.histories)} shell or tool history file(s) of the build "
                     f"({_names(root, found.histories)}) (remove them, or --fix)")
    if found.journal:
        lines.append(f"the build's journal: {len(found.journal)} file(s) under /{JOURNAL} "
                     "(remove them, or --fix)")
    if found.logs:
        lines.append(f"the build's logs: {len(found.logs)} non-empty file(s) under /{LOGS} "
                     f"({_names(root, found.logs)}) (empty them, or --fix)")
    return lines


def fix(root: Path) -> list[str]:
    """Empty the machine-id, remove host keys, authorized keys, histories, the journal and
    rotated logs, empty the other logs; one line for each kind done, and for each file that
    could not be (the check that follows still finds it). Packages untouched."""
    found = find(root)
    done = []

    def each(paths: list[Path], action: Callable[[Path], object], said: str) -> None:
        cleaned = 0
        for path in paths:
            try:
                action(path)
                cleaned += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                done.append(f"could not clean /{escape(str(path.relative_to(root)))}: "
                            f"{exc.strerror or exc}")
        if cleaned:
            done.append(said.format(n=cleaned))

    etc_id = [p for p in found.machine_ids if p == root / MACHINE_IDS[0]]
    each(etc_id, lambda p: p.write_bytes(b""),
         "emptied /etc/machine-id (systemd makes one at each instance's first boot)")
    each([p for p in found.machine_ids if p not in etc_id], Path.unlink,
         "removed /var/lib/dbus/machine-id (D-Bus reads /etc/machine-id)")
    each(found.host_keys, Path.unlink, f"removed {{n}} SSH host key file(s) from /{HOST_KEYS} "
         "(each instance makes its own at first boot)")
    each(found.authorized_keys, Path.unlink, "removed {n} authorized_keys file(s)")
    each(found.histories, Path.unlink, "removed {n} history file(s)")
    each(found.journal, Path.unlink, f"removed {{n}} journal file(s) from /{JOURNAL}")
    rotated = [p for p in found.logs if ROTATED.search(p.name)]
    each(rotated, Path.unlink, f"removed {{n}} rotated log file(s) from /{LOGS}")
    each([p for p in found.logs if p not in rotated], lambda p: os.truncate(p, 0),
         f"emptied {{n}} log file(s) under /{LOGS}")
    return done
