"""``agent run``: lock, boot, then stay resident (daemon mode) or exit (oneshot).

Resident, the agent sleeps in ``sigtimedwait`` until a signal or its next timer (secret
refresh, watchdog ping): no polling loop, no busy thread. SIGTERM/SIGINT stop it (exit 0,
``STOPPING=1``); SIGHUP refreshes the secrets now.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import time
from pathlib import Path

from agent import config
from agent.boot import Boot
from agent.errors import EXIT_FAILED, EXIT_OK, AgentError, BootError, LockedError
from agent.fsutil import make_dirs
from agent.imds import ImdsClient
from agent.service import Notifier, setup_logging
from agent.state import Recorder, utc_now

log = logging.getLogger("agent.daemon")
LOCK_FILE = "agent.lock"
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
RETRY_FIRST = 30.0  # a failed refresh is retried after this, doubling up to refresh_seconds
REFRESH_FAILED = "secrets: refresh failed"
IMDS_DOWN = "termination watch: IMDS unreachable"
HOOK_FAILED = "secrets hook:"


def acquire_lock(state_dir: str) -> int:
    """Hold ``<state_dir>/agent.lock`` for the life of the process; refuse a second run."""
    try:
        make_dirs(state_dir, 0o755)
        fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
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
    setup_logging(verbose)
    cfg = config.load(config_path)
    oneshot = oneshot or cfg.mode == "oneshot"
    notify = Notifier()
    acquire_lock(cfg.state_dir)
    if not oneshot:  # a SIGHUP during the boot must not kill it: the boot is fetching anyway
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        rec = Recorder(cfg.state_dir)
        rec.start()
    except OSError as exc:
        raise BootError(f"state_dir {cfg.state_dir}: cannot write state.json: {exc}") from None
    boot = Boot(cfg, rec, notify)
    if not boot.run():
        return EXIT_FAILED
    if oneshot:
        return EXIT_OK
    return Resident(boot).serve()


def release_memory() -> None:
    """Give the boot's garbage back to the OS before idling (glibc ``malloc_trim``)."""
    import ctypes  # noqa: PLC0415
    import gc  # noqa: PLC0415

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def jittered(seconds: float) -> float:
    """``seconds`` +-20 %, so that a fleet launched together does not act in step."""
    return seconds * random.uniform(0.8, 1.2)  # noqa: S311 - spreading load, not security


