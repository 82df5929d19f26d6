"""The validated-configuration cache: a boot reads its configuration without pydantic.

pydantic-settings stays the one schema and the only validator. ``agent bake-check`` (and
any ``agent run`` that misses) validates the configuration as usual and stores the result
as a plain dump, keyed by everything the validation read: the configuration file's bytes,
the ``AGENT_*`` environment, the schema itself (the agent's version and the source of its
configuration modules), and every outside fact a validator looked up (a user's or group's
id, a template source's content), which are looked up again before a hit counts. A boot
whose key matches rebuilds the configuration from the dump by calling the same frozen
section classes validation gives (:mod:`agent.config.loader`), and never imports pydantic.

The cache lives at ``/var/lib/agent/config-cache.json`` (``$AGENT_CONFIG_CACHE``; "" turns
it off), root's (or the agent's) and 0600. A cache that is missing, corrupt, stale, foreign
or readable by others is a miss, never an error.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import json
import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Any, get_args, get_origin

from agent import __version__
from agent.config.loader import Config, agent_environment, config_path
from agent.readfile import CONFIG_LIMIT, TEMPLATE_LIMIT, Unreadable, read_regular
from agent.schema import observed
from agent.schema.fields import bare, keys
from agent.schema.observed import Observation, file_digest

log = logging.getLogger(__name__)

DEFAULT_CACHE = "/var/lib/agent/config-cache.json"
FORMAT = 3
MAX_BYTES = 4 << 20
SCHEMA = ("config/loader.py", "config/document.py", "config/validator.py", "config/cache.py",
          "schema/fields.py", "schema/entries.py", "schema/observed.py", "schema/placeholders.py",
          "schema/expr.py", "cloud/config.py", "secrets/config.py", "tuning/config.py",
          "tuning/profiles.py", "readiness/config.py", "image/config.py", "telemetry/config.py",
          "lifecycle/config.py", "instance/context.py", "service/envfile.py")
"""The modules whose source is the schema (paths in the agent package): the cache's key."""


def cache_path() -> str:
    """Where the cache is ('' when turned off)."""
    return os.environ.get("AGENT_CONFIG_CACHE", DEFAULT_CACHE)


def load(explicit: str | None = None) -> Config:
    """The configuration: from the cache when its key matches, else validated (and cached).

    Errors are those of :func:`agent.config.loader.load` (one line, exit 78).
    """
    path, must_exist = config_path(explicit)
    try:
        raw: bytes | None = read_regular(path, CONFIG_LIMIT)
    except FileNotFoundError:
        raw = None
    except Unreadable:
        raw = None
        must_exist = True  # unreadable: validation below says why, in one line
    where = cache_path()
    key = _key(path, raw)
    if where and not (raw is None and must_exist):
        hit = _lookup(where, key)
        if hit is not None:
            log.debug("configuration from the cache %s", where)
            return hit
    from agent.config import loader  # noqa: PLC0415 - pydantic only on a miss

    if raw is None and must_exist:
        loader.read_bytes(path, must_exist=True)  # raises ConfigError naming the problem
    seen, token = observed.observing()
    try:
        cfg = loader.validate(path, raw)
    finally:
        observed.stop(token)
    if where:
        store(where, key, cfg, seen)
    return cfg


def prime(explicit: str | None, where: str) -> tuple[Config, bool]:
    """Validate and store the cache at ``where`` (``agent bake-check``: the image's first boot
    then needs no pydantic); the configuration, and whether the cache was written."""
    from agent.config import loader  # noqa: PLC0415

    path, must_exist = config_path(explicit)
    raw = loader.read_bytes(path, must_exist=must_exist)
    seen, token = observed.observing()
    try:
        cfg = loader.validate(path, raw)
    finally:
        observed.stop(token)
    return cfg, store(where, _key(path, raw), cfg, seen)


def store(where: str, key: str, cfg: Config, seen: list[Observation]) -> bool:
    """Write the cache (root's or ours, 0600); False when it cannot be written (a miss next
    time, nothing worse)."""
    from agent.fsutil import atomic_write  # noqa: PLC0415

    document = {"format": FORMAT, "key": key, "observed": seen, "config": dump(cfg)}
    try:
        atomic_write(where, json.dumps(document, separators=(",", ":")).encode(), mode=0o600,
                     dir_mode=0o755)
    except (OSError, TypeError, ValueError) as exc:
        log.debug("configuration cache %s not written: %s", where, exc)
        return False
    return True


def _key(path: Path, raw: bytes | None) -> str:
    digest = hashlib.sha256()
    here = Path(__file__).parent.parent  # the agent package
    for name in SCHEMA:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(b"missing " + name.encode())
    material = [__version__, str(path), raw.hex() if raw is not None else None,
                agent_environment()]
    digest.update(json.dumps(material).encode())
    return digest.hexdigest()


def _lookup(where: str, key: str) -> Config | None:
    """The configuration of a matching cache, else None (every problem is a miss)."""
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid())
                or st.st_mode & 0o077 or st.st_size > MAX_BYTES):
            log.debug("configuration cache %s ignored: not a private file of ours", where)
            return None
        data = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        document = json.loads(data)
        if (not isinstance(document, dict) or document.get("format") != FORMAT
                or document.get("key") != key or not _still_so(document.get("observed"))):
            return None
        return view(document["config"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        log.debug("configuration cache %s ignored: corrupt", where)
        return None


def _still_so(seen: object) -> bool:
    """Whether every outside fact the validation read is still so."""
    if not isinstance(seen, list):
        return False
    for kind, key, value in seen:
        try:
            if kind == "owner":
                now: Any = pwd.getpwnam(key).pw_uid
            elif kind == "group":
                now = grp.getgrnam(key).gr_gid
            elif kind == "file":  # a template source: read as its validation reads it
                try:
                    now = file_digest(read_regular(key, TEMPLATE_LIMIT))
                except FileNotFoundError:
                    now = None
            else:
                return False
        except (KeyError, OSError, ValueError):  # ValueError: Unreadable, a refused file
            return False
        if now != value:
            return False
    return True


# -- the dump and its rebuild -------------------------------------------------------------


def dump(cfg: Any) -> Any:
    """A configuration or a section (validated, or rebuilt from the cache) as plain JSON: its
    fields (``dataclasses.fields``, the keys only); :func:`view` rebuilds it without pydantic
    (the resident daemon's jobs get the boot's own)."""
    return _plain(cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name))
                for field in dataclasses.fields(value) if field.init}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def view(dumped: Any) -> Config:
    """The configuration :func:`dump` gave, rebuilt by the sections' own constructors (their
    compiled forms made again; a dump that does not fit is a TypeError or a ValueError)."""
    built = rebuild(Config, dumped)
    if not isinstance(built, Config):
        raise TypeError("not a configuration")
    return built


def rebuild(kind: Any, value: Any) -> Any:
    """``value`` (plain JSON, as :func:`dump` gave it) as ``kind``: a section, a list of
    entries or a plain value, by the sections' own constructors."""
    kind = bare(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{kind.__name__}: not a table")
        types = keys(kind)
        return kind(**{name: rebuild(types[name], item) for name, item in value.items()})
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return [rebuild(item, v) for v in value]
    return value
