"""``agent run``: lock, boot, then stay resident (daemon mode) or exit (oneshot).

Resident, the same process re-executes itself as :mod:`agent.boot.resident` (lean: no AWS SDK,
no pydantic), handing over what it needs in ``<state_dir>/resident.json``
(:func:`agent.boot.jobs.carry`). A SIGHUP from the boot on waits, blocked, for the resident.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time

from agent.boot.sequence import Boot, Booted
from agent.config import cache
from agent.errors import EXIT_FAILED, EXIT_OK, BootError, ConfigError, LockedError
from agent.fsutil import claim_dir
from agent.readiness.config import ONESHOT_READINESS
from agent.service.notify import Notifier, setup_logging
from agent.state.recorder import Recorder

log = logging.getLogger("agent.boot.daemon")
LOCK_FILE = "agent.lock"


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
    cfg = cache.load(config_path)
    oneshot = oneshot or cfg.mode == "oneshot"
    if oneshot and cfg.readiness.enabled:
        raise ConfigError(f"--oneshot: {ONESHOT_READINESS}")
    # daemon mode: a stop signal from READY on waits, blocked, for the resident (which answers
    # it with STOPPING=1); during the boot it stops the boot at once
    notify = Notifier(None if oneshot else stop_signals_wait)
    lock_fd = acquire_lock(cfg.state_dir)
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
    booted = boot.run()
    if not booted.ready:
        return EXIT_FAILED
    if oneshot:
        return EXIT_OK
    go_resident(boot, booted, config_path, lock_fd, verbose)
    return EXIT_FAILED  # not reached: go_resident replaced this process


def stop_signals_wait() -> None:
    """Block SIGTERM/SIGINT in this (the main, by then the only) thread: one that comes from
    READY on stays pending across the re-execution, for the resident."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def go_resident(boot: Boot, booted: Booted, config_path: str | None, lock_fd: int,
                verbose: bool) -> None:
    """Hand over and re-execute this process as the resident (:mod:`agent.boot.resident`)."""
    from agent.boot import jobs, resident  # noqa: PLC0415

    path = os.path.join(boot.cfg.state_dir, resident.HANDOFF)
    try:
        jobs.write_handoff(path, jobs.carry(boot, booted, config_path, lock_fd, verbose))
        resident.become(path, lock_fd)
    except OSError as exc:
        raise BootError(f"cannot stay resident: {path}: {exc.strerror or exc}") from None
