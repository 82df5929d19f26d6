"""``agent run``: lock, boot, then stay resident (daemon mode) or exit (oneshot).

Resident, the agent sleeps in ``sigtimedwait`` until a signal or its next timer (secret
refresh, termination poll, watchdog ping): no polling loop, no busy thread. SIGTERM/SIGINT
stop it (exit 0, ``STOPPING=1``); SIGHUP refreshes the secrets now. :class:`Schedule` is the
timer arithmetic alone, with the clock passed in.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from agent import configcache
from agent.boot import Boot
from agent.errors import (
    EXIT_FAILED,
    EXIT_OK,
    AgentError,
    BootError,
    ConfigError,
    LockedError,
    exception_detail,
)
from agent.fsutil import claim_dir
from agent.imds import ImdsClient
from agent.sections import ONESHOT_READINESS
from agent.service import Notifier, setup_logging
from agent.state import Recorder, utc_now

if TYPE_CHECKING:
    from agent.termination import ScheduledEvents

log = logging.getLogger("agent.daemon")
T = TypeVar("T")
LOCK_FILE = "agent.lock"
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
RETRY_FIRST = 30.0  # a failed refresh is retried after this, doubling up to refresh_seconds
IDLE = 3600.0  # the longest sleep when no timer is set
REFRESH_FAILED = "secrets: refresh failed"
IMDS_DOWN = "termination watch: IMDS unreachable"


def acquire_lock(state_dir: str) -> int:
    """Hold ``<state_dir>/agent.lock`` for the life of the process; refuse a second run."""
    problem = claim_dir(state_dir, 0o755, exact=False, deep=False)
    if problem:
        raise BootError(f"state_dir {state_dir}: {problem}")
    try:
        fd = os.open(os.path.join(state_dir, LOCK_FILE),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BootError(f"state_dir {state_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockedError(
            f"another agent run (pid {holder}) holds {state_dir}/{LOCK_FILE}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run(config_path: str | None, *, oneshot: bool = False, verbose: bool = False) -> int:
    """The ``run`` command; returns its exit code."""
    started = time.monotonic()
    setup_logging(verbose)
    cfg = configcache.load(config_path)
    oneshot = oneshot or cfg.mode == "oneshot"
    if oneshot and cfg.readiness.enabled:
        raise ConfigError(f"--oneshot: {ONESHOT_READINESS}")
    notify = Notifier()
    acquire_lock(cfg.state_dir)
    if not oneshot:  # a SIGHUP during the boot must not kill it, nor be lost: it waits (the
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # boot's threads inherit
        # the mask) for the resident loop, which then refreshes at once
    try:
        rec = Recorder(cfg.state_dir)
        rec.start()
    except OSError as exc:
        raise BootError(f"state_dir {cfg.state_dir}: cannot write state.json: "
                        f"{exc.strerror or exc}") from None
    boot = Boot(cfg, rec, notify, started)
    if not boot.run():
        return EXIT_FAILED
    if oneshot:
        return EXIT_OK
    return Resident(boot).serve()


def release_memory() -> None:
    """Give the boot's garbage back to the OS before idling (glibc ``malloc_trim``); the
    collector, off during the boot, is on again from here."""
    import ctypes  # noqa: PLC0415
    import gc  # noqa: PLC0415

    gc.collect()
    gc.freeze()  # what the boot keeps (modules, clients) is never scanned again
    gc.enable()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def jittered(seconds: float) -> float:
    """``seconds`` +-20 %, so that a fleet launched together does not act in step."""
    return seconds * random.uniform(0.8, 1.2)  # noqa: S311 - spreading load, not security


@dataclass
class Schedule:
    """The resident daemon's timers as monotonic deadlines (None: that timer is off).

    ``tick``: the termination poll; ``ping``: the watchdog, which rides on the ticks when
    they come often enough and never wakes the daemon on its own then; ``refresh``: the
    secrets, jittered.
    """

    tick_every: float = 0.0
    ping_every: float = 0.0
    refresh_every: float = 0.0
    jitter: Callable[[float], float] = jittered
    next_tick: float | None = None
    next_ping: float | None = None
    next_refresh: float | None = None

    def start(self, now: float) -> None:
        """Arm every timer that is on."""
        self.next_tick = now + self.tick_every if self.tick_every else None
        self.next_ping = now + self.ping_every if self.ping_every else None
        self.next_refresh = now + self.jitter(self.refresh_every) if self.refresh_every else None

    def sleep(self, now: float) -> float:
        """How long to sleep from ``now`` until the first timer that must wake us."""
        rides = self.next_tick is not None and self.ping_every > self.tick_every
        ping = None if rides else self.next_ping
        deadlines = [d for d in (self.next_refresh, self.next_tick, ping) if d is not None]
        return max(0.0, min(deadlines) - now) if deadlines else IDLE

    def ping_due(self, now: float) -> bool:
        """Whether to ping now: the next tick (if any) would come too late for the watchdog."""
        if self.next_ping is None:
            return False
        ahead = self.tick_every if self.next_tick is not None else 0.0
        if now + ahead < self.next_ping:
            return False
        self.next_ping = now + self.ping_every
        return True

    def tick_due(self, now: float) -> bool:
        """Whether the poll is due (call :meth:`ticked` after it)."""
        return self.next_tick is not None and now >= self.next_tick

    def ticked(self, now: float, *, again: bool) -> None:
        """After a poll: the next one, or none when there is nothing left to watch."""
        self.next_tick = now + self.tick_every if again else None

    def refresh_due(self, now: float, *, hup: bool = False) -> bool:
        """Whether to refresh the secrets now (SIGHUP: always, when refreshing at all)."""
        if self.next_refresh is None:
            return False
        return hup or now >= self.next_refresh

    def refreshed(self, now: float, delay: float) -> None:
        """After a refresh: the next one ``delay`` seconds from ``now``."""
        self.next_refresh = now + delay


class Resident:
    """After READY: timers and signals, nothing else."""

    def __init__(self, boot: Boot, clock: Callable[[], float] = time.monotonic) -> None:
        self.boot = boot
        self.cfg = boot.cfg
        self.rec = boot.rec
        self.notify = boot.notify
        self.clock = clock
        self.first_retry = min(RETRY_FIRST, self.cfg.secrets.refresh_seconds)
        self.retry_delay = self.first_retry
        self.spot = False
        self.rebalance_seen = ""
        self.imds_down = False
        self.refreshes = 0
        self._poller: ImdsClient | None = None
        self._events: ScheduledEvents | None = None

    def schedule(self) -> Schedule:
        """This daemon's timers: what is on, and how often."""
        refreshing = self.boot.published is not None and bool(self.cfg.secrets.files)
        return Schedule(tick_every=self.cfg.termination.poll_seconds if self.watching() else 0.0,
                        ping_every=self.watchdog_interval(),
                        refresh_every=self.cfg.secrets.refresh_seconds if refreshing else 0.0)

    def serve(self) -> int:
        """Sleep until a signal or a timer; return the exit code."""
        # Only the main thread is left; blocked signals wait for sigtimedwait below (SIGHUP
        # was blocked during the boot already: one sent meanwhile is answered first).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGHUP})
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        release_memory()
        timers = self.schedule()
        timers.start(self.clock())
        log.info("resident: refresh %s, termination watch %s, watchdog %s",
                 f"every ~{timers.refresh_every:g} s" if timers.refresh_every else "off",
                 f"every {timers.tick_every:g} s" if timers.tick_every else "off",
                 f"every {timers.ping_every:g} s" if timers.ping_every else "off")
        while True:
            info = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGHUP},
                                       timers.sleep(self.clock()))
            if info is not None and info.si_signo in STOP_SIGNALS:
                log.info("stopping on %s", signal.Signals(info.si_signo).name)
                self.notify.stopping()
                return EXIT_OK
            now = self.clock()
            if timers.ping_due(now):
                self.notify.watchdog()
            if timers.tick_due(now):
                timers.ticked(now, again=self.guarded("termination watch", self.poll, True))
            hup = info is not None and info.si_signo == signal.SIGHUP
            if timers.refresh_due(now, hup=hup):
                if hup:
                    log.info("SIGHUP: refreshing secrets now")
                delay = self.guarded("secret refresh", self.refresh, self.retry_delay)
                timers.refreshed(self.clock(), delay)

    def guarded(self, what: str, job: Callable[[], T], fallback: T) -> T:
        """Run one timer's job; a bug in it is logged and recorded, and the daemon goes on."""
        try:
            return job()
        except Exception as exc:
            log.error("%s: internal error: %s: %s", what, type(exc).__name__, exception_detail(exc))
            log.debug("%s", what, exc_info=True)
            self.rec.warn(f"{what}: internal error: {type(exc).__name__} (see the journal)")
            return fallback

    def watching(self) -> bool:
        """Whether there is anything to watch: an Auto Scaling member, a spot instance, or
        scheduled events (any instance)."""
        if not self.cfg.termination.enabled or self.boot.meta is None:
            return False
        try:
            self.spot = self.poller.market() == "spot"
        except AgentError as exc:
            log.warning("termination watch: cannot read the instance market: %s", exc)
        return (self.spot or self.boot.meta.target_state is not None
                or self.cfg.termination.scheduled_events)

    def poll(self) -> bool:
        """One look at IMDS for notices; False once there is nothing left to watch."""
        from agent import termination  # noqa: PLC0415

        try:
            notice, target_state = termination.poll(self.poller, spot=self.spot)
            events = (termination.scheduled(self.poller)
                      if self.cfg.termination.scheduled_events else None)
        except AgentError as exc:
            if not self.imds_down:
                self.imds_down = True
                log.warning("termination watch: %s", exc)
                self.rec.warn(f"{IMDS_DOWN} since {utc_now()}: {exc}")
            return True
        if self.imds_down:
            self.imds_down = False
            log.info("termination watch: IMDS answers again")
            self.rec.clear_warning(IMDS_DOWN)
        if self.boot.meta is not None and self.boot.meta.warm and target_state == "InService":
            log.info("warm pool: the instance goes InService; completing the boot")
            self.boot.promote()
        if events is not None and (notice is None or notice.kind == "rebalance"):
            self.scheduled_events().seen(events)
        if notice is None:
            return True
        if notice.kind == "rebalance":
            if notice.detail != self.rebalance_seen:
                self.rebalance_seen = notice.detail
                self.rec.update(rebalance=termination.rebalance(self.cfg, notice))
            return True
        log.warning("termination: %s: draining", notice.detail)
        self.notify.status(f"draining: {notice.detail}")
        meta = self.boot.meta
        assert meta is not None
        record = termination.drain(self.cfg, notice, self.boot.aws, meta.identity.instance_id,
                                   meta.tags)
        self.rec.update(termination=record)
        self.notify.status(f"drained ({notice.kind}): waiting for the end")
        return False

    def scheduled_events(self) -> ScheduledEvents:
        """What was done about scheduled events (made at the first poll that reads them)."""
        from agent import termination  # noqa: PLC0415

        if self._events is None:
            meta = self.boot.meta
            assert meta is not None
            group = str(self.rec.doc.get("instance", {}).get("auto_scaling_group") or "")
            self._events = termination.ScheduledEvents(
                self.rec, meta.identity.instance_id, group,
                in_group=bool(group) or meta.target_state is not None,
                clients=self.boot.clients, previous=self.rec.previous)
        return self._events

    @property
    def poller(self) -> ImdsClient:
        """An IMDS client that gives up within one poll interval (the next poll retries)."""
        if self._poller is None:
            self._poller = ImdsClient.from_config(self.cfg.imds,
                                                  within=self.cfg.termination.poll_seconds)
        return self._poller

    def watchdog_interval(self) -> float:
        """Half of ``WatchdogSec`` when systemd asks for pings of this process, else 0."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return 0.0
        return int(usec) / 2_000_000

    def refresh(self) -> float:
        """One refresh of the secrets; the delay until the next one.

        state.json's ``refresh`` counts them and says how the last one ended.
        """
        published, aws = self.boot.published, self.boot.aws
        assert published is not None and aws is not None
        self.refreshes += 1
        try:
            publication = published.refresh(aws)
        except AgentError as exc:
            log.warning("secret refresh failed (retry in %.0f s): %s", self.retry_delay, exc)
            self.rec.clear_warning(REFRESH_FAILED)
            self.rec.warn(f"{REFRESH_FAILED} at {utc_now()}: {exc}")
            self._record("failed")
            delay = jittered(self.retry_delay)
            self.retry_delay = min(self.retry_delay * 2, self.cfg.secrets.refresh_seconds)
            return delay
        self.retry_delay = self.first_retry
        self.rec.clear_warning(REFRESH_FAILED)
        if publication is None:
            log.info("secrets unchanged")
            self._record("unchanged")
        else:
            generation = publication.generation.lstrip(".")
            log.info("secrets rotated: %s published; changed files: %s", generation,
                     ", ".join(publication.changed) or "none")
            self._record(f"published {generation}")
        return jittered(self.cfg.secrets.refresh_seconds)

    def _record(self, result: str) -> None:
        self.rec.update(refresh={"count": self.refreshes, "at": utc_now(), "result": result})
        self.boot.telemetry.write(self.boot.aws)  # the request counts, the condition
