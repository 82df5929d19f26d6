"""The resident daemon: what stays of ``agent run`` after READY, lean, in the same process.

Once the boot sent ``READY=1``, ``agent run`` writes the hand-off (``<state_dir>/resident.json``:
what the resident needs, and what its jobs need) and re-executes itself into this module (the
same PID: systemd's main PID, the watchdog's and the lock's owner stay right). The resident
imports no AWS SDK, no pydantic, no tuning: it sleeps in ``sigtimedwait`` until a signal or its
next timer (secret refresh, termination poll, watchdog ping), and reads IMDS itself.

Work that needs AWS or the configuration (a refresh, a drain, a warm pool's promotion,
SetInstanceHealth, a rebalance's command) is a job: a child process (:mod:`agent.boot.jobs`) that
exits when done. The resident waits for it still pinging the watchdog and polling IMDS for
termination notices; a SIGHUP meanwhile refreshes again afterwards, a SIGTERM ends the job (a
drain is given until its deadline) and then the resident, a termination or spot notice ends
the job and starts the drain at once. A refresh that reloaded units is followed by a
``regate`` job (the readiness gate again, for those units). The job's changes to state.json
come back in its result and are written here: the resident is state.json's only writer.
:class:`Schedule` is the timer arithmetic alone, with the clock passed in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.cloud.imds import ImdsClient
from agent.errors import EXIT_OK, AgentError
from agent.lifecycle import termination
from agent.service.notify import Notifier, setup_logging
from agent.state.recorder import Recorder, progress_path, utc_now

log = logging.getLogger("agent.boot.resident")
T = TypeVar("T")
HANDOFF = "resident.json"  # in state_dir: written by the boot, the jobs' part by the jobs
RESULT = "resident-job.json"  # in state_dir: a job's result
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
WAITED = STOP_SIGNALS | {signal.SIGHUP}  # blocked from the boot on: never lost
BLOCKED = WAITED | {signal.SIGCHLD}
RETRY_FIRST = 30.0  # a failed refresh is retried after this, doubling up to refresh_seconds
IDLE = 3600.0  # the longest sleep when no timer is set
IMDS_DOWN = "termination watch: IMDS unreachable"
GRACE = 5.0  # seconds a job is given to end after SIGTERM, before SIGKILL


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

    def job_sleep(self, now: float, *, ticking: bool) -> float:
        """While a job runs: how long until the watchdog must be pinged or (``ticking``:
        any job but a drain) the termination poll is due."""
        tick = self.next_tick if ticking else None
        deadlines = [d for d in (self.next_ping, tick) if d is not None]
        return max(0.0, min(deadlines) - now) if deadlines else IDLE

    def ping_due(self, now: float, *, ticking: bool = True) -> bool:
        """Whether to ping now: the next tick (if any, and ``ticking``) would come too late
        for the watchdog."""
        if self.next_ping is None:
            return False
        ahead = self.tick_every if ticking and self.next_tick is not None else 0.0
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

    def refreshing(self, every: float, now: float) -> None:
        """Refreshes from now on (a warm pool's secrets, published at its promotion)."""
        self.refresh_every = every
        self.next_refresh = now + self.jitter(every)


def interpreter(module: str) -> list[str]:
    """The command running ``module`` with this interpreter, isolated as this process is
    (the packages' launcher runs ``python3 -I``); never the working directory on the path."""
    flags = ["-I"] if sys.flags.isolated else ["-P"] + (["-E"] if sys.flags.ignore_environment
                                                         else []) + (
        ["-s"] if sys.flags.no_user_site else [])
    return [sys.executable, *flags, "-m", module]


def become(path: str, lock_fd: int) -> None:
    """Re-execute this process as the resident (never returns; OSError if it cannot)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)  # pending ones survive the exec
    os.set_inheritable(lock_fd, True)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.execv(sys.executable, [*interpreter("agent.boot.resident"), path])  # noqa: S606


def job_environment() -> dict[str, str]:
    """A job's environment: ours without systemd's notify and watchdog variables (only the
    resident, the main PID, speaks to systemd)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}


