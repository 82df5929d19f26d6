"""The agent's .deb under a real systemd: a booted Debian container, the simulated cloud.

Scenario "happy": the agent reaches READY, secrets land on tmpfs with their modes and
owners, an application ordered after agent-ready.target starts with the tuned environment
and its secrets as credentials (its own LoadCredential=, and the agent's runtime drop-in),
the journal holds the phases and no secret value, and the launch hook gets CONTINUE.
Scenario "missing secret": the unit fails, the application never starts, the hook gets
ABANDON. Then the package's removal and purge on a running machine, and its contents.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import Setup

from agent.cloud.service_models import OPERATIONS
from agent.service.envfile import parse as parse_env_file

pytestmark = pytest.mark.e2e
PREFIX = "/opt/instance-boot-agent"  # the package's own environment
MAN_PAGE = "/usr/share/man/man8/agent.8.gz"
COMPLETION = "/usr/share/bash-completion/completions/agent"

DB_PASSWORD = secrets.token_urlsafe(18)
API_TOKEN = secrets.token_hex(20)
DB_JSON = json.dumps({"username": "app", "password": DB_PASSWORD, "host": "db.internal"})
APP_ENV_JSON = json.dumps({"API_TOKEN": API_TOKEN, "GREETING": "hello world"})
TLS_KEY = secrets.token_bytes(40) + b"\x00\xff\n"
SECRET_VALUES = [DB_PASSWORD.encode(), API_TOKEN.encode(), DB_JSON.encode(), TLS_KEY,
                 base64.b64encode(TLS_KEY), TLS_KEY.hex().encode()]

SEED: dict[str, Any] = {
    "group": "web-asg",
    "instance_type": "m5.xlarge",
    "region": "us-east-1",
    "hook": "agent-ready",
    "heartbeat_timeout": 300,
    "default_result": "ABANDON",
    "secrets": {
        "prod/db": DB_JSON,
        "prod/app-env": APP_ENV_JSON,
        "prod/tls-key": {"base64": base64.b64encode(TLS_KEY).decode()},
    },
}

CONFIG = """\
[aws]
endpoint_url = "@AWS_URL@"

[[secrets.files]]
secret_id = "prod/db"
path = "db.json"

[[secrets.files]]
secret_id = "prod/db"
path = "db-password"
key = "password"
mode = "0440"
group = "daemon"

[[secrets.files]]
secret_id = "prod/app-env"
path = "app.env"
format = "env"
owner = "daemon"
group = "daemon"

[[secrets.files]]
secret_id = "prod/tls-key"
path = "tls/key.bin"

[[secrets.files]]
secret_id = "prod/db"
path = "handoff/db.json"
units = ["demo-app.service"]
credential = "db-handoff"
@EXTRA@
[[tuning.files]]
path = "/run/agent/tuning/app.env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"

[lifecycle]
hook_name = "agent-ready"
"""
MISSING = """
[[secrets.files]]
secret_id = "prod/missing"
path = "missing.txt"
"""
# path -> (mode, owner, group) as configured above
EXPECTED_FILES = {
    "db.json": ("400", "root", "root"),
    "db-password": ("440", "root", "daemon"),
    "app.env": ("400", "daemon", "daemon"),
    "tls/key.bin": ("400", "root", "root"),
    "handoff/db.json": ("400", "root", "root"),
}

DEMO_UNIT = """\
[Unit]
Description=Demo application: needs the agent's secrets and tuning
Requires=agent-ready.target
After=agent-ready.target

[Service]
EnvironmentFile=/run/agent/tuning/app.env
LoadCredential=db:/run/agent/secrets/db.json
ExecStart=/usr/local/bin/demo-app

