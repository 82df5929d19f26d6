"""What configuration sections do besides holding values, without pydantic.

The validated models (:mod:`agent.config` and its section modules) and the read-only views
the validated-configuration cache rebuilds (:mod:`agent.configcache`) share these mixins,
so a boot that loads its configuration from the cache behaves exactly as one that validated
it. Also here: where the configuration file is, and the record of the outside facts a
validator looked up (the cache's key must change when they do).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from agent import statefile
from agent.errors import closest

ENV_PREFIX = "AGENT_"

T = TypeVar("T")


def labelled(kind: str, entries: Iterable[T]) -> list[tuple[str, T]]:
    """Each entry of a list section with where it is configured: ``("files[2]", entry)``."""
    return [(f"{kind}[{index}]", entry) for index, entry in enumerate(entries)]


Fact = tuple[str, str, Any]  # (kind, key, value): ("user", "nobody", 65534)
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


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get(statefile.CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return Path(statefile.DEFAULT_CONFIG), False


def agent_environment() -> list[tuple[str, str]]:
    """The ``AGENT_*`` variables (they may override any key), sorted."""
    return sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX))


class PublishedRules:
    """A published secrets file or template: its owner's ids, its credential's name."""

    if TYPE_CHECKING:
        path: str
        credential: str
        _uid: int
        _gid: int

    @property
    def uid(self) -> int:
        """The owner's uid, resolved at load."""
        return self._uid

    @property
    def gid(self) -> int:
        """The group's gid, resolved at load."""
        return self._gid

    @property
    def credential_name(self) -> str:
        """The systemd credential name services see in $CREDENTIALS_DIRECTORY."""
        return self.credential or PurePosixPath(self.path).name


class SecretFileRules(PublishedRules):
    """A ``[[secrets.files]]`` entry."""

    if TYPE_CHECKING:
        source: str
        secret_id: str
        parameter: str

    @property
    def label(self) -> str:
        """What it fetches, as written: ``secret '{tag:Environment}/db'``."""
        kind = "parameter" if self.source == "ssm" else "secret"
        return f"{kind} {self.secret_id or self.parameter!r}"


class SecretsRules:
    """The ``[secrets]`` section."""

    if TYPE_CHECKING:
        files: list[Any]
        templates: list[Any]

    def outputs(self) -> list[tuple[str, Any]]:
        """Every published entry with where it is configured (``files[2]``, ``templates[0]``)."""
        found = [(where, e) for where, e in labelled("files", self.files) if e.publish]
        return found + labelled("templates", self.templates)

    @staticmethod
    def clashes(outputs: list[tuple[str, Any, bool]]) -> str:
        """Why these published entries ``(where, entry, conditional)`` cannot all be: one path
        written twice, a file where a directory is, one credential name given twice."""
        problem = clash([(where, entry.path, conditional) for where, entry, conditional in
                         outputs])
        if problem:
            return problem
        return clash([(where, f"{unit} a credential named {entry.credential_name!r}",
                       conditional) for where, entry, conditional in outputs
                      for unit in entry.units], nested=False, given=True)


DROPIN_NAME = "60-agent-tuning.conf"  # [[tuning.dropins]]: <unit_dir>/<unit>.d/<this>
HUGEPAGES_SYSCTL = "vm.nr_hugepages"  # set by a postgres profile with reserve_huge_pages


class TuningFileRules:
    """A ``[[tuning.files]]`` entry."""

    if TYPE_CHECKING:
        path: str
        values: dict[str, str]
        share: float | None

    @property
    def label(self) -> str:
        """How the memory budget names it."""
        return f"file {self.path}"

    @property
    def in_budget(self) -> bool:
        """Whether it takes a share of the memory budget: only when it has one (without,
        ``memory_mib`` in its values is the machine's, as everywhere outside a member)."""
        return self.share is not None


