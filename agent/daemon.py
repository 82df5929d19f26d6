"""``agent run``: lock, boot, then stay resident (daemon mode) or exit (oneshot).

Resident, the agent sleeps in ``sigtimedwait`` until a signal or its next timer: no
polling loop, no busy thread. SIGTERM/SIGINT stop it (exit 0, ``STOPPING=1``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal

from agent import config
from agent.boot import Boot
from agent.errors import EXIT_FAILED, EXIT_OK, BootError, LockedError
from agent.service import Notifier, setup_logging
from agent.state import Recorder

log = logging.getLogger("agent.daemon")
LOCK_FILE = "agent.lock"
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


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
    if not Boot(cfg, rec, notify).run():
        return EXIT_FAILED
    if oneshot:
        return EXIT_OK
    return stay_resident(notify)


def stay_resident(notify: Notifier) -> int:
    """Sleep until SIGTERM/SIGINT; SIGHUP is logged (secret refresh arrives with rotation)."""
    log.info("resident: waiting for signals")
    # Only the main thread is left; blocked signals wait for sigtimedwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGHUP})
    while True:
        info = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGHUP}, 3600)
        if info is None:
            continue
        if info.si_signo in STOP_SIGNALS:
            log.info("stopping on %s", signal.Signals(info.si_signo).name)
            notify.stopping()
            return EXIT_OK
        log.info("SIGHUP received")
