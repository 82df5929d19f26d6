"""The readiness gate under a real systemd: application units ordered after
agent-ready.target, the launch hook completed only once they serve.

* "slow": an HTTP service that serves only after longer than the hook's HeartbeatTimeout:
  heartbeats keep the action, CONTINUE comes after it serves (and held).
* "exits": a service that exits 1: ABANDON within seconds, the line names the unit and its
  result.
* "crash loop": a service that runs a moment, fails and is restarted forever
  (``Restart=always``): it never settles, ABANDON at the gate's timeout.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import harness
import pytest
from harness import Setup

pytestmark = pytest.mark.e2e

SEED: dict[str, Any] = {
    "group": "web-asg",
    "instance_type": "m5.large",
    "region": "us-east-1",
    "hook": "agent-ready",
    "heartbeat_timeout": 300,
    "default_result": "ABANDON",
    "secrets": {"prod/app": "app-secret-e2e-31f7"},
}

CONFIG = """\
[aws]
endpoint_url = "@AWS_URL@"

[[secrets.files]]
secret_id = "prod/app"
path = "app.txt"

[lifecycle]
hook_name = "agent-ready"
heartbeat_seconds = 2

[readiness]
units = ["app.service"]
@READINESS@
"""

APP_UNIT = """\
[Unit]
Description=An application the launch hook waits for
Requires=agent-ready.target
After=agent-ready.target
@UNIT@

[Service]
@SERVICE@

[Install]
WantedBy=multi-user.target
"""

SHORT_TIMEOUT = 30  # the slow scenario's HeartbeatTimeout (counted from the simulator's start)
SLOW_APP = """\
#!/usr/bin/python3
# Serves /healthz on 127.0.0.1:8080 after DELAY seconds; notes when it began to serve.
import http.server, sys, time
time.sleep(float(sys.argv[1]))

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 8080), Health)
with open("/run/app.serving", "w") as note:
    note.write(repr(time.time()))
server.serve_forever()
"""


def prepare(readiness: str, unit: str, service: str, app: str = "") -> Any:
    """A ``prepare(root, aws_url)``: the agent's configuration and ``app.service``."""

    def write(root: Path, aws_url: str) -> None:
        config = CONFIG.replace("@AWS_URL@", aws_url).replace("@READINESS@", readiness)
        (root / "etc/agent/agent.toml").write_text(config)
        if app:
            program = root / "usr/local/bin/app"
            program.write_text(app)
            program.chmod(0o755)
        path = root / "etc/systemd/system/app.service"
        path.write_text(APP_UNIT.replace("@UNIT@", unit).replace("@SERVICE@", service))
        wants = root / "etc/systemd/system/multi-user.target.wants/app.service"
        wants.symlink_to("/etc/systemd/system/app.service")

    return write


def launch_action(machine: harness.Machine) -> dict[str, Any]:
    """The simulator's record of our instance's one launch action."""
    actions = [a for a in machine.sim.state()["actions"]
               if a.get("instance_id") == machine.sim.instance_id
               and a.get("transition", "").endswith("LAUNCHING")]
    assert len(actions) == 1, actions
    return dict(actions[0])


def finished(machine: harness.Machine, timeout: float) -> dict[str, Any]:
    """Wait for the launch action to be completed; its record."""
    deadline = time.monotonic() + timeout
    while True:
        action = launch_action(machine)
        if action.get("result") or time.monotonic() > deadline:
            return action
        time.sleep(0.5)


def failure_lines(machine: harness.Machine) -> list[str]:
    """The agent's ERROR lines about a failed boot, from the journal."""
    out = machine.container.exec("journalctl", "-b", "--no-pager", "-o", "json",
                                 "_SYSTEMD_UNIT=agent.service", "PRIORITY=3", check=True).stdout
    messages = [str(json.loads(line).get("MESSAGE", "")) for line in out.splitlines() if line]
    return [m for m in messages if m.startswith("boot failed:")]


