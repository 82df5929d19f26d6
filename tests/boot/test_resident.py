"""The resident daemon after READY: the same process, lean, its AWS work in short-lived jobs."""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from agentproc import FILES, PLAIN, Booter, eventually

from agent.sim.cloud import TERMINATING


class Notify:
    """A notify socket (as systemd's): every message with the PID that sent it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int, str]] = []  # when, sender's pid, text
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.done.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", value[:12])[0]
            self.messages.append((time.monotonic(), pid, data.decode()))

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()

    def saying(self, text: str, since: float = 0.0) -> list[tuple[float, int, str]]:
        return [m for m in list(self.messages) if text in m[2] and m[0] >= since]


@contextmanager
def notified(b: Booter, watchdog_usec: int = 2_000_000) -> Iterator[tuple[Notify, dict[str, str]]]:
    """A notify socket, and the environment systemd would give with WatchdogSec set."""
    notify = Notify(b.root / "notify.sock")
    try:
        yield notify, {**b.env(), "NOTIFY_SOCKET": str(notify.path),
                       "WATCHDOG_USEC": str(watchdog_usec)}
    finally:
        notify.close()
        b.outputs += [m[2] for m in notify.messages]


def jobs(pid: int) -> list[psutil.Process]:
    """The daemon's children (its running job)."""
    return psutil.Process(pid).children(recursive=True)


def rotate(b: Booter, secret_id: str, value: str) -> None:
    b.world.boto3_client("secretsmanager").put_secret_value(SecretId=secret_id,
                                                            SecretString=value)


