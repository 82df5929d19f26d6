"""The readiness gate in whole boots against the simulated cloud: real HTTP and TCP servers
started here, real commands; the launch hook completed only once they serve (heartbeats
keeping it alive meanwhile), abandoned when they never do, ``READY=1`` before the gate."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import DB, PLAIN, Booter, eventually

from agent.sim import World
from agent.sim.app import HealthApp

pytestmark = pytest.mark.integration

SECRETS: dict[str, str | bytes] = {"prod/db": json.dumps(DB), "prod/plain": PLAIN}
FILES = [{"secret_id": "prod/db", "path": "db.json"}]
HEARTBEAT_TIMEOUT = 8  # the hook's: shorter than the waits below, longer than a loaded start
BODY_MARKER = "body-secret-5e1d"  # what the application answers: never recorded or logged


@pytest.fixture
def app() -> Iterator[HealthApp]:
    with HealthApp(BODY_MARKER) as served:
        yield served


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


@pytest.fixture
def tcp_server() -> Iterator[int]:
    """A TCP port that accepts every connection (and closes it); its number."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def cloud(tmpfs: Path) -> Iterator[Booter]:
    with World() as world:
        world.seed(secrets=SECRETS, heartbeat_timeout=HEARTBEAT_TIMEOUT)
        b = Booter(world, tmpfs)
        b.configure(FILES)
        b.config_path.write_text(b.config_path.read_text().replace(
            "[lifecycle]\n", "[lifecycle]\nheartbeat_seconds = 1\n", 1))
        yield b
        b.assert_no_secret_leaked()
        for text in b.outputs:
            assert BODY_MARKER not in text


def readiness(b: Booter, checks: list[str], **keys: float) -> None:
    """Append a [readiness] section: ``checks`` are the TOML bodies of its checks."""
    settings = {"timeout_seconds": 30, "settle_seconds": 2, "interval_seconds": 0.2, **keys}
    text = "\n[readiness]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    text += "".join(f"[[readiness.checks]]\n{body}\n" for body in checks)
    b.config_path.write_text(b.config_path.read_text() + text)