def when(stamp: str) -> float:
    """A simulator timestamp as Unix time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_an_application_slower_than_the_heartbeat_timeout(e2e_setup: Setup,
                                                          tmp_path: Path) -> None:
    """CONTINUE only once it serves and held; heartbeats kept the action alive meanwhile."""
    readiness = ('timeout_seconds = 180\nsettle_seconds = 3\ninterval_seconds = 1\n'
                 '[[readiness.checks]]\nhttp = "http://127.0.0.1:8080/healthz"\n')
    seed = {**SEED, "heartbeat_timeout": SHORT_TIMEOUT}
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, seed, prepare(
            readiness, "", f"ExecStart=/usr/local/bin/app {SHORT_TIMEOUT + 5}",
            SLOW_APP)) as machine:
        c = machine.container
        agent = c.wait_for("agent.service", ["active", "failed"])
        assert agent["ActiveState"] == "active", agent  # READY=1 came before the gate
        waiting = json.loads(c.exec("agent", "status", "--json").stdout)
        assert waiting["state"] == "running", waiting
        action = finished(machine, 180)
        assert (action["result"], action["completed_by"]) == ("CONTINUE", "api"), action
        serving = float(c.exec("cat", "/run/app.serving", check=True).stdout)
        completed = when(action["completed_at"])
        assert completed >= serving + 3 - 0.5, (completed, serving)  # held settle_seconds
        assert completed - when(action["started_at"]) > SHORT_TIMEOUT, action
        assert action["heartbeats"] >= 5, action
        status = c.exec("agent", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "readiness  done" in status.stdout, status.stdout
        e2e_setup.note(f"readiness slow: CONTINUE {completed - serving:.2f} s after the "
                       f"application served (settle 3 s, interval 1 s), "
                       f"{action['heartbeats']} heartbeats")


def test_an_application_that_exits_1_is_abandoned_within_seconds(e2e_setup: Setup,
                                                                 tmp_path: Path) -> None:
    readiness = "timeout_seconds = 300\nsettle_seconds = 3\ninterval_seconds = 1\n"
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED, prepare(
            readiness, "", "ExecStart=/bin/sh -c 'sleep 1; exit 1'")) as machine:
        c = machine.container
        app = c.wait_for("app.service", ["failed"])
        failed_at = time.monotonic()
        action = finished(machine, 60)
        took = time.monotonic() - failed_at
        assert action["result"] == "ABANDON", action
        assert took < 10, took  # at once, not at the gate's timeout (300 s)
        lines = failure_lines(machine)
        assert lines and lines[0] == "boot failed: app.service failed (exit-code, status 1)", (
            lines, app)
        e2e_setup.note(f"readiness exits 1: ABANDON within {took:.2f} s of the test seeing the "
                       "unit failed")


def test_a_crash_loop_never_settles(e2e_setup: Setup, tmp_path: Path) -> None:
    readiness = "timeout_seconds = 25\nsettle_seconds = 5\ninterval_seconds = 0.5\n"
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED, prepare(
            readiness, "StartLimitIntervalSec=0",
            "ExecStart=/bin/sh -c 'sleep 2; exit 1'\nRestart=always\nRestartSec=1")) as machine:
        c = machine.container
        action = finished(machine, 90)
        assert action["result"] == "ABANDON", action
        lines = failure_lines(machine)
        assert lines and lines[0].startswith("boot failed: not ready within 25 s:"), lines
        assert "app.service" in lines[0] and "restarts" in lines[0], lines
        app = c.show("app.service", "NRestarts")
        assert int(app["NRestarts"]) >= 3, app
        e2e_setup.note(f"readiness crash loop: {lines[0]}")


def test_a_rotation_that_breaks_the_application_degrades(e2e_setup: Setup,
                                                         tmp_path: Path) -> None:
    """The rotated secret restarts the unit (reload_units); it fails on the new value; the
    gate run again says so: degraded, a warning naming the secret and the unit."""
    seed = {**SEED, "secrets": {"prod/app": "good-e2e-7c21"}}
    service = ("ExecStart=/bin/sh -c 'grep -q good /run/agent/secrets/app.txt && exec sleep "
               "infinity; exit 1'")
    readiness = "timeout_seconds = 30\nsettle_seconds = 2\ninterval_seconds = 0.5\n"

    def write(root: Path, aws_url: str) -> None:
        prepare(readiness, "", service)(root, aws_url)
        config = root / "etc/agent/agent.toml"
        config.write_text(config.read_text().replace(
            'path = "app.txt"\n', 'path = "app.txt"\nreload_units = ["app.service"]\n'))

    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, seed, write) as machine:
        c = machine.container
        assert finished(machine, 60)["result"] == "CONTINUE"
        # the rotation, from the host, in the simulator
        boto3.client("secretsmanager", endpoint_url=machine.sim.aws_url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).put_secret_value(SecretId="prod/app", SecretString="bad-e2e-0b9e")
        c.exec("systemctl", "kill", "--kill-whom=main", "--signal=SIGHUP", "agent.service",
               check=True)
        deadline = time.monotonic() + 60
        while True:
            doc = json.loads(c.exec("agent", "status", "--json", check=True).stdout)
            counts = doc.get("readiness", {}).get("after_rotation") or {}
            if counts or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counts == {"passed": 0, "failed": 1}, doc
        assert doc["state"] == "ready" and doc["condition"] == "degraded", doc
        assert ("readiness after rotation: prod/app -> app.service: app.service failed "
                "(exit-code, status 1)") in doc["warnings"], doc["warnings"]
        assert c.show("agent.service", "ActiveState")["ActiveState"] == "active"
