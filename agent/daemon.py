"""``agent run``: lock, boot, then stay resident (daemon mode) or exit (oneshot).

Resident, the agent sleeps in ``sigtimedwait`` until a signal or its next timer (secret
refresh, watchdog ping): no polling loop, no busy thread. SIGTERM/SIGINT stop it (exit 0,
``STOPPING=1``); SIGHUP refreshes the secrets now.
"""

from __future__ import annotations

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
from agent.service import Notifier, setup_logging
from agent.state import Recorder, utc_now

log = logging.getLogger("agent.daemon")
LOCK_FILE = "agent.lock"
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
RETRY_FIRST = 30.0  # a failed refresh is retried after this, doubling up to refresh_seconds
REFRESH_FAILED = "secrets: refresh failed"
HOOK_FAILED = "secrets hook:"


def acquire_lock(state_dir: str) -> int:
    """Hold ``<state_dir>/agent.lock`` for the life of the process; refuse a second run."""
    try:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
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


def jittered(seconds: float) -> float:
    """``seconds`` +-20 %, so that a fleet launched together does not act in step."""
    return seconds * random.uniform(0.8, 1.2)  # noqa: S311 - spreading load, not security


class Resident:
    """After READY: timers and signals, nothing else."""

    def __init__(self, boot: Boot) -> None:
        self.boot = boot
        self.cfg = boot.cfg
        self.rec = boot.rec
        self.notify = boot.notify
        self.first_retry = min(RETRY_FIRST, self.cfg.secrets.refresh_seconds)
        self.retry_delay = self.first_retry

    def serve(self) -> int:
        """Sleep until a signal or a timer; return the exit code."""
        # Only the main thread is left; blocked signals wait for sigtimedwait below.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGHUP})
        now = time.monotonic()
        refreshing = bool(self.cfg.secrets.files) and self.boot.aws is not None
        next_refresh = now + jittered(self.cfg.secrets.refresh_seconds) if refreshing else None
        ping = self.watchdog_interval()
        next_ping = now + ping if ping else None
        log.info("resident: refresh %s, watchdog %s",
                 f"every ~{self.cfg.secrets.refresh_seconds:g} s" if refreshing else "off",
                 f"every {ping:g} s" if ping else "off")
        while True:
            deadlines = [d for d in (next_refresh, next_ping) if d is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 3600.0
            info = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGHUP}, wait)
            if info is not None and info.si_signo in STOP_SIGNALS:
                log.info("stopping on %s", signal.Signals(info.si_signo).name)
                self.notify.stopping()
                return EXIT_OK
            now = time.monotonic()
            if next_ping is not None and now >= next_ping:
                self.notify.watchdog()
                next_ping = now + ping
            hup = info is not None and info.si_signo == signal.SIGHUP
            if refreshing and (hup or (next_refresh is not None and now >= next_refresh)):
                if hup:
                    log.info("SIGHUP: refreshing secrets now")
                next_refresh = time.monotonic() + self.refresh()

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