def drain_step(tmp_path: Path, seconds: float) -> str:
    script = tmp_path / "drain.sh"
    script.write_text(f'#!/bin/sh\necho start >> "{tmp_path}/drain.log"\nsleep {seconds}\n'
                      f'echo end >> "{tmp_path}/drain.log"\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.integration
def test_rotation_and_scale_in_through_the_lean_resident(booter: Booter,
                                                         tmp_path: Path) -> None:
    """The same PID all along (re-executed as the resident), no process between events;
    a refresh asks only DescribeSecret when nothing changed and fetches only the rotated
    secret; the watchdog pings and STATUS= come from the main PID; a scale-in drains within
    its deadline and completes the termination hook; a stop leaves no process behind."""
    b = booter
    b.world.boto3_client("autoscaling").put_lifecycle_hook(
        LifecycleHookName="drain-hook", AutoScalingGroupName="web-asg",
        LifecycleTransition=TERMINATING, HeartbeatTimeout=60, DefaultResult="CONTINUE")
    textfile = tmp_path / "agent.prom"
    b.configure(FILES, extra=f'\n[termination]\npoll_seconds = 1\ndeadline_seconds = 20\n'
                             f'commands = [["{drain_step(tmp_path, 1)}"]]\n'
                             f'\n[telemetry]\ntextfile = "{textfile}"\n')
    cloud = b.world.cloud
    seen: set[int] = set()
    with notified(b) as (notify, env), b.daemon(env=env) as daemon:
        pid = daemon.pid
        ready_at = notify.saying("READY=1")[0][0]
        assert b.doc()["pid"] == pid
        eventually(lambda: b"agent.boot.resident" in Path(f"/proc/{pid}/cmdline").read_bytes())
        # the boot re-executed itself as the resident, the same PID
        assert jobs(pid) == []  # nothing else runs between events

        describes, fetches = len(cloud.calls("DescribeSecret")), len(cloud.calls("GetSecretValue"))
        daemon.send_signal(signal.SIGHUP)
        assert b.refreshed(1)["refresh"]["result"] == "unchanged"
        assert len(cloud.calls("DescribeSecret")) == describes + 3  # one per distinct secret
        assert len(cloud.calls("GetSecretValue")) == fetches  # nothing changed: no fetch

        rotate(b, "prod/plain", "plain-rotated-in-a-job")
        daemon.send_signal(signal.SIGHUP)
        assert b.refreshed(2)["refresh"]["result"].startswith("published gen-")
        fetched = cloud.calls("GetSecretValue")[fetches:]
        assert [c.params["SecretId"] for c in fetched] == ["prod/plain"]  # only the rotated
        assert (b.secrets_dir / "plain.txt").read_text() == "plain-rotated-in-a-job"
        # the textfile counts every request since the boot, the jobs' included
        counts = textfile.read_text().splitlines()
        ok = 'agent_aws_requests_total{{api="secretsmanager:{}",outcome="ok"}} {}'
        assert ok.format("DescribeSecret", 6) in counts  # 3 for each refresh
        assert ok.format("GetSecretValue", 4) in counts  # 3 for the boot, the rotated one
        eventually(lambda: jobs(pid) == [])  # the job is over, its memory given back

        eventually(lambda: len(notify.saying("WATCHDOG=1", ready_at)) >= 3, timeout=20)
        terminated_at = time.monotonic()
        cloud.terminate("web-asg", b.world.instance_id or "")
        b.world.imds.instance.update(target_lifecycle_state="Terminated")

        def draining() -> bool:
            seen.update(p.pid for p in jobs(pid))
            return bool(b.doc().get("termination"))
        eventually(draining, timeout=20)
        drained_in = time.monotonic() - terminated_at
        record = b.doc()["termination"]
        assert record["steps"] == [{"step": str(tmp_path / "drain.sh"), "result": "ok"}]
        assert record["hook"]["result"] == "CONTINUE"
        assert drained_in < 20  # termination.deadline_seconds, the job's start included
        hook = [a for a in cloud.actions(b.world.instance_id) if a.transition == TERMINATING]
        assert hook[-1].result == "CONTINUE"
        eventually(lambda: notify.saying("STATUS=drained"), timeout=5)
        assert record["secrets_wiped"] and list(b.secrets_dir.iterdir()) == []
        daemon.send_signal(signal.SIGHUP)  # drained: the wiped secrets are not published again
        time.sleep(2)
        assert b.doc()["refresh"]["count"] == 2 and list(b.secrets_dir.iterdir()) == []
        assert daemon.poll() is None  # stays until the machine stops it
    # the daemon context stopped it (SIGTERM, exit 0): nothing it started is left
    assert seen and not any(psutil.pid_exists(child) for child in seen)
    assert notify.saying("STOPPING=1")
    senders = {m[1] for m in notify.messages}
    assert senders == {pid}  # NotifyAccess=main holds: only the main PID speaks
    for text in ("STATUS=draining: target lifecycle state Terminated", "STATUS=ready"):
        assert notify.saying(text), text


@pytest.mark.integration
def test_a_sighup_during_a_refresh_refreshes_again(booter: Booter) -> None:
    """A SIGHUP while the refresh job runs is kept: another refresh follows (the first may or
    may not have seen the rotation, the second does)."""
    b = booter
    b.world.cloud.action_latency["DescribeSecret"] = 3.0
    with b.daemon() as daemon:
        daemon.send_signal(signal.SIGHUP)
        (job,) = eventually(lambda: jobs(daemon.pid), timeout=20)  # the refresh runs
        rotate(b, "prod/plain", "plain-rotated-during-the-refresh")
        daemon.send_signal(signal.SIGHUP)
        assert job.is_running()  # the second SIGHUP came while the first refresh ran
        b.world.cloud.action_latency.clear()
        doc = b.refreshed(2, timeout=60)  # refresh_seconds is an hour: the SIGHUP's
        assert doc["refresh"]["count"] == 2
        assert (b.secrets_dir / "plain.txt").read_text() == "plain-rotated-during-the-refresh"
        time.sleep(1)
        assert b.doc()["refresh"]["count"] == 2  # and no more
        assert daemon.poll() is None


@pytest.mark.integration
def test_sigterm_during_a_job_stops_cleanly(booter: Booter) -> None:
    """SIGTERM while a job waits on AWS: the job is ended, the resident exits 0 with
    STOPPING=1, no process is left, and the published secrets stay."""
    b = booter
    b.world.cloud.action_latency["DescribeSecret"] = 30.0
    with notified(b) as (notify, env), b.daemon(env=env) as daemon:
        daemon.send_signal(signal.SIGHUP)
        (job,) = eventually(lambda: jobs(daemon.pid), timeout=20)
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - stopped < 10  # not the 30 s the job would have waited
        assert not psutil.pid_exists(job.pid)
        eventually(lambda: notify.saying("STOPPING=1"), timeout=5)
    assert (b.secrets_dir / "plain.txt").read_text() == PLAIN


@pytest.mark.integration
def test_a_spot_drain_ends_before_the_interruption(booter: Booter, tmp_path: Path) -> None:
    """The drain's deadline is taken when the notice is seen (the job's start-up counts):
    a step that would run past it is cut 5 s before the interruption."""
    b = booter
    b.world.imds.instance.update(market="spot")
    b.configure(FILES, extra=f'\n[termination]\npoll_seconds = 1\n'
                             f'commands = [["{drain_step(tmp_path, 60)}"]]\n')
    with b.daemon():
        interruption = time.time() + 12
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(interruption))
        b.world.imds.instance.update(spot_action={"action": "terminate", "time": when})
        record = eventually(lambda: b.doc().get("termination"), timeout=30)
        done = time.time()
        assert record["reason"] == "spot"
        assert "timed out" in record["steps"][0]["result"]
        assert (tmp_path / "drain.log").read_text() == "start\n"  # it ran, and was cut
        assert done < interruption - 5 + 1.5  # the margin held (second-precision notice)
