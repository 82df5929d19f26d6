"""Running under systemd: notifications (``READY=1``, ``STATUS=``) and journal logging.

Under systemd (stderr is the journal stream) log records go to the journal with
structured fields (``AGENT_PHASE``, ``AGENT_INSTANCE_ID``...); otherwise to stderr. The
AWS SDK's loggers are held at WARNING whatever the level: at DEBUG botocore logs response
bodies, which would include secret values.
"""

from __future__ import annotations

import logging
import os
import sys

QUIET_LOGGERS = ("botocore", "urllib3", "s3transfer")


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
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("agent: %(levelname)s %(message)s"))
    root.handlers[:] = [handler]
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Notifier:
    """``sd_notify`` through systemd-python; a no-op outside a notify-type service."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
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
        self.send(f"STATUS={text}")

    def ready(self, text: str) -> None:
        """``READY=1`` with a final status line."""
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