class TuningProfileRules:
    """A ``[[tuning.profiles]]`` entry."""

    if TYPE_CHECKING:
        use: str
        path: str
        overrides: dict[str, str]
        options: dict[str, bool]
        share: float | None

    @property
    def label(self) -> str:
        """How messages and ``agent plan`` name it."""
        return f"profile {self.use}" + (f" -> {self.path}" if self.path else "")

    @property
    def in_budget(self) -> bool:
        """Whether it takes a share of the memory budget: some value reads memory_mib (every
        profile but nginx, as shipped), or it has one."""
        from agent import profiles  # noqa: PLC0415

        return self.share is not None or profiles.reads_memory(
            profiles.compile_profile(self.use, self.overrides, self.options))


class TuningRules:
    """The ``[tuning]`` section."""

    if TYPE_CHECKING:
        files: list[Any]
        profiles: list[Any]
        dropins: list[Any]
        templates: list[Any]
        sysctl: dict[str, str]
        unit_dir: str

    @property
    def has_outputs(self) -> bool:
        """Whether anything is configured to be written."""
        return bool(self.files or self.profiles or self.dropins or self.templates or self.sysctl)

    def dropin_path(self, unit: str) -> str:
        """Where the drop-in of ``unit`` goes."""
        return os.path.join(self.unit_dir, f"{unit}.d", DROPIN_NAME)

    def outputs(self) -> list[tuple[str, str, Any]]:
        """Every file the section writes: ``(where, path, entry)``."""
        found = [(where, e.path, e) for where, e in labelled("files", self.files)]
        found += [(where, e.path, e) for where, e in labelled("profiles", self.profiles)
                  if e.path]
        found += [(where, e.path, e) for where, e in labelled("templates", self.templates)]
        return found + [(where, self.dropin_path(e.unit), e)
                        for where, e in labelled("dropins", self.dropins)]

    def claims(self) -> list[Any]:
        """The members of the memory budget (``agent.budget.Claim``), in configuration order
        (profiles, then files); :mod:`agent.budget` is loaded only when there are some."""
        entries = labelled("profiles", self.profiles) + labelled("files", self.files)
        members = [(key, entry) for key, entry in entries if entry.in_budget]
        if not members:
            return []
        from agent.budget import Claim  # noqa: PLC0415

        return [Claim(key, entry.label, entry.share) for key, entry in members]


def template_problem(name: str, known: dict[str, set[str]]) -> str:
    """Why a tuning template may not use ``${name}`` ('' when it may)."""
    if name not in known:
        close = closest(name, known)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown variable ${{{name}}}{hint}"
    if len(known[name]) > 1:
        return (f"${{{name}}} is ambiguous: {len(known[name])} outputs define it "
                "differently")
    return ""


class ReadinessCheckRules:
    """A ``[[readiness.checks]]`` entry."""

    if TYPE_CHECKING:
        http: str
        tcp: str
        command: list[str]

    @property
    def kind(self) -> str:
        """``http``, ``tcp`` or ``command``."""
        return "http" if self.http else "tcp" if self.tcp else "command"

    @property
    def label(self) -> str:
        """How messages and ``agent status`` name it: the URL, ``tcp HOST:PORT``, the argv."""
        if self.http:
            return self.http
        if self.tcp:
            return f"tcp {self.tcp}"
        return " ".join(self.command)


ONESHOT_READINESS = ("[readiness] needs daemon mode (a oneshot run exits before the "
                     "applications could be watched)")


class ReadinessRules:
    """The ``[readiness]`` section."""

    if TYPE_CHECKING:
        units: list[str]
        checks: list[Any]

    @property
    def enabled(self) -> bool:
        """Whether the gate runs: something to wait for is configured."""
        return bool(self.units or self.checks)


RULES: dict[str, type] = {  # model class name -> its behaviour
    "SecretFile": SecretFileRules,
    "SecretTemplate": PublishedRules,
    "Published": PublishedRules,
    "SecretsConfig": SecretsRules,
    "TuningConfig": TuningRules,
    "TuningFile": TuningFileRules,
    "TuningProfile": TuningProfileRules,
    "ReadinessConfig": ReadinessRules,
    "ReadinessCheck": ReadinessCheckRules,
}