class Resident:
    """After READY: timers, signals, IMDS; every job in a child process."""

    def __init__(self, path: str, carried: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.settings = carried
        self.clock = clock
        self.rec = Recorder.resume(carried["state_dir"])
        self.notify = Notifier()
        self.instance: dict[str, Any] = carried["instance"]
        self.term: dict[str, Any] = carried["termination"]
        self.refresh_seconds = float(carried["refresh_seconds"])
        self.first_retry = min(RETRY_FIRST, self.refresh_seconds)
        self.retry_delay = self.first_retry
        self.timers = Schedule()
        self.spot = False
        self.rebalance_seen = ""
        self.imds_down = False
        self.hup = False  # a SIGHUP came while a job ran: refresh once it is over
        self.stopping = False  # a SIGTERM/SIGINT came while a job ran
        self.noticed: tuple[termination.Notice, float] | None = None  # to drain, by then
        self.drained = False
        self._events: termination.ScheduledEvents | None = None
        imds = carried["imds"]
        self.poller = ImdsClient(imds["endpoint"], token_ttl=int(imds["token_ttl"]),
                                 timeout=min(float(imds["timeout"]), self.term["poll_seconds"]),
                                 max_wait=float(self.term["poll_seconds"]))

    # -- the loop ------------------------------------------------------------------------

    def serve(self) -> int:
        """Sleep until a signal or a timer; return the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)  # as the boot left it
        timers = self.timers
        timers.tick_every = self.term["poll_seconds"] if self.watching() else 0.0
        timers.ping_every = watchdog_interval()
        timers.refresh_every = self.refresh_seconds if self.settings["refreshing"] else 0.0
        timers.start(self.clock())
        log.info("resident: refresh %s, termination watch %s, watchdog %s",
                 f"every ~{timers.refresh_every:g} s" if timers.refresh_every else "off",
                 f"every {timers.tick_every:g} s" if timers.tick_every else "off",
                 f"every {timers.ping_every:g} s" if timers.ping_every else "off")
        while not self.stopping:
            info = signal.sigtimedwait(WAITED, timers.sleep(self.clock()))
            if info is not None and info.si_signo in STOP_SIGNALS:
                self.stop(info.si_signo)
                break
            now = self.clock()
            if timers.ping_due(now):
                self.notify.watchdog()
            if timers.tick_due(now):
                timers.ticked(now, again=self.guarded("termination watch", self.poll, True))
            hup = self.hup or (info is not None and info.si_signo == signal.SIGHUP)
            self.hup = False
            while not self.stopping and self.noticed is None \
                    and timers.refresh_due(self.clock(), hup=hup):
                if hup:
                    log.info("SIGHUP: refreshing secrets now")
                delay = self.guarded("secret refresh", self.refresh, self.retry_delay)
                timers.refreshed(self.clock(), delay)
                hup, self.hup = self.hup, False  # one that came during the refresh
            if self.noticed is not None and not self.drained and not self.stopping:
                # seen while a job ran
                timers.ticked(self.clock(), again=self.guarded("drain", self.drain, False))
        return EXIT_OK

    def stop(self, signo: int) -> None:
        """A stop signal: say so to systemd (once)."""
        if not self.stopping:
            log.info("stopping on %s", signal.Signals(signo).name)
            self.stopping = True
            self.notify.stopping()

    def stop_requested(self) -> bool:
        """Whether a stop signal came (a job may have taken it)."""
        return self.stopping

    def guarded(self, what: str, job: Callable[[], T], fallback: T) -> T:
        """Run one timer's job; a bug in it is logged and recorded, and the daemon goes on."""
        try:
            return job()
        except Exception as exc:
            log.error("%s: internal error: %s: %s", what, type(exc).__name__, exc)
            log.debug("%s", what, exc_info=True)
            self.rec.warn(f"{what}: internal error: {type(exc).__name__} (see the journal)")
            return fallback

    # -- jobs ----------------------------------------------------------------------------

    def run_job(self, kind: str, arg: Any = None, *, until: float | None = None
                ) -> dict[str, Any] | None:
        """Run one job in a child process and wait for it, pinging the watchdog and keeping
        every signal and polling IMDS for termination notices; its result (its changes applied
        to state.json), or None when it ended without one (logged and recorded). A stop
        signal ends the job at once, or, with ``until`` (a drain), when that monotonic time
        has passed; a termination notice ends any other job at once (the drain follows)."""
        if self.stop_requested() or (self.noticed is not None and kind != "drain"):
            return None
        result_path = os.path.join(self.settings["state_dir"], RESULT)
        progress = progress_path(result_path)
        for stale in (result_path, progress):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        applied = 0  # of the job's changes, applied while it ran
        argv = [*interpreter("agent.boot.jobs"), self.path, kind, result_path, json.dumps(arg)]
        started = self.clock()
        child = subprocess.Popen(argv, env=job_environment(), stdin=subprocess.DEVNULL)
        log.debug("job %s: pid %d", kind, child.pid)
        kill_at: float | None = None  # after SIGTERM to the job: SIGKILL then
        while child.poll() is None:
            applied = self._progress(progress, applied)
            now = self.clock()
            if kind != "drain" and self.timers.tick_due(now):
                self.timers.ticked(now, again=True)
                self.guarded("termination watch", self.glance, None)
                now = self.clock()
            ending = self.stopping or (self.noticed is not None and kind != "drain")
            if ending and kill_at is None and (until is None or now >= until):
                if not self.stopping:
                    log.warning("termination: ending the %s job to drain", kind)
                child.terminate()
                kill_at = now + GRACE
            if kill_at is not None and now >= kill_at:
                child.kill()
            if self.timers.ping_due(now, ticking=False):
                self.notify.watchdog()
            wait = self.timers.job_sleep(now, ticking=kind != "drain")
            if ending:  # wake up for what comes next: the end of the drain, SIGKILL
                wait = min(wait, max(0.05, (kill_at or until or now) - now))
            info = signal.sigtimedwait(BLOCKED, wait)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_signo == signal.SIGHUP:
                log.info("SIGHUP during the %s job: refreshing once it is over", kind)
                self.hup = True
            else:
                self.stop(info.si_signo)
        log.debug("job %s: exit %s after %.2f s", kind, child.returncode, self.clock() - started)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(progress)
        return self._result(kind, result_path, child.returncode, applied)

    def _progress(self, path: str, applied: int) -> int:
        """The changes a running job made since the last look, applied; how many are."""
        try:
            with open(path, "rb") as file:
                changes: list[list[Any]] = json.load(file)
        except (OSError, ValueError):
            return applied
        self.rec.apply(changes[applied:])
        return max(applied, len(changes))

    def _result(self, kind: str, path: str, code: int, applied: int) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as file:
                result: dict[str, Any] = json.load(file)
            os.unlink(path)
        except (OSError, ValueError):
            if not self.stopping and (self.noticed is None or kind == "drain"):
                log.error("job %s: ended without a result (exit %s)", kind, code)
                self.rec.warn(f"{kind}: internal error: the job exited {code} "
                              "(see the journal)")
            return None
        self.rec.apply((result.get("changes") or [])[applied:])
        return result

    def refresh(self) -> float:
        """One refresh of the secrets (a job); the delay until the next one."""
        result = self.run_job("refresh")
        if result is None or result.get("failed"):
            delay = jittered(self.retry_delay)
            self.retry_delay = min(self.retry_delay * 2, self.refresh_seconds)
            return delay
        self.retry_delay = self.first_retry
        if result.get("regate"):
            self.run_job("regate", result["regate"])
        return jittered(self.refresh_seconds)

    # -- the termination watch -------------------------------------------------------------

    def watching(self) -> bool:
        """Whether there is anything to watch: an Auto Scaling member, a spot instance, or
        scheduled events (any instance)."""
        if not self.term["enabled"] or not self.instance["known"]:
            return False
        try:
            self.spot = self.poller.market() == "spot"
        except AgentError as exc:
            log.warning("termination watch: cannot read the instance market: %s", exc)
        return (self.spot or self.instance["target_state"] is not None
                or self.term["scheduled_events"])

    def look(self, *, events: bool) -> tuple[termination.Notice | None, str | None,
                                             Any] | None:
        """One look at IMDS: the notice, the target lifecycle state, the scheduled events
        (when ``events`` and they are watched); None when IMDS does not answer (a warning
        until it does again)."""
        try:
            notice, target_state = termination.poll(self.poller, spot=self.spot)
            scheduled = (termination.scheduled(self.poller)
                         if events and self.term["scheduled_events"] else None)
        except AgentError as exc:
            if not self.imds_down:
                self.imds_down = True
                log.warning("termination watch: %s", exc)
                self.rec.warn(f"{IMDS_DOWN} since {utc_now()}: {exc}")
            return None
        if self.imds_down:
            self.imds_down = False
            log.info("termination watch: IMDS answers again")
            self.rec.clear_warning(IMDS_DOWN)
        return notice, target_state, scheduled

    def notice(self, notice: termination.Notice) -> None:
        """A termination or spot notice: the drain's deadline, taken now."""
        if self.noticed is None:
            log.warning("termination: %s: draining", notice.detail)
            self.noticed = notice, termination.drain_deadline(self.term["deadline_seconds"],
                                                               notice)

    def glance(self) -> None:
        """While a job runs: one look for a termination or spot notice (the rest waits for
        the next poll between jobs)."""
        seen = self.look(events=False)
        if seen is not None and seen[0] is not None and seen[0].kind != "rebalance":
            self.notice(seen[0])

    def poll(self) -> bool:
        """One look at IMDS for notices; False once there is nothing left to watch."""
        seen = self.look(events=True)
        if seen is None:
            return True
        notice, target_state, events = seen
        if (self.instance["target_state"] or "").startswith("Warmed:") \
                and target_state == "InService":
            self.promote()
            if self.noticed is not None:  # seen while the promotion ran
                return self.drain()
        if events is not None and (notice is None or notice.kind == "rebalance"):
            self.scheduled_events().seen(events)
        if notice is None:
            return True
        if notice.kind == "rebalance":
            if notice.detail != self.rebalance_seen:
                self.rebalance_seen = notice.detail
                self.run_job("rebalance", [notice.kind, notice.detail])
            return True
        self.notice(notice)
        return self.drain()

    def drain(self) -> bool:
        """The drain of the notice seen (a job), by the deadline taken when it was seen;
        False: nothing left to watch."""
        assert self.noticed is not None
        notice, deadline = self.noticed
        if not self.drained:
            self.drained = True
            self.notify.status(f"draining: {notice.detail}")
            self.run_job("drain", [notice.kind, notice.detail, deadline], until=deadline)
            self.notify.status(f"drained ({notice.kind}): waiting for the end")
        self.timers.next_refresh = None  # the secrets are wiped: never published again
        return False

    def promote(self) -> None:
        """A warm pool's instance goes InService: the boot completes (a job)."""
        log.info("warm pool: the instance goes InService; completing the boot")
        result = self.run_job("promote")
        self.instance["target_state"] = "InService"
        if result is None:
            return
        if result.get("status"):
            self.notify.status(str(result["status"]))
        if result.get("refreshing") and not self.timers.refresh_every:
            self.timers.refreshing(self.refresh_seconds, self.clock())

    def scheduled_events(self) -> termination.ScheduledEvents:
        """What was done about scheduled events (made at the first poll that reads them)."""
        if self._events is None:
            group = str(self.instance["group"])
            self._events = termination.ScheduledEvents(
                self.rec, group, in_group=bool(self.instance["in_group"]),
                mark=self.mark_unhealthy, earlier=self.settings.get("health"))
        return self._events

    def mark_unhealthy(self) -> termination.Marked:
        """SetInstanceHealth Unhealthy (a job)."""
        result = self.run_job("health")
        if result is None or not isinstance(result.get("marked"), list):
            return "retry", "the job ended without a result"
        outcome, problem = result["marked"]
        return str(outcome), str(problem)


def watchdog_interval() -> float:
    """Half of ``WatchdogSec`` when systemd asks for pings of this process, else 0."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 2_000_000


def main(path: str) -> int:
    """``python -m agent.boot.resident HANDOFF``: the resident, until stopped."""
    with open(path, "rb") as file:
        carried = json.load(file)["resident"]
    setup_logging(bool(carried["verbose"]))
    return Resident(path, carried).serve()


if __name__ == "__main__":
    code = main(sys.argv[1])
    logging.shutdown()
    sys.exit(code)