def completions(b: Booter) -> list[object]:
    return b.world.cloud.calls("CompleteLifecycleAction")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "ERROR boot failed:" in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_continue_only_after_the_application_serves_and_held(cloud: Booter, app: HealthApp,
                                                             tcp_server: int) -> None:
    flag = cloud.root / "warmed-up"
    readiness(cloud, [f'http = "{app.url}"', f'tcp = "127.0.0.1:{tcp_server}"',
                      f'command = ["/usr/bin/test", "-e", "{flag}"]'], settle_seconds=2)
    notify = Notifications(cloud.root / "notify.sock")
    proc = subprocess.Popen([*cloud_argv(cloud)], env={**cloud.env(), "NOTIFY_SOCKET":
                            str(notify.path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready_at = eventually(lambda: notify.first("READY=1"), timeout=30)
        # waiting: the phase says what is not ready; nothing completed; state running
        doc = eventually(lambda: (d := cloud.doc()).get("readiness", {}).get("seen") and d)
        assert doc["state"] == "running"
        assert [p["state"] for p in doc["phases"]][3:] == ["running", "pending"]
        status = cloud.status()
        assert status.returncode == 3
        assert f"NOT READY {app.url}" in " ".join(status.stdout.split())
        assert "503" in status.stdout
        time.sleep(2 * HEARTBEAT_TIMEOUT + 1)  # longer than two of the hook's HeartbeatTimeout
        assert completions(cloud) == []
        assert cloud.agent("wait", "--timeout", "0.5", "--state-dir",
                           str(cloud.state_dir)).returncode == 124
        flag.touch()
        app.healthy()
        cloud.wait_ready(timeout=30)
        (done,) = completions(cloud)
        took = done.at - (app.healthy_at or 0)
        assert 2 <= took <= 2 + 0.2 + 1.5  # settle + an interval + a round trip (and slack)
        assert ready_at < (app.healthy_at or 0)  # READY=1 long before the gate opened
        record = cloud.world.cloud.actions(cloud.world.instance_id)[-1]
        assert (record.result, record.completed_by) == ("CONTINUE", "api")
        beats = cloud.world.cloud.calls("RecordLifecycleActionHeartbeat")
        assert len(beats) >= 5 and all(b.at < done.at for b in beats)
        doc = cloud.doc()
        assert doc["state"] == "ready" and doc["condition"] == "healthy"
        phase = {p["name"]: p for p in doc["phases"]}["readiness"]
        assert phase["state"] == "done" and phase["duration_ms"] >= 9000
        assert all(s["ready"] for s in doc["readiness"]["seen"])
    finally:
        cloud.stop(proc)
        notify.close()
        cloud.outputs += [text for _, text in notify.received]


def cloud_argv(b: Booter) -> list[str]:
    import sys

    return [sys.executable, "-m", "agent", "run", "--config", str(b.config_path)]


class Notifications:
    """A notify socket as systemd's: every message read at once, with the time it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except OSError:
                return
            self.received.append((time.monotonic(), message))

    def first(self, field: str) -> float | None:
        """When the first message holding ``field`` came (None: none yet)."""
        return next((at for at, text in self.received if field in text.split("\n")), None)

    def close(self) -> None:
        self.sock.close()


def test_an_application_that_never_serves_is_abandoned_within_the_bound(
        cloud: Booter, app: HealthApp, tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    cloud.world.cloud.signals.expect("web-stack", "WebGroup")
    cloud.config_path.write_text(cloud.config_path.read_text() + (
        f'\n[signal]\ncloudformation_stack = "web-stack"\ncloudformation_resource = "WebGroup"\n'
        f'marker_file = "{marker}"\n'))
    readiness(cloud, [f'http = "{app.url}"'], timeout_seconds=4)
    started = time.monotonic()
    proc = cloud.start_daemon()
    assert cloud.collect(proc, timeout=60) == 1
    took = time.monotonic() - started
    assert took < 4 + 8  # the gate's bound, and the process's start and finish
    line = one_error_line(cloud.outputs[-1])
    assert line.endswith(f"not ready within 4 s: {app.url}: 503")
    assert cloud.results() == ["ABANDON"]
    assert cloud.world.cloud.signals.received[-1].status == "FAILURE"
    assert not marker.exists()
    doc = cloud.doc()
    assert doc["state"] == "failed"
    phase = {p["name"]: p for p in doc["phases"]}["readiness"]
    assert phase["error"] == f"not ready within 4 s: {app.url}: 503"
    assert {p["name"]: p for p in doc["phases"]}["lifecycle"]["detail"].startswith("ABANDON")


def test_a_flapping_application_never_settles(cloud: Booter, app: HealthApp) -> None:
    app.statuses = [200, 503] * 50  # healthy every other answer
    readiness(cloud, [f'http = "{app.url}"'], timeout_seconds=5, settle_seconds=2,
              interval_seconds=0.3)
    proc = cloud.start_daemon()
    assert cloud.collect(proc, timeout=60) == 1
    line = one_error_line(cloud.outputs[-1])
    assert line.endswith((f"not ready within 5 s: never held for 2 s (last: {app.url}: 503)",
                          f"not ready within 5 s: {app.url}: 503"))
    assert cloud.results() == ["ABANDON"]


def test_hanging_checks_end_at_their_timeouts_and_leave_no_process(
        cloud: Booter, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    readiness(cloud, [f'http = "http://127.0.0.1:{port}/healthz"\ntimeout_seconds = 1',
                      'command = ["/bin/sleep", "987.654"]\ntimeout_seconds = 1'],
              timeout_seconds=4, interval_seconds=0.5)
    started = time.monotonic()
    proc = cloud.start_daemon()
    sleeping = eventually(sleepers, timeout=20)
    assert sleeping
    assert cloud.collect(proc, timeout=60) == 1
    assert time.monotonic() - started < 4 + 8
    line = one_error_line(cloud.outputs[-1])
    # each attempt ends at its own timeout (1 s), or at the gate's end when that comes first
    assert re.search(rf"not ready within 4 s: http://127.0.0.1:{port}/healthz: no answer "
                     r"within (1|0\.\d) s; /bin/sleep 987\.654: timed out after (1|0\.\d) s\Z",
                     line), line
    assert sleepers() == []  # every attempt's process was killed
    assert cloud.results() == ["ABANDON"]


def sleepers() -> list[int]:
    """The processes running ``sleep 987.654`` (the hanging check's command)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"/bin/sleep", b"987.654"]:
            found.append(int(pid))
    return found


def test_a_check_aimed_at_another_machine_fails_the_boot(cloud: Booter) -> None:
    readiness(cloud, ['tcp = "192.0.2.10:5432"'])
    proc = cloud.start_daemon()
    assert cloud.collect(proc, timeout=60) == 1
    assert one_error_line(cloud.outputs[-1]).endswith(
        "readiness.checks[0]: 192.0.2.10 is not an address of this instance (checks reach it "
        "only)")
    assert cloud.results() == ["ABANDON"]


def test_readiness_in_oneshot_mode_is_a_configuration_error(cloud: Booter, app: HealthApp) -> None:
    readiness(cloud, [f'http = "{app.url}"'])
    proc = cloud.run()  # --oneshot
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [
        "agent: --oneshot: [readiness] needs daemon mode (a oneshot run exits before the "
        "applications could be watched)"]
    assert completions(cloud) == []


def test_without_the_section_the_phase_is_skipped(cloud: Booter) -> None:
    assert cloud.run().returncode == 0
    phase = {p["name"]: p for p in cloud.doc()["phases"]}["readiness"]
    assert (phase["state"], phase["detail"]) == ("skipped", "no [readiness] section")
    assert cloud.results() == ["CONTINUE"]


def test_a_warm_pool_boot_skips_the_gate_and_the_promotion_runs_it(tmpfs: Path,
                                                                   app: HealthApp) -> None:
    with World() as world:
        instance = world.seed(secrets=SECRETS, warm_pool="Warmed:Running", heartbeat_timeout=60)
        b = Booter(world, tmpfs)
        b.configure(FILES)
        readiness(b, [f'http = "{app.url}"'], settle_seconds=1)
        b.config_path.write_text(b.config_path.read_text() + "\n[termination]\npoll_seconds = 1\n")
        with b.daemon():  # ready although the application answers 503: not serving yet
            phase = {p["name"]: p for p in b.doc()["phases"]}["readiness"]
            assert (phase["state"], phase["detail"]) == (
                "skipped", "warm pool: waits when the instance goes InService")
            assert [a.result for a in world.cloud.actions(instance)] == ["CONTINUE"]
            world.cloud.launch("web-asg", instance)
            world.imds.instance.update(target_lifecycle_state="InService")
            eventually(lambda: b.doc().get("readiness", {}).get("seen"), timeout=15)
            time.sleep(2)
            assert [a.result for a in world.cloud.actions(instance)] == ["CONTINUE", None]
            app.healthy()
            eventually(lambda: [a.result for a in world.cloud.actions(instance)]
                       == ["CONTINUE", "CONTINUE"], timeout=15)
            done = world.cloud.calls("CompleteLifecycleAction")[-1]
            assert done.at - (app.healthy_at or 0) >= 1  # held settle_seconds first
            # the promotion runs as a job: state.json has its phases once the job has ended,
            # after the CONTINUE it sent
            eventually(lambda: {p["name"]: p for p in b.doc()["phases"]}["readiness"]["state"]
                       == "done", timeout=15)
        b.assert_no_secret_leaked()
