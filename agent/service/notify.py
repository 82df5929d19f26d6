"""Running under systemd: notifications (``READY=1``, ``STATUS=``) and journal logging.

Under systemd (stderr is the journal stream) log records go to the journal with
structured fields (``AGENT_PHASE``, ``AGENT_INSTANCE_ID``...); otherwise to stderr. The
AWS SDK's loggers are held at WARNING whatever the level: at DEBUG botocore logs response
bodies, which would include secret values. Another library's record that carries a
traceback (botocore's credential refresher logs a WARNING with the exception attached) is
said at debug level only: the failure itself reaches the agent, which says it in one line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable

from agent.errors import escape, exception_detail

QUIET_LOGGERS = ("botocore", "urllib3", "s3transfer")
log = logging.getLogger(__name__)


class OneLineFormatter(logging.Formatter):
    """Each record's line escaped (:func:`agent.errors.escape`): a tag value or an AWS
    message can neither drive the terminal nor forge a second line. A traceback (debug
    only) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, escaped."""
        return escape(super().formatMessage(record))


def journal_attached() -> bool:
    """True when stderr is connected to the journal (``$JOURNAL_STREAM`` matches it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(verbose: bool = False) -> None:
    """Journal when run by systemd, else stderr; SDK loggers capped at WARNING."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler
    if journal_attached():
        from systemd.journal import JournalHandler  # noqa: PLC0415

        handler = JournalHandler(SYSLOG_IDENTIFIER="agent")
        handler.setFormatter(OneLineFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("agent: %(levelname)s %(message)s"))
    handler.addFilter(ForeignTracebacks())
    root.handlers[:] = [handler]
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    threading.excepthook = log_thread_exception


class ForeignTracebacks(logging.Filter):
    """Another library's record with a traceback attached is a debug record: shown with
    ``-v`` only (the agent reports the failure itself, in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for such a record when debug records are not shown; else True."""
        if record.levelno <= logging.DEBUG or record.name.partition(".")[0] == "agent" or \
                not (record.exc_info or record.exc_text or record.stack_info):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception: one line at error, its traceback at debug only."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("internal error in thread %s: %s: %s", name, args.exc_type.__name__,
              exception_detail(args.exc_value))
    log.debug("thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class Notifier:
    """``sd_notify`` through systemd-python; a no-op outside a notify-type service."""

    def __init__(self, before_ready: Callable[[], object] | None = None) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.before_ready = before_ready  # daemon mode: blocks the stop signals for the resident
        self._notify = None
        if self.enabled:
            from systemd.daemon import notify  # noqa: PLC0415

            self._notify = notify

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` lines."""
        if self._notify is not None:
            self._notify("\n".join(fields))

    def status(self, text: str) -> None:
        """``STATUS=``: what ``systemctl status`` shows."""
        self.send(f"STATUS={escape(text)}")  # a newline would add a field (READY=1...)

    def ready(self, text: str) -> None:
        """``READY=1`` with a final status line."""
        if self.before_ready is not None:
            self.before_ready()
        self.send("READY=1", f"STATUS={text}")

    def stopping(self) -> None:
        """``STOPPING=1``."""
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC=``: a legitimately slow start asks for more time."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> None:
        """``WATCHDOG=1``."""
        self.send("WATCHDOG=1")


class Keepalive:
    """While a boot runs within its own budgets, ask systemd for more start time.

    The budgets bound every wait (IMDS, each AWS call), so a slow boot is legitimate until
    they are spent; a hung agent still meets ``TimeoutStartSec`` after that. The thread
    ends when ``done`` is set.
    """

    STEP = 60.0  # seconds of EXTEND_TIMEOUT_USEC asked at a time

    def __init__(self, notify: Notifier, done: threading.Event, budget: float) -> None:
        self.notify = notify
        self.budget = budget + self.STEP
        self.done = done

    def start(self) -> None:
        """Begin, under systemd (a no-op otherwise)."""
        if self.notify.enabled:
            threading.Thread(target=self._run, name="keepalive", daemon=True).start()

    def _run(self) -> None:
        waited = 0.0
        while not self.done.wait(self.STEP / 2) and waited < self.budget:
            waited += self.STEP / 2
            try:
                self.notify.extend_timeout(self.STEP)
            except Exception as exc:  # a notification problem must not end the boot
                log.debug("keepalive: %s", exc)
                return


SYSTEMD_RUNTIME = "/run/systemd/system"  # exists only when systemd is the init system


def systemd_running() -> bool:
    """Whether systemd is the init system here (``sd_booted()``)."""
    return os.path.isdir(SYSTEMD_RUNTIME)


def dropin_blocked(path: str) -> bool:
    """True for a drop-in under /run/systemd/system while systemd is not running: creating
    that directory would tell every program that systemd runs here (``sd_booted()``)."""
    return path.startswith(f"{SYSTEMD_RUNTIME}/") and not systemd_running()


def daemon_reload() -> str:
    """``systemctl daemon-reload`` after writing unit drop-ins (skipped without systemd)."""
    if not systemd_running():
        log.debug("systemd is not running: no daemon-reload")
        return ""
    return run_command(["systemctl", "daemon-reload"], timeout=60,
                       what="systemctl daemon-reload")


def run_command(argv: list[str], *, timeout: float, what: str,
                env: dict[str, str] | None = None) -> str:
    """Run without a shell, output discarded; '' on success, else what went wrong.

    The output is discarded because a command handed a secret's path may print it.
    """
    try:
        proc = subprocess.run(argv, env=env if env is not None else child_environment(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        problem = f"{what} timed out after {timeout:g} s"
    except OSError as exc:
        problem = f"{what} could not run: {exc.strerror}"
    else:
        if proc.returncode == 0:
            log.info("%s: done", what)
            return ""
        problem = f"{what} exited {proc.returncode}"
    log.warning("%s", problem)
    return problem


def child_environment() -> dict[str, str]:
    """Our environment minus what must not reach children (notify socket, AWS, AGENT_)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "AGENT_", "AWS_"))}
