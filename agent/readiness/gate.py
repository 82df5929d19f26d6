"""The readiness gate: ``CONTINUE`` only once the applications serve.

After ``READY=1`` (the units ordered after ``agent-ready.target`` start), every configured
unit must be ``active`` and every check pass, all in the same round, in every round for
``settle_seconds``; within ``timeout_seconds``. A unit that enters ``failed`` (systemd will
not restart it) fails the gate at once; a unit that restarts (its invocation changes) starts
the settling over, so a crash loop never settles. :class:`Gate` is those rules alone, with
the clock, the sleep and the probes passed in; :func:`phase` is the boot's readiness phase,
:class:`Regate` the same gate after a rotation that reloaded units.

Units are read from systemd itself (``systemctl show``): ``ActiveState``, ``SubState``,
``Result``, ``ExecMainStatus``, ``NRestarts`` and ``InvocationID``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import BootError
from agent.frozen import frozen
from agent.service.notify import child_environment, systemd_running
from agent.state.recorder import Phase, PhaseState, utc_now

if TYPE_CHECKING:
    from agent.readiness.config import ReadinessConfig
    from agent.service.notify import Notifier
    from agent.state.recorder import Recorder

log = logging.getLogger(__name__)

PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts",
              "InvocationID")
SYSTEMCTL = "systemctl"
SYSTEMCTL_TIMEOUT = 10.0
ROTATION_WARNING = "readiness after rotation:"  # the prefix of a failed re-gate's warning


class ReadinessError(BootError):
    """The applications did not become ready."""


@frozen()
class Seen:
    """What one round saw of one subject (a unit or a check)."""

    name: str  # app.service, http://127.0.0.1:8080/healthz, tcp 127.0.0.1:5432
    ok: bool
    saw: str  # active (running); 503; connection refused; exit 1
    final: bool = False  # failed for good: no restart coming
    epoch: str = ""  # changes when a unit is started again (its invocation)
    unit: bool = False

    def line(self) -> str:
        """How a failure line names it: ``http://...: 503``, ``app.service failed (...)``."""
        return f"{self.name} {self.saw}" if self.unit else f"{self.name}: {self.saw}"


Probe = Callable[[float], list[Seen]]  # one round's look within a budget of seconds


@dataclass
class Gate:
    """The rules of the wait; :meth:`wait` returns a summary, or raises ReadinessError."""

    probes: Sequence[Probe]
    timeout: float
    settle: float
    interval: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    on_round: Callable[[list[Seen], float | None], None] | None = None  # seen, held since

    def wait(self) -> str:
        """Rounds until everything held ``settle`` seconds, one failed for good, or timeout."""
        start = self.clock()
        deadline = start + self.timeout
        since: float | None = None  # when the current unbroken run of good rounds began
        epochs: dict[str, str] = {}
        broke = ""  # what last broke a run of good rounds (or restarted)
        rounds = 0
        while True:
            now = self.clock()
            seen = [s for probe in self.probes for s in probe(max(0.0, deadline - now))]
            rounds += 1
            for item in seen:
                if item.final:
                    raise ReadinessError(item.line())
            restarted = [s for s in seen if s.epoch and epochs.get(s.name, s.epoch) != s.epoch]
            epochs.update({s.name: s.epoch for s in seen if s.epoch})
            bad = [s for s in seen if not s.ok]
            if bad or restarted:
                if since is not None or restarted:
                    broke = (bad or restarted)[0].line() + ("" if bad else " (restarted)")
                since = None
            elif since is None:
                since = now
            if self.on_round is not None:
                self.on_round(seen, since)
            after = self.clock()
            if since is not None and after - since >= self.settle:
                return (f"{len(seen)} ready, held {after - since:.0f} s "
                        f"({after - start:.1f} s, {rounds} rounds)")
            if after >= deadline:
                raise ReadinessError(self._late(bad, broke, 0.0 if since is None else
                                                after - since))
            wake = min(self.interval, deadline - after)
            if since is not None:
                wake = min(wake, max(0.0, since + self.settle - after))
            self.sleep(wake)

    def _late(self, bad: list[Seen], broke: str, held: float) -> str:
        """The line of a timed-out wait: what was not ready, or what kept breaking."""
        head = f"not ready within {self.timeout:g} s: "
        if bad:
            return head + "; ".join(s.line() for s in bad)
        if broke:
            return head + f"never held for {self.settle:g} s (last: {broke})"
        return head + f"ready for only {held:.0f} s of settle_seconds {self.settle:g}"