[Install]
WantedBy=multi-user.target
"""
DEMO_APP = """\
#!/bin/sh
# Record what the application got from the agent (a digest, never the secret), then stay.
set -eu
{
  echo "HEAP_MB=$HEAP_MB"
  echo "WORKERS=$WORKERS"
  echo "DB_SHA256=$(sha256sum <"$CREDENTIALS_DIRECTORY/db" | cut -d' ' -f1)"
  echo "HANDOFF_SHA256=$(sha256sum <"$CREDENTIALS_DIRECTORY/db-handoff" | cut -d' ' -f1)"
} >/run/demo-app.seen.tmp
mv /run/demo-app.seen.tmp /run/demo-app.seen
exec sleep infinity
"""
PHASES = ("metadata", "secrets", "tuning", "lifecycle")
TIMESTAMPS = ("ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")


def prepare(extra: str) -> Any:
    """A ``prepare(root, aws_url)`` writing the agent config and the demo application."""

    def write(root: Path, aws_url: str) -> None:
        config = CONFIG.replace("@AWS_URL@", aws_url).replace("@EXTRA@", extra)
        (root / "etc/agent/agent.toml").write_text(config)
        app = root / "usr/local/bin/demo-app"
        app.write_text(DEMO_APP)
        app.chmod(0o755)
        unit = root / "etc/systemd/system/demo-app.service"
        unit.write_text(DEMO_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants/demo-app.service"
        wants.symlink_to("/etc/systemd/system/demo-app.service")

    return write


def env_file(text: str) -> dict[str, str]:
    """KEY=value lines."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def assert_no_secret_in_logs(machine: harness.Machine) -> None:
    """Neither the container's whole journal nor its console holds a secret value."""
    c = machine.container
    journal = c.exec_bytes("journalctl", "-b", "--no-pager", "-o", "export", timeout=60)
    assert len(journal) > 1000, "the journal export is suspiciously small"
    console = c.console.read_bytes()
    for value in SECRET_VALUES:
        assert value not in journal, "a secret value is in the journal"
        assert value not in console, "a secret value is on the console"


