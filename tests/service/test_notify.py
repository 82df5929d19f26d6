"""Running under systemd: one-line logs, foreign tracebacks at debug, sd_notify over a real
socket, the keepalive, commands without output, what children inherit."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import notify as service
from agent.service.notify import (
    ForeignTracebacks,
    Keepalive,
    Notifier,
    OneLineFormatter,
    child_environment,
    run_command,
)


def record(name: str, level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("inner")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


def test_a_log_line_is_escaped_and_stays_one_line() -> None:
    line = OneLineFormatter("agent: %(levelname)s %(message)s").format(
        record("agent.boot.sequence", logging.WARNING, "tag Name=\x1b[31mred\nforged: ERROR"))
    assert line == "agent: WARNING tag Name=\\x1b[31mred\\nforged: ERROR"


def test_another_librarys_traceback_is_said_at_debug_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    foreign = record("botocore.credentials", logging.WARNING, "refresh failed", exc=True)
    assert ForeignTracebacks().filter(foreign) is False
    assert foreign.levelname == "DEBUG"
    assert ForeignTracebacks().filter(record("botocore.x", logging.WARNING, "plain")) is True
    ours = record("agent.boot.sequence", logging.ERROR, "ours", exc=True)
    assert ForeignTracebacks().filter(ours)
    root.setLevel(logging.DEBUG)
    assert ForeignTracebacks().filter(
        record("urllib3.pool", logging.WARNING, "again", exc=True)) is True


def test_a_threads_uncaught_exception_is_one_error_line(
        caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise ValueError("bad\nthing")
    thread = threading.Thread(target=boom, name="worker")
    hook = threading.excepthook
    threading.excepthook = service.log_thread_exception
    try:
        with caplog.at_level(logging.INFO, logger="agent.service"):
            thread.start()
            thread.join()
    finally:
        threading.excepthook = hook
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "internal error in thread worker: ValueError: bad thing")]  # no traceback


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing where systemd's notify socket would."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_notifications_reach_the_socket_as_systemd_reads_them(
        notify_socket: socket.socket) -> None:
    order: list[str] = []
    notify = Notifier(lambda: order.append("blocked"))
    assert notify.enabled
    notify.status("secrets: 3 files\nREADY=1")
    assert notify_socket.recv(4096) == b"STATUS=secrets: 3 files\\nREADY=1"  # no forged field
    notify.ready("ready (healthy)")
    assert order == ["blocked"]  # the stop signals held before READY=1
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=ready (healthy)"
    notify.extend_timeout(1.5)
    assert notify_socket.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    notify.stopping()
    notify.watchdog()
    assert [notify_socket.recv(4096) for _ in range(2)] == [b"STOPPING=1", b"WATCHDOG=1"]


def test_outside_systemd_notifications_are_no_ops() -> None:
    notify = Notifier()
    assert not notify.enabled
    notify.ready("ready")  # nothing to send to, nothing raised


def test_the_keepalive_asks_for_time_until_the_boot_is_done(
        notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Keepalive, "STEP", 0.1)
    done = threading.Event()
    Keepalive(Notifier(), done, budget=10.0).start()
    assert notify_socket.recv(4096) == b"EXTEND_TIMEOUT_USEC=100000"
    assert notify_socket.recv(4096) == b"EXTEND_TIMEOUT_USEC=100000"
    done.set()
    time.sleep(0.1)
    notify_socket.settimeout(0.15)
    while True:  # at most one more, sent before it saw done
        try:
            notify_socket.recv(4096)
        except TimeoutError:
            break
    with pytest.raises(TimeoutError):
        notify_socket.recv(4096)


def test_the_keepalive_stops_at_its_budget(notify_socket: socket.socket,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Keepalive, "STEP", 0.1)
    Keepalive(Notifier(), threading.Event(), budget=0.0).start()  # the boot's budgets: spent
    got = []
    notify_socket.settimeout(0.3)
    with pytest.raises(TimeoutError):
        while True:
            got.append(notify_socket.recv(4096))
    assert len(got) == 2  # STEP of grace beyond the budget, then no more


def test_children_inherit_no_notify_socket_nor_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "AGENT_CONFIG", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = child_environment()
    assert not [k for k in env if k.startswith(("NOTIFY", "WATCHDOG", "AGENT_", "AWS_"))]
    assert env["LANG"] == "C.UTF-8"


def test_a_dropin_under_run_systemd_waits_for_systemd(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(service, "SYSTEMD_RUNTIME", str(tmp_path / "run/systemd/system"))
    path = f"{tmp_path}/run/systemd/system/app.service.d/x.conf"
    assert service.dropin_blocked(path)
    assert not service.dropin_blocked(str(tmp_path / "etc/x.conf"))
    assert service.daemon_reload() == ""  # no systemd: nothing run
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert not service.dropin_blocked(path)


def test_the_journal_is_attached_only_when_stderr_is_its_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert not service.journal_attached()
    st = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert service.journal_attached()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert not service.journal_attached()


@pytest.mark.integration
def test_a_command_runs_without_output_and_says_how_it_failed(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    out = tmp_path / "env"
    assert run_command(["sh", "-c", f"echo hunter2; env > {out}"], timeout=10, what="hook") == ""
    assert "hunter2" not in capfd.readouterr().out  # its output discarded
    assert "hunter2" not in out.read_text()
    assert run_command(["sh", "-c", "exit 3"], timeout=10, what="hook") == "hook exited 3"
    assert run_command(["sleep", "5"], timeout=0.2, what="hook") == "hook timed out after 0.2 s"
    assert run_command([str(tmp_path / "absent")], timeout=1, what="hook") == (
        "hook could not run: No such file or directory")