# -- units, as systemd sees them ---------------------------------------------------------


def parse_show(text: str, units: Sequence[str]) -> list[Seen]:
    """``systemctl show -p ...`` output (one block per unit, in order) as what was seen."""
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in text.strip().split("\n\n")] if text.strip() else []
    if len(blocks) != len(units):
        raise ReadinessError(f"systemctl show answered {len(blocks)} units of {len(units)}")
    return [unit_seen(unit, props) for unit, props in zip(units, blocks, strict=True)]


def unit_seen(unit: str, props: dict[str, str]) -> Seen:
    """One unit's state: ok when active; final when failed or absent."""
    active, sub = props.get("ActiveState", "?"), props.get("SubState", "?")
    restarts = props.get("NRestarts", "0")
    after = f" after {restarts} restarts" if restarts not in ("", "0") else ""
    if props.get("LoadState") not in ("loaded", None):
        return Seen(unit, False, f"not loaded ({props.get('LoadState')})", final=True,
                    unit=True)
    if active == "failed":
        return Seen(unit, False, f"failed ({props.get('Result', '?')}, status "
                    f"{props.get('ExecMainStatus', '?')}){after}", final=True, unit=True)
    return Seen(unit, active == "active", f"{active} ({sub}){after}",
                epoch=props.get("InvocationID", ""), unit=True)


def unit_probe(units: Sequence[str]) -> Probe:
    """All ``units`` in one ``systemctl show``."""
    argv = [SYSTEMCTL, "show", f"--property={','.join(PROPERTIES)}", "--", *units]

    def probe(budget: float) -> list[Seen]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  env=child_environment(), stdin=subprocess.DEVNULL,
                                  timeout=max(1.0, min(budget, SYSTEMCTL_TIMEOUT)))
        except subprocess.TimeoutExpired:
            return [Seen(u, False, "unknown (systemctl show timed out)", unit=True)
                    for u in units]
        except OSError as exc:
            raise ReadinessError(f"units: cannot run systemctl: {exc.strerror}") from None
        if proc.returncode != 0:
            return [Seen(u, False, f"unknown (systemctl show exited {proc.returncode})",
                         unit=True) for u in units]
        return parse_show(proc.stdout, units)

    return probe


def check_probe(cfg: ReadinessConfig) -> Probe:
    """Every check once, at the same time; each bounded by its own timeout."""
    from agent.readiness import checks  # noqa: PLC0415 - http.client and ssl: only when there are checks

    entries = list(cfg.checks)

    def probe(budget: float) -> list[Seen]:
        with ThreadPoolExecutor(len(entries), "check") as pool:
            results = list(pool.map(lambda c: checks.run(c, budget), entries))
        return [Seen(c.label, ok, saw) for c, (ok, saw) in zip(entries, results, strict=True)]

    return probe


def probes(cfg: ReadinessConfig, units: Sequence[str]) -> list[Probe]:
    """The probes of a gate on ``units`` and every check; a check aimed elsewhere, or units
    without systemd, fail at once."""
    from agent.readiness import checks  # noqa: PLC0415

    for where, check in enumerate(cfg.checks):
        if check.kind != "command":
            problem = checks.local_problem(checks.host_port(check)[0])
            if problem:
                raise ReadinessError(f"readiness.checks[{where}]: {problem}")
    found: list[Probe] = []
    if units:
        if not systemd_running():
            raise ReadinessError(f"units {', '.join(units)}: systemd is not running here")
        found.append(unit_probe(units))
    if cfg.checks:
        found.append(check_probe(cfg))
    return found


def describe(cfg: ReadinessConfig) -> list[str]:
    """What the gate waits for, as ``agent plan`` shows it."""
    return [*(f"{unit} active" for unit in cfg.units),
            *(f"{c.label}: {_expected(c)}, within {c.timeout_seconds:g} s" for c in cfg.checks)]