class Resident:
    """After READY: timers and signals, nothing else.

    One wake-up per ``termination.poll_seconds`` while there is something to watch (the
    watchdog ping rides on those wake-ups), one per secret refresh, none otherwise.
    """

    def __init__(self, boot: Boot) -> None:
        self.boot = boot
        self.cfg = boot.cfg
        self.rec = boot.rec
        self.notify = boot.notify
        self.first_retry = min(RETRY_FIRST, self.cfg.secrets.refresh_seconds)
        self.retry_delay = self.first_retry
        self.spot = False
        self.rebalance_seen = ""
        self.imds_down = False
        self._poller: ImdsClient | None = None

    def serve(self) -> int:
        """Sleep until a signal or a timer; return the exit code."""
        # Only the main thread is left; blocked signals wait for sigtimedwait below (SIGHUP
        # was ignored during the boot: blocked now, its default action no longer applies).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGHUP})
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        release_memory()
        now = time.monotonic()
        refreshing = bool(self.cfg.secrets.files) and self.boot.aws is not None
        next_refresh = now + jittered(self.cfg.secrets.refresh_seconds) if refreshing else None
        tick = self.cfg.termination.poll_seconds if self.watching() else 0.0
        next_tick = now + tick if tick else None
        ping = self.watchdog_interval()
        next_ping = now + ping if ping else None
        log.info("resident: refresh %s, termination watch %s, watchdog %s",
                 f"every ~{self.cfg.secrets.refresh_seconds:g} s" if refreshing else "off",
                 f"every {tick:g} s" if tick else "off",
                 f"every {ping:g} s" if ping else "off")
        while True:
            # The watchdog never wakes us on its own while ticks come often enough.
            ping_wake = next_ping if next_tick is None or ping <= tick else None
            deadlines = [d for d in (next_refresh, next_tick, ping_wake) if d is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 3600.0
            info = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGHUP}, wait)
            if info is not None and info.si_signo in STOP_SIGNALS:
                log.info("stopping on %s", signal.Signals(info.si_signo).name)
                self.notify.stopping()
                return EXIT_OK
            now = time.monotonic()
            if next_ping is not None and now + (tick if next_tick else 0.0) >= next_ping:
                self.notify.watchdog()
                next_ping = now + ping
            if next_tick is not None and now >= next_tick:
                next_tick = now + tick if self.poll() else None
            hup = info is not None and info.si_signo == signal.SIGHUP
            if refreshing and (hup or (next_refresh is not None and now >= next_refresh)):
                if hup:
                    log.info("SIGHUP: refreshing secrets now")
                next_refresh = time.monotonic() + self.refresh()

    def watching(self) -> bool:
        """Whether there is anything to watch: an Auto Scaling member, or a spot instance."""
        if not self.cfg.termination.enabled or self.boot.meta is None:
            return False
        try:
            self.spot = self.poller.market() == "spot"
        except AgentError as exc:
            log.warning("termination watch: cannot read the instance market: %s", exc)
        return self.spot or self.boot.meta.target_state is not None

    def poll(self) -> bool:
        """One look at IMDS for notices; False once there is nothing left to watch."""
        from agent import termination  # noqa: PLC0415

        try:
            notice, target_state = termination.poll(self.poller, spot=self.spot)
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
        if self.boot.warm and target_state == "InService":
            self.promote()
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

    def promote(self) -> None:
        """A warm-pool instance put InService without a restart: finish the full boot."""
        log.info("warm pool: the instance goes InService; completing the boot")
        self.boot.promote()

    @property
    def poller(self) -> ImdsClient:
        """An IMDS client that gives up within one poll interval (the next poll retries)."""
        if self._poller is None:
            imds, every = self.cfg.imds, self.cfg.termination.poll_seconds
            self._poller = ImdsClient(imds.endpoint, token_ttl=imds.token_ttl_seconds,
                                      timeout=min(imds.timeout_seconds, every), max_wait=every)
        return self._poller

    def watchdog_interval(self) -> float:
        """Half of ``WatchdogSec`` when systemd asks for pings of this process, else 0."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or (pid and pid != str(os.getpid())):
            return 0.0
        return int(usec) / 2_000_000

    def refresh(self) -> float:
        """One refresh of the secrets; the delay until the next one."""
        from agent import handoff, secrets  # noqa: PLC0415

        assert self.boot.aws is not None
        cfg = self.cfg.secrets
        try:
            publication, self.boot.versions = secrets.refresh(self.boot.aws, cfg,
                                                              self.boot.versions)
        except AgentError as exc:
            log.warning("secret refresh failed (retry in %.0f s): %s", self.retry_delay, exc)
            self.rec.clear_warning(REFRESH_FAILED)
            self.rec.warn(f"{REFRESH_FAILED} at {utc_now()}: {exc}")
            delay = jittered(self.retry_delay)
            self.retry_delay = min(self.retry_delay * 2, cfg.refresh_seconds)
            return delay
        self.retry_delay = self.first_retry
        self.rec.clear_warning(REFRESH_FAILED)
        if publication is None:
            log.info("secrets unchanged")
        else:
            by_path = {e.path: self.boot.versions.get(e.ref, "") for e in cfg.files}
            root = Path(cfg.dir)
            fetched = {str(Path(r["path"]).relative_to(root)): r.get("fetched_at", "")
                       for r in self.rec.doc.get("secrets") or []}
            now = utc_now()
            fetched.update({e.path: now for e in [*publication.changed, *publication.added]})
            self.rec.update(secrets=secrets.records(cfg, by_path, fetched))
            changed = ", ".join(e.path for e in publication.changed) or "none"
            log.info("secrets rotated: %s published; changed files: %s",
                     publication.generation.lstrip("."), changed)
            self.rec.clear_warning(HOOK_FAILED)
            for problem in handoff.after_change(cfg, publication.changed, by_path):
                self.rec.warn(f"{HOOK_FAILED} {problem}")
        return jittered(cfg.refresh_seconds)