def agent_journal(machine: harness.Machine) -> list[dict[str, Any]]:
    """The agent's own journal entries (JSON)."""
    out = machine.container.exec("journalctl", "-b", "--no-pager", "-o", "json",
                                 "_SYSTEMD_UNIT=agent.service", check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def lifecycle_results(machine: harness.Machine) -> tuple[list[Any], dict[str, int]]:
    """The simulator's recorded results for our instance, and its call counts."""
    state = machine.sim.state()
    results = [a.get("result") for a in state["actions"]
               if a.get("instance_id") == machine.sim.instance_id]
    return results, state.get("calls", {})


def test_happy_boot(e2e_setup: Setup, tmp_path: Path) -> None:
    """READY, secrets on tmpfs, the application started after agent-ready.target, CONTINUE."""
    started = time.monotonic()
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED,
                          prepare("")) as machine:
        c = machine.container
        assert machine.booted == "running", c.exec("systemctl", "--failed").stdout

        agent = c.show("agent.service", "ActiveState", "SubState", "Result", "ExecMainStatus",
                       "NRestarts", "StatusText", *TIMESTAMPS)
        assert (agent["ActiveState"], agent["SubState"], agent["Result"]) == (
            "active", "running", "success"), agent
        assert agent["NRestarts"] == "0", agent
        assert agent["StatusText"].startswith("ready"), agent

        status = c.exec("agent", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith("agent: ready (healthy)"), status.stdout
        doc = json.loads(c.exec("agent", "status", "--json", check=True).stdout)
        assert [p["state"] for p in doc["phases"]] == [
            "done", "done", "done", "skipped", "done"], doc["phases"]
        assert doc["instance"]["instance_id"] == machine.sim.instance_id

        # the packaged agent creates every client it uses, from its pruned models
        clients = c.exec(f"{PREFIX}/bin/python3", "-I", "-c", CLIENTS, check=True).stdout
        assert json.loads(clients) == {
            "pruned": True, "operations": {k: sorted(v) for k, v in OPERATIONS.items()}}

        # secrets: a private tmpfs, each file with its mode and owner, exact content
        fs_type = c.exec("stat", "-f", "-c", "%T", "/run/agent/secrets", check=True).stdout
        assert fs_type.strip() == "tmpfs"
        mounts = c.exec("findmnt", "-n", "-o", "FSTYPE,OPTIONS", "/run/agent/secrets").stdout
        assert mounts.startswith("tmpfs") and "noexec" in mounts, mounts
        for path, expected in EXPECTED_FILES.items():
            full = f"/run/agent/secrets/{path}"
            got = c.exec("stat", "-L", "-c", "%a %U %G", full, check=True).stdout.split()
            assert tuple(got) == expected, f"{full}: {got} != {expected}"
        assert c.exec_bytes("cat", "/run/agent/secrets/db.json") == DB_JSON.encode()
        assert c.exec_bytes("cat", "/run/agent/secrets/db-password").strip() == (
            DB_PASSWORD.encode())
        assert c.exec_bytes("cat", "/run/agent/secrets/tls/key.bin") == TLS_KEY
        app_env = parse_env_file(c.exec_bytes("cat", "/run/agent/secrets/app.env").decode())
        assert app_env == json.loads(APP_ENV_JSON), "env rendering"

        # the application: after agent-ready.target, tuned environment, secret via credential
        tuned = parse_env_file(c.exec("cat", "/run/agent/tuning/app.env", check=True).stdout)
        assert int(tuned["HEAP_MB"]) >= 256 and int(tuned["WORKERS"]) >= 3, tuned
        app = c.wait_for("demo-app.service", ["active"])
        assert app["SubState"] == "running", app
        seen = env_file(c.exec("cat", "/run/demo-app.seen", check=True).stdout)
        assert seen["HEAP_MB"] == tuned["HEAP_MB"] and seen["WORKERS"] == tuned["WORKERS"]
        assert seen["DB_SHA256"] == hashlib.sha256(DB_JSON.encode()).hexdigest()
        # the agent's own hand-off: a runtime drop-in + daemon-reload from inside its sandbox
        assert seen["HANDOFF_SHA256"] == seen["DB_SHA256"], "secrets.files[].units hand-off"
        ready = c.show("agent-ready.target", "ActiveState", "ActiveEnterTimestampMonotonic")
        app_start = c.show("demo-app.service", "ExecMainStartTimestampMonotonic")
        assert ready["ActiveState"] == "active"
        assert (int(agent["ActiveEnterTimestampMonotonic"])
                <= int(ready["ActiveEnterTimestampMonotonic"])
                <= int(app_start["ExecMainStartTimestampMonotonic"])), (agent, ready, app_start)

        # the journal: every phase reported, no secret anywhere
        entries = agent_journal(machine)
        phases = {e.get("AGENT_PHASE"): e.get("MESSAGE", "") for e in entries}
        for phase in PHASES:
            assert phase in phases and "done" in phases[phase], (phase, phases)
        assert any("boot ready" in str(e.get("MESSAGE")) for e in entries)
        assert_no_secret_in_logs(machine)

        results, calls = lifecycle_results(machine)
        assert results == ["CONTINUE"], results
        assert calls.get("CompleteLifecycleAction") == 1, calls

        # the boot time as systemd measured it
        agent_s = (int(agent[TIMESTAMPS[1]]) - int(agent[TIMESTAMPS[0]])) / 1e6
        userspace = c.show("", "UserspaceTimestampMonotonic")  # the manager itself
        to_ready = (int(ready["ActiveEnterTimestampMonotonic"])
                    - int(userspace["UserspaceTimestampMonotonic"])) / 1e6
        e2e_setup.note(f"happy: agent.service start -> READY {agent_s:.2f} s "
                       f"(ExecMainStartTimestampMonotonic -> ActiveEnterTimestampMonotonic)")
        e2e_setup.note(f"happy: container systemd start -> agent-ready.target {to_ready:.2f} s")

        # restarts: state and secrets survive, the hook is not completed twice, and the third
        # publish prunes the first generation (files of other owners: no CAP_FOWNER needed)
        for _ in range(2):
            c.exec("systemctl", "restart", "agent.service", check=True, timeout=120)
            again = c.wait_for("agent.service", ["active", "failed"])
            assert again["ActiveState"] == "active", again
        assert c.exec("agent", "status").returncode == 0
        generations = c.exec("sh", "-c", "ls -d /run/agent/secrets/.gen-*", check=True).stdout
        assert len(generations.split()) == 2, generations
        for path in EXPECTED_FILES:
            c.exec("test", "-f", f"/run/agent/secrets/{path}", check=True)
        assert c.wait_for("demo-app.service", ["active"])["SubState"] == "running"
        results, calls = lifecycle_results(machine)
        assert results == ["CONTINUE"] and calls.get("CompleteLifecycleAction") == 1, calls
        assert_no_secret_in_logs(machine)

        # non-root services: the secret's owner reaches its file through /run/agent (0711),
        # others cannot list the directory; tuning outputs (mode 0644) are readable by all
        as_daemon = c.exec("setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups",
                           "cat", "/run/agent/secrets/app.env")
        assert as_daemon.returncode == 0, as_daemon.stderr + c.exec(
            "namei", "-l", "/run/agent/secrets/app.env").stdout
        as_nobody = c.exec("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "ls", "/run/agent/secrets")
        assert as_nobody.returncode != 0, "anyone can list the secrets directory"
        tuning = c.exec("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "cat", "/run/agent/tuning/app.env")
        assert tuning.returncode == 0, tuning.stderr + c.exec(
            "namei", "-l", "/run/agent/tuning/app.env").stdout
    e2e_setup.note(f"happy: scenario {time.monotonic() - started:.0f} s")


def test_missing_secret(e2e_setup: Setup, tmp_path: Path) -> None:
    """A secret that does not exist: the unit fails, the application never starts, ABANDON."""
    started = time.monotonic()
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED,
                          prepare(MISSING)) as machine:
        c = machine.container
        # The first failed attempt fails the start job (and agent-ready.target's and the
        # application's with it); Restart=on-failure then re-runs the boot every 5 s until
        # the start limit (StartLimitBurst=) leaves the unit failed.
        agent = c.wait_for("agent.service", ["failed"], timeout=120)
        assert agent["ExecMainStatus"] == "1", agent

        ready = c.show("agent-ready.target", "ActiveState", "ActiveEnterTimestampMonotonic")
        assert ready["ActiveState"] != "active" and ready["ActiveEnterTimestampMonotonic"] == "0"
        app = c.show("demo-app.service", "ActiveState", "ExecMainStartTimestampMonotonic")
        assert app["ActiveState"] != "active", app
        assert app["ExecMainStartTimestampMonotonic"] == "0", "demo-app was started"
        assert c.exec("test", "-e", "/run/demo-app.seen").returncode != 0

        status = c.exec("agent", "status")
        assert status.returncode == 1, status.stdout + status.stderr
        assert status.stdout.startswith("agent: failed"), status.stdout
        assert "prod/missing" in status.stdout, status.stdout
        for path in EXPECTED_FILES:  # nothing of a failed boot is published
            assert c.exec("test", "-e", f"/run/agent/secrets/{path}").returncode != 0, path

        results, calls = lifecycle_results(machine)
        assert results == ["ABANDON"], results
        assert calls.get("CompleteLifecycleAction") == 1, calls
        assert_no_secret_in_logs(machine)
        assert c.show("demo-app.service", "ExecMainStartTimestampMonotonic") == {
            "ExecMainStartTimestampMonotonic": "0"}, "demo-app started after a retry"
        e2e_setup.note(f"missing secret: agent.service failed ({agent['Result']}) after "
                       f"{int(agent['NRestarts']) + 1} attempts, ExecMainStatus=1, ABANDON once")
    e2e_setup.note(f"missing secret: scenario {time.monotonic() - started:.0f} s")


def test_remove_and_purge(e2e_setup: Setup, tmp_path: Path) -> None:
    """On a running machine: remove stops and disables, keeps /etc/agent; purge deletes it."""
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED,
                          prepare("")) as machine:
        c = machine.container
        c.wait_for("demo-app.service", ["active"])
        shutil.copy(e2e_setup.deb, c.root / "var/tmp/agent.deb")
        wants = "/etc/systemd/system/multi-user.target.wants"

        c.exec("dpkg", "-r", "instance-boot-agent", check=True, timeout=120)
        assert c.show("agent.service", "LoadState")["LoadState"] == "not-found"
        assert c.show("demo-app.service", "ActiveState")["ActiveState"] == "inactive"
        assert c.exec("findmnt", "/run/agent/secrets").returncode != 0, "secrets still mounted"
        assert c.exec("test", "-e", f"{wants}/agent.service").returncode != 0
        c.exec("test", "-f", "/etc/agent/agent.toml", check=True)

        c.exec("dpkg", "-i", "--force-confold", "/var/tmp/agent.deb", check=True, timeout=120)
        enabled = c.exec("systemctl", "is-enabled", "agent.service", "agent-ready.target")
        assert enabled.stdout.split() == ["enabled", "enabled"], enabled.stdout
        assert "@AWS_URL@" not in c.exec("cat", "/etc/agent/agent.toml").stdout  # kept ours

        c.exec("dpkg", "-P", "instance-boot-agent", check=True, timeout=120)
        for gone in ("/etc/agent", "/opt/instance-boot-agent", "/usr/bin/agent",
                     f"{wants}/agent.service", f"{wants}/agent-ready.target",
                     "/var/lib/instance-boot-agent"):
            assert c.exec("test", "-e", gone).returncode != 0, f"{gone} left after purge"


def test_baked_root_passes_bake_check_fix(e2e_setup: Setup, tmp_path: Path) -> None:
    """The image as a bake leaves it (the package installed, no systemd running, a history
    and the install's logs): ``agent bake-check --fix`` cleans them, then passes."""
    with harness.overlay(e2e_setup.rootfs, tmp_path) as root:
        harness.install_deb(root, e2e_setup.deb)
        (root / "root/.bash_history").write_text("dpkg -i /tmp/agent.deb\n")
        proc = harness.run(["systemd-nspawn", "--quiet", "-D", root, *harness.NSPAWN_COMMON,
                            "--private-network", "agent", "bake-check", "--fix"],
                           timeout=300, check=False, env=harness.CLEAN_ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "agent: bake-check --fix: removed 1 history file(s)" in proc.stdout
        assert "log file(s) under /var/log" in proc.stdout  # dpkg's log of the install
        assert not (root / "root/.bash_history").exists()
        assert (root / "var/log/dpkg.log").stat().st_size == 0
        manifest = json.loads((root / "etc/agent/image.json").read_text())
        assert manifest["installed_packages"]["database"] == "dpkg"
        assert manifest["installed_packages"]["count"] > 50
        assert manifest["security_updates_pending"] is False
        assert manifest["os_release"]["id"] == "debian"


CLIENTS = """
import json
from agent.cloud import service_models as models
from agent.cloud.aws import Aws
aws = Aws("us-east-1", endpoint_url="http://127.0.0.1:9")
print(json.dumps({"pruned": models.search_path() is not None, "operations": {
    service: sorted(aws.client(service).meta.service_model.operation_names)
    for service in models.OPERATIONS}}))
"""


def test_deb_contents(e2e_setup: Setup) -> None:
    """The .deb: its metadata, files, conffile, and nothing of the build or the test tools."""
    deb = str(e2e_setup.deb)
    depends = harness.run(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip().split(", ")
    # the interpreter the release's package was built with, and no other
    assert sorted(depends) == ["libsystemd0", f"python{harness.RELEASE.python}"], depends
    assert e2e_setup.deb.parent.name == harness.SUITE, e2e_setup.deb
    files = harness.run(["dpkg-deb", "-c", deb]).stdout
    names = {line.split()[5].removeprefix(".") for line in files.splitlines()}
    for wanted in ("/usr/bin/agent", "/usr/lib/systemd/system/agent.service",
                   "/usr/lib/systemd/system/agent-ready.target",
                   "/usr/lib/systemd/system/run-agent-secrets.mount",
                   "/usr/lib/systemd/system-preset/90-agent.preset", "/etc/agent/agent.toml",
                   "/opt/instance-boot-agent/pyvenv.cfg", MAN_PAGE, COMPLETION):
        assert wanted in names, wanted
    packages = {n.split("/")[6] for n in names
                if n.startswith("/opt/instance-boot-agent/lib/python3.") and n.count("/") > 6}
    for dependency in ("botocore", "pydantic", "pydantic_settings", "systemd"):
        assert dependency in packages, dependency
    for unwanted in ("moto", "boto3", "pip", "setuptools", "pytest", "psutil"):
        assert unwanted not in packages, unwanted
    assert not [n for n in names if "/agent/sim/" in n], "the simulator is in the package"
    # lean: botocore's data of the services the agent calls only, nothing that is never run
    size = e2e_setup.deb.stat().st_size
    e2e_setup.note(f"deb: {size / 2**20:.1f} MiB")
    assert size <= 10 * 2**20, f"the .deb is {size / 2**20:.1f} MiB"
    site = f"{PREFIX}/lib/python{harness.RELEASE.python}/site-packages"
    assert below(names, f"{site}/botocore/data/") == {
        *OPERATIONS, "_retry.json", "endpoints.json", "partitions.json",
        "sdk-default-configuration.json"}
    assert below(names, f"{site}/agent/data/models/") == {
        *OPERATIONS, "botocore-version", "handlers.json"}
    for gone in ("/systemd/test/", "/pydantic/mypy.py", "/pydantic/v1/", "examples-1.json"):
        assert not [n for n in names if gone in n], gone
    control = harness.run(["dpkg-deb", "-I", deb, "conffiles"]).stdout
    assert control.split() == ["/etc/agent/agent.toml"]
    with tempfile.TemporaryDirectory() as tmp:
        harness.run(["dpkg-deb", "-x", deb, tmp], timeout=120)
        staged = harness.run(["grep", "-rlI", "-e", ".cache/deb", "-e", str(harness.REPO),
                              tmp], check=False).stdout
        assert staged == "", f"build paths in the package: {staged}"
        shebang = Path(tmp, "usr/bin/agent").read_text().splitlines()[0]
        assert shebang == "#!/opt/instance-boot-agent/bin/python3 -I"
        assert_cli_docs(Path(tmp, MAN_PAGE.lstrip("/")), Path(tmp, COMPLETION.lstrip("/")))


def below(names: set[str], directory: str) -> set[str]:
    """The names of the files and directories right in ``directory``."""
    return {n[len(directory):].split("/")[0] for n in names
            if n.startswith(directory) and n != directory}


def assert_cli_docs(man_page: Path, completion: Path) -> None:
    """agent(8) and the completion of the packaged agent: every command and option of its
    parser (which has no demo: agent.sim is not packaged), and how to get the demo."""
    from agent.cli.commands import command_line

    roff = gzip.decompress(man_page.read_bytes()).decode().replace("\\-", "-")
    script = completion.read_text()
    line = command_line(demo=False)
    for name in line.commands:
        assert f"agent {name}" in roff, name
        assert name in script.split("_shtab_agent_subparsers=(")[1].split(")")[0], name
        for action in line.options[name]:
            for option in action.option_strings:
                assert option in script, (name, option)
                assert option in roff, option
    assert "agent demo" not in roff.split(".SH NOTES")[0], "demo listed in the man page"
    assert "make demo" in roff.split(".SH NOTES")[1]
    assert "demo" not in script


def test_rpm_builds(e2e_setup: Setup) -> None:
    """``make rpm``: a check of the spec's claims (production RPMs are built on AL2023/RHEL)."""
    del e2e_setup  # same preconditions (root, tools); the RPM itself is built here
    if not shutil.which("rpmbuild"):
        pytest.skip("rpmbuild is not installed (apt-get install rpm)")
    harness.run(["make", "-C", harness.REPO, "--no-print-directory", "rpm"], timeout=900,
                env=os.environ)
    (rpm,) = (harness.REPO / "dist").glob("instance-boot-agent-*.rpm")
    # the interpreter it was built with (here the machine's python3), nothing of the venv's
    interpreter = Path(os.path.realpath("/usr/bin/python3")).name  # python3.11
    requires = {line.split()[0] for line in
                harness.run(["rpm", "-qp", "--requires", rpm]).stdout.splitlines()}
    assert {r for r in requires if not r.startswith("rpmlib(")} == {
        interpreter, "systemd-libs", "systemd", "/bin/sh"}, requires
    listing = harness.run(["rpm", "-qpl", rpm]).stdout.split()
    site = f"{PREFIX}/lib/{interpreter}/site-packages"
    assert f"{PREFIX}/bin/python3" in listing and f"{site}/agent/cli/commands.py" in listing
    assert not [n for n in listing if "/agent/sim/" in n], "the simulator is in the package"
    for wanted in ("/usr/bin/agent", "/usr/lib/systemd/system/agent.service",
                   "/usr/lib/systemd/system-preset/90-agent.preset", "/etc/agent/agent.toml",
                   MAN_PAGE, COMPLETION):
        assert wanted in listing, wanted
    with rpm.open("rb") as packed:  # rpm2archive -: the payload as a .tar.gz on stdout
        payload = subprocess.run(["rpm2archive", "-"], stdin=packed, capture_output=True,
                                 check=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in (f".{MAN_PAGE}", f".{COMPLETION}"):
            tar.extract(member, tmp, filter="data")
        assert_cli_docs(Path(tmp, MAN_PAGE.lstrip("/")), Path(tmp, COMPLETION.lstrip("/")))
    assert harness.run(["rpm", "-qp", "--configfiles", rpm]).stdout.split() == [
        "/etc/agent/agent.toml"]
    scripts = harness.run(["rpm", "-qp", "--scripts", rpm]).stdout
    assert "preset agent.service agent-ready.target" in scripts, scripts


def test_harness_left_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    """After the scenarios: no network namespace, veth or overlay mount of this run is left."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    pid = os.getpid()
    assert f"agent-e2e-{pid}" not in harness.run(["ip", "netns", "list"], check=False).stdout
    assert f"ae{pid}h" not in harness.run(["ip", "-o", "link"], check=False).stdout
    base = str(tmp_path_factory.getbasetemp())
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert not [m for m in mounts if m.startswith(base)], "overlay mounts left behind"