def _expected(check: Any) -> str:
    if check.kind == "http":
        return ("status " + ", ".join(map(str, check.expect_status)) if check.expect_status
                else "a 2xx answer")
    return "a connection accepted" if check.kind == "tcp" else "exit 0"


# -- the boot's phase, and after a rotation -----------------------------------------------


class Watch:
    """A gate's rounds, reported: state.json's ``readiness``, the phase's detail, systemd's
    STATUS= and watchdog pings (the watchdog runs from READY=1 on)."""

    def __init__(self, cfg: ReadinessConfig, rec: Recorder, notify: Notifier | None) -> None:
        self.cfg, self.rec, self.notify = cfg, rec, notify
        self.last: tuple[list[tuple[str, bool, str]], bool] = ([], False)

    def __call__(self, seen: list[Seen], since: float | None) -> None:
        if self.notify is not None:
            self.notify.watchdog()
        now = ([(s.name, s.ok, s.saw) for s in seen], since is None)
        if now == self.last:
            return  # nothing new to say (state.json is written on changes only)
        self.last = now
        waiting = [s for s in seen if not s.ok]
        text = ("waiting for " + "; ".join(s.line() for s in waiting) if waiting else
                f"all ready; must hold {self.cfg.settle_seconds:g} s")
        self.rec.update(readiness={**self.rec.doc.get("readiness", {}),
                                   "settle_seconds": self.cfg.settle_seconds,
                                   "ready_since": None if since is None else utc_now(),
                                   "seen": [{"name": s.name, "ready": s.ok, "saw": s.saw}
                                            for s in seen]})
        self.rec.note(Phase.READINESS, text)
        if self.notify is not None:
            self.notify.status(f"readiness: {text}")


def gate(cfg: ReadinessConfig, units: Sequence[str], on_round: Watch) -> str:
    """One wait for ``units`` and every check: its summary, or ReadinessError."""
    return Gate(probes(cfg, units), cfg.timeout_seconds, cfg.settle_seconds,
                cfg.interval_seconds, on_round=on_round).wait()


def phase(cfg: ReadinessConfig, rec: Recorder, notify: Notifier, *,
          warm: bool) -> tuple[PhaseState, str]:
    """The readiness phase: ``READY=1`` (the applications start), then the gate."""
    if not cfg.enabled:
        return PhaseState.SKIPPED, "no [readiness] section"
    if warm:
        return PhaseState.SKIPPED, "warm pool: waits when the instance goes InService"
    notify.ready("waiting for the applications")
    log.info("readiness: READY=1 sent; waiting for %s", ", ".join(describe(cfg)))
    return PhaseState.DONE, gate(cfg, cfg.units, Watch(cfg, rec, notify))


class Regate:
    """After a rotation that reloaded units: the gate again for them (the resident's
    ``regate`` job). A failure is a warning naming the secret and the unit; the outcomes are
    counted in state.json's ``readiness.after_rotation``, from the counts already there."""

    def __init__(self, cfg: ReadinessConfig, rec: Recorder) -> None:
        self.cfg, self.rec = cfg, rec

    def run(self, reloaded: list[tuple[str, str]]) -> bool:
        """One gate on the units ``reloaded`` ((secret, unit) pairs); True when they serve
        again."""
        units = list(dict.fromkeys(unit for _, unit in reloaded))
        try:
            gate(self.cfg, units, Watch(self.cfg, self.rec, None))
        except Exception as exc:  # a bug too: a warning, the daemon goes on
            line = str(exc) if isinstance(exc, BootError) else f"internal error: {exc!r}"
            names = ", ".join(f"{secret} -> {unit}" for secret, unit in reloaded)
            log.warning("%s %s: %s", ROTATION_WARNING, names, line)
            self._count("failed")
            self.rec.clear_warning(ROTATION_WARNING)
            self.rec.warn(f"{ROTATION_WARNING} {names}: {line}")
            return False
        log.info("readiness after rotation: %s serve again", ", ".join(units))
        self._count("passed")
        self.rec.clear_warning(ROTATION_WARNING)
        return True

    def _count(self, outcome: str) -> None:
        readiness = self.rec.doc.get("readiness") or {}
        counts = {"passed": 0, "failed": 0, **(readiness.get("after_rotation") or {})}
        counts[outcome] += 1
        self.rec.update(readiness={**readiness, "after_rotation": counts})
