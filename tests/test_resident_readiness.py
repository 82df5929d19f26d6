"""The readiness gate after a rotation, through the lean resident: the refresh job reloads
the units, a ``regate`` job runs the gate again for them; a termination notice during a long
job ends it and drains within the deadline.

The daemon runs in a private mount namespace whose /run says that systemd runs here
(``/run/systemd/system``), with a stand-in ``systemctl`` first on its PATH: it records what
it was asked and answers ``show`` with the file the test writes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from agentproc import FILES, Booter, eventually

from agent.sim.world import World

SHOW = """LoadState=loaded
ActiveState={active}
SubState={sub}
Result={result}
ExecMainStatus={status}
NRestarts=0
InvocationID=5f0c
"""
ACTIVE = SHOW.format(active="active", sub="running", result="success", status=0)
FAILED = SHOW.format(active="failed", sub="failed", result="exit-code", status=1)
STARTING = SHOW.format(active="activating", sub="start", result="success", status=0)
# a private /run in which systemd runs, then the agent (exec: the same PID)
SYSTEMD_HERE = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs agent-test /run && mkdir -p /run/systemd/system && exec "$@"',
                "sh")
FAILED_LINE = ("readiness after rotation: prod/plain -> app.service: "
               "app.service failed (exit-code, status 1)")


def systemctl(tmp_path: Path, answer: str) -> tuple[Path, Path]:
    """A stand-in ``systemctl`` in its own directory: (the directory, the file ``show``
    prints). Every call is appended to ``argv.txt``."""
    where = tmp_path / "bin"
    where.mkdir()
    show = tmp_path / "show.txt"
    show.write_text(answer)
    program = where / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/argv.txt"\n'
                       f'[ "$1" = show ] && cat "{show}"\nexit 0\n')
    program.chmod(0o755)
    return where, show


def configure(b: Booter, tmp_path: Path, readiness: str, extra: str = "") -> dict[str, str]:
    """prod/plain's file reloads app.service; ``[readiness]`` on app.service; the textfile.
    The daemon's environment (the stand-in first on PATH)."""
    where, _ = systemctl(tmp_path, ACTIVE)
    files = [{**e, "reload_units": ["app.service"]} if e["secret_id"] == "prod/plain" else e
             for e in FILES]
    b.configure(files, extra=f'\n[readiness]\nunits = ["app.service"]\n{readiness}'
                             f'\n[telemetry]\ntextfile = "{tmp_path / "agent.prom"}"\n{extra}')
    env = b.env()
    env["PATH"] = f"{where}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def rotate(world: World, value: str) -> None:
    world.boto3_client("secretsmanager").put_secret_value(SecretId="prod/plain",
                                                          SecretString=value)


def counted(b: Booter) -> dict[str, int]:
    return dict((b.doc().get("readiness") or {}).get("after_rotation") or {})


def metric(tmp_path: Path, line: str) -> bool:
    return line in (tmp_path / "agent.prom").read_text().splitlines()


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a private /run needs a mount namespace: root")
def test_a_rotation_whose_unit_then_fails_degrades_until_a_passing_gate(
        booter: Booter, tmp_path: Path) -> None:
    """The refresh reloads app.service; the gate run again finds it failed: degraded, the
    warning names the secret and the unit, counted in the textfile. The next rotation's
    gate passes: healthy, counted; a later refresh keeps the counts in the textfile."""
    b = booter
    env = configure(b, tmp_path, "settle_seconds = 0\ntimeout_seconds = 30\n"
                                 "interval_seconds = 0.2\n")
    show = tmp_path / "show.txt"
    with b.daemon(env=env, prefix=SYSTEMD_HERE) as daemon:
        assert b.doc()["condition"] == "healthy"
        show.write_text(FAILED)  # the application rejects the rotated secret
        rotate(b.world, "plain-rotated-bad")
        daemon.send_signal(signal.SIGHUP)
        eventually(lambda: counted(b) == {"passed": 0, "failed": 1}, timeout=30)
        doc = b.doc()
        assert doc["state"] == "ready" and doc["condition"] == "degraded"
        assert FAILED_LINE in doc["warnings"]
        assert "try-reload-or-restart app.service" in (tmp_path / "argv.txt").read_text()
        eventually(lambda: metric(tmp_path, 'agent_readiness_after_rotation_total'
                                            '{outcome="failed"} 1'))
        assert metric(tmp_path, "agent_boot_degraded 1")

        show.write_text(ACTIVE)  # fixed: the next rotation's gate passes
        rotate(b.world, "plain-rotated-good")
        daemon.send_signal(signal.SIGHUP)
        eventually(lambda: counted(b) == {"passed": 1, "failed": 1}, timeout=30)
        doc = b.doc()
        assert doc["condition"] == "healthy" and doc["warnings"] == []
        eventually(lambda: metric(tmp_path, 'agent_readiness_after_rotation_total'
                                            '{outcome="passed"} 1'))
        assert metric(tmp_path, "agent_boot_degraded 0")

        daemon.send_signal(signal.SIGHUP)  # nothing rotated: no gate, the counts kept
        b.refreshed(3)
        eventually(lambda: psutil.Process(daemon.pid).children() == [])
        for outcome, n in (("passed", 1), ("failed", 1)):
            assert metric(tmp_path, f'agent_readiness_after_rotation_total'
                                    f'{{outcome="{outcome}"}} {n}')
        assert counted(b) == {"passed": 1, "failed": 1}


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a private /run needs a mount namespace: root")
def test_a_spot_notice_during_a_long_gate_ends_it_and_drains_in_time(
        booter: Booter, tmp_path: Path) -> None:
    """A gate after a rotation that would wait two hours (the unit never starts): a spot
    notice meanwhile ends that job and the drain runs at once, done 5 s before the
    interruption."""
    b = booter
    b.world.imds.instance.update(market="spot")
    drain = tmp_path / "drain.sh"
    drain.write_text(f'#!/bin/sh\necho drained >> "{tmp_path}/drain.log"\n')
    drain.chmod(0o755)
    env = configure(b, tmp_path, "settle_seconds = 0\ntimeout_seconds = 7200\n"
                                 "interval_seconds = 0.5\n",
                    f'\n[termination]\npoll_seconds = 1\ncommands = [["{drain}"]]\n')
    with b.daemon(env=env, prefix=SYSTEMD_HERE) as daemon:
        (tmp_path / "show.txt").write_text(STARTING)  # reloaded, and never active again
        rotate(b.world, "plain-rotated")
        daemon.send_signal(signal.SIGHUP)

        def gating() -> list[psutil.Process]:
            return [p for p in psutil.Process(daemon.pid).children() if "regate" in argv(p)]
        (job,) = eventually(gating, timeout=30)
        time.sleep(2)  # the gate waits
        assert job.is_running()
        interruption = time.time() + 20
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(interruption))
        b.world.imds.instance.update(spot_action={"action": "terminate", "time": when})
        record = eventually(lambda: b.doc().get("termination"), timeout=30)
        done = time.time()
        assert record["reason"] == "spot"
        assert record["steps"] == [{"step": str(drain), "result": "ok"}]
        assert (tmp_path / "drain.log").read_text() == "drained\n"
        assert done < interruption - 5 + 1.5  # the margin held (second-precision notice)
        assert not job.is_running()  # the gate was ended for the drain
        assert counted(b) == {}  # an ended gate is no verdict
        assert daemon.poll() is None


def argv(process: psutil.Process) -> list[str]:
    """A child's command line; [] once it has ended (a job that just exited, not yet reaped,
    is a zombie)."""
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess too
        return []
