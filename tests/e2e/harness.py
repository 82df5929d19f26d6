"""Real-systemd end-to-end harness.

The release under test is ``$AGENT_E2E_DIST`` (``make e2e DIST=trixie``; default bookworm):
its package is built with ``make deb DIST=...`` into ``dist/<release>/`` and booted under
that release's own systemd. A minimal root of the release is debootstrapped once into
``.cache/e2e/<release>/rootfs`` (``$AGENT_CACHE/e2e/...`` when set; rebuilt only when
missing or when its recipe changes).
Each scenario mounts an overlay over it, installs the agent's ``.deb`` inside (postinst
runs with systemd not running, as in an image build), creates a network namespace where the
simulated IMDS answers on 169.254.169.254:80 and the simulated AWS on a veth address the
host can reach too, and boots the tree with ``systemd-nspawn --boot``. The test drives the
container's systemd through ``nsenter``. Every step has a timeout; everything is torn down
in ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HarnessError(Exception):
    """A harness step failed (not an assertion about the agent)."""


@dataclass(frozen=True)
class Release:
    """A Debian release the packages are built for and booted on, and what it ships."""

    name: str
    title: str  # as its /etc/os-release PRETTY_NAME says
    python: str  # the interpreter the package is built with and depends on
    systemd: int  # the major version of its systemd


RELEASES = {r.name: r for r in (
    Release("bookworm", "Debian GNU/Linux 12 (bookworm)", "3.11", 252),
    Release("trixie", "Debian GNU/Linux 13 (trixie)", "3.13", 257),
)}
DEFAULT_RELEASE = "bookworm"
REPO = Path(__file__).resolve().parents[2]


def selected_release() -> Release:
    """``$AGENT_E2E_DIST`` (default bookworm); an unknown name is a HarnessError."""
    name = os.environ.get("AGENT_E2E_DIST") or DEFAULT_RELEASE
    if name not in RELEASES:
        raise HarnessError(f"AGENT_E2E_DIST={name!r}: the e2e tests know "
                           f"{', '.join(sorted(RELEASES))}")
    return RELEASES[name]


RELEASE = selected_release()
SUITE = RELEASE.name
# the slow caches: roots, downloaded packages, wheels ($AGENT_CACHE: shared by clones)
CACHE_ROOT = Path(os.environ.get("AGENT_CACHE") or REPO / ".cache")
CACHE = CACHE_ROOT / "e2e" / SUITE
ROOTFS = CACHE / "rootfs"
REPORT = CACHE / "report.txt"
DEBS = CACHE_ROOT / "debs" / SUITE  # downloaded packages, shared with scripts/debian-root
SIM_PYTHON = REPO / ".venv" / "bin" / "python"
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "libsystemd0")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMDS_ADDRESS = "169.254.169.254"
AWS_PORT = 4566
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_ENV = {"PATH": PATH, "LANG": "C.UTF-8"}
TOOLS = {  # command -> Debian package
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "dpkg-deb": "dpkg",
    "make": "make",
}
NSPAWN_COMMON = (
    "--register=no", "--keep-unit", "--private-users=no", "--resolv-conf=off",
    "--timezone=off", "--link-journal=no",
)


@dataclass
class Setup:
    """What every scenario boots (the cached root, the package) and the run's report."""

    rootfs: Path
    deb: Path
    report: list[str]

    def note(self, line: str) -> None:
        """A line for the e2e report (terminal summary and CACHE/report.txt)."""
        self.report.append(line)


def run(argv: Sequence[str | os.PathLike[str]], *, timeout: float = 60, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; raise HarnessError with its output when it fails.

    The command gets its own process group: on a timeout or an interrupt the whole group
    is killed (a build's pip, not only make).
    """
    args = [os.fspath(a) for a in argv]
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env=dict(env) if env is not None else None) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise HarnessError(f"timed out after {timeout:.0f} s: {' '.join(args)}") from None
            raise
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(args)} exited {result.returncode}:\n"
                           f"{stdout[-4000:]}{stderr[-4000:]}")
    return result


# -- preconditions ------------------------------------------------------------------------


def skip_reason() -> str | None:
    """Why the e2e cannot run here (None when it can); installs missing tools as root."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, overlay mounts, network namespaces, systemd-nspawn)"
    if not SIM_PYTHON.exists():
        return f"no project venv at {SIM_PYTHON.parent.parent} (run make venv)"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing and shutil.which("apt-get"):
        env = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        try:
            if run(install, timeout=600, check=False, env=env).returncode != 0:
                run(["apt-get", "update", "-qq"], timeout=300, env=env)
                run(install, timeout=600, env=env)
        except HarnessError as exc:
            return f"cannot install {', '.join(missing)}: {str(exc).splitlines()[0]}"
    missing = sorted(tool for tool in TOOLS if shutil.which(tool) is None)
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        return f"missing tools: {', '.join(missing)} (apt-get install {packages})"
    if "overlay" not in Path("/proc/filesystems").read_text():
        run(["modprobe", "overlay"], check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlayfs"
    return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock file (two runs must not build the same cache at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# -- the cached root file system ----------------------------------------------------------


def prepare_rootfs(root: Path) -> None:
    """Make the debootstrapped tree a quiet container: no gettys, a hostname, no apt cache."""
    for unit in ("console-getty.service", "getty@.service", "container-getty@.service",
                 "systemd-networkd-wait-online.service"):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "etc/hostname").write_text("agent-e2e\n")
    (root / "etc/machine-id").write_text("")
    for leftover in (root / "var/cache/apt").glob("*.bin"):
        leftover.unlink()


def mirror() -> str:
    """The Debian mirror debootstrap uses ($AGENT_E2E_MIRROR overrides)."""
    return os.environ.get("AGENT_E2E_MIRROR") or DEFAULT_MIRROR


def recipe() -> str:
    """Everything the cached root depends on; a change rebuilds it."""
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    setup = hashlib.sha256(inspect.getsource(prepare_rootfs).encode()).hexdigest()[:16]
    return json.dumps({"suite": SUITE, "variant": "minbase", "include": INCLUDE, "arch": arch,
                       "mirror": mirror(), "setup": setup}, sort_keys=True)


def ensure_rootfs() -> tuple[Path, float]:
    """The cached root (built now if needed) and the seconds spent building it."""
    with locked(CACHE / "rootfs.lock"):
        stamp = CACHE / "rootfs.recipe"
        wanted = recipe()
        if ROOTFS.is_dir() and stamp.exists() and stamp.read_text() == wanted:
            return ROOTFS, 0.0
        started = time.monotonic()
        fresh = CACHE / "rootfs.new"
        for old in (fresh, ROOTFS):
            if old.exists():
                shutil.rmtree(old)
        stamp.unlink(missing_ok=True)
        DEBS.mkdir(parents=True, exist_ok=True)
        run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
             f"--cache-dir={DEBS}", SUITE, fresh, mirror()], timeout=1200)
        prepare_rootfs(fresh)
        fresh.rename(ROOTFS)
        stamp.write_text(wanted)
        return ROOTFS, time.monotonic() - started


def machine() -> str:
    """The conditions a figure was measured under: CPUs, memory, kernel, the load now."""
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    one, five, fifteen = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, {total_kib / 2**20:.0f} GiB, Linux {os.uname().release}; "
            f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)")


def build_deb() -> Path:
    """``make deb DIST=<release>`` (a no-op when nothing changed); the package's path.

    For a release other than this machine's the build runs inside that release's root
    (debootstrapped the first time: allow for it).
    """
    run(["make", "-C", REPO, "--no-print-directory", "deb", f"DIST={SUITE}"], timeout=2400,
        env={**os.environ, "PATH": os.environ.get("PATH", PATH)})
    debs = sorted((REPO / "dist" / SUITE).glob("instance-boot-agent_*.deb"),
                  key=os.path.getmtime)
    if not debs:
        raise HarnessError(f"make deb produced no dist/{SUITE}/instance-boot-agent_*.deb")
    return debs[-1]


# -- per scenario: overlay, network, simulator, container --------------------------------


@contextlib.contextmanager
def overlay(lower: Path, base: Path) -> Iterator[Path]:
    """A writable overlay over ``lower``; its upper layer is deleted afterwards."""
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for path in (upper, work, merged):
        path.mkdir(parents=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", merged])
    try:
        yield merged
    finally:
        if run(["umount", merged], check=False, timeout=30).returncode != 0:
            run(["umount", "-l", merged], check=False, timeout=30)
        shutil.rmtree(upper, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def install_deb(root: Path, deb: Path) -> str:
    """``dpkg -i`` inside the tree, systemd not running there (as in an image build)."""
    proc = run(["systemd-nspawn", "--quiet", "-D", root, *NSPAWN_COMMON, "--private-network",
                f"--bind-ro={deb}:/tmp/agent.deb", "dpkg", "-i", "/tmp/agent.deb"],
               timeout=300, env=CLEAN_ENV)
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class Network:
    """A network namespace: IMDS address on its loopback, a veth pair to the host."""

    name: str
    host_ip: str
    ns_ip: str

    @property
    def path(self) -> str:
        """What ``--network-namespace-path`` takes."""
        return f"/run/netns/{self.name}"


def _sweep_stale_namespaces() -> None:
    """Delete namespaces of earlier runs that died before their cleanup."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    for match in re.finditer(r"^agent-e2e-(\d+)\b", listing, re.MULTILINE):
        pid = int(match.group(1))
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            for orphan in run(["ip", "netns", "pids", match.group(0)], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(orphan), signal.SIGKILL)  # a simulator of the dead run
            run(["ip", "netns", "del", match.group(0)], check=False)


def sweep_stale() -> None:
    """Leftovers of a run killed before its cleanup: containers, overlays, namespaces.

    Call it holding the run lock (:func:`locked` on ``CACHE / "run.lock"``): then every
    overlay over the cached root belongs to a dead run.
    """
    _sweep_stale_namespaces()
    merged = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if " - overlay " in line and f"lowerdir={ROOTFS}," in line]
    if not merged:
        return
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and os.readlink(entry / "root") in merged:
                os.kill(int(entry.name), signal.SIGKILL)
    for path in merged:
        run(["umount", "-l", path], check=False)


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """The scenario's network namespace (named after this process)."""
    _sweep_stale_namespaces()
    pid = os.getpid()
    name, host_if, ns_if = f"agent-e2e-{pid}", f"ae{pid}h", f"ae{pid}n"
    octet = 16 + pid % 200
    net = Network(name, f"10.231.{octet}.1", f"10.231.{octet}.2")
    run(["ip", "netns", "del", name], check=False)
    run(["ip", "link", "del", host_if], check=False)
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", name, "addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo"])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
        run(["ip", "link", "set", ns_if, "netns", name])
        run(["ip", "addr", "add", f"{net.host_ip}/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", name, "addr", "add", f"{net.ns_ip}/30", "dev", ns_if])
        run(["ip", "-n", name, "link", "set", ns_if, "up"])
        yield net
    finally:
        run(["ip", "netns", "del", name], check=False)
        run(["ip", "link", "del", host_if], check=False)


class Simulator:
    """``python -m agent.sim serve`` inside the namespace; its control API from the host."""

    def __init__(self, net: Network, seed: Mapping[str, Any], workdir: Path) -> None:
        self.net = net
        self.seed_file = workdir / "seed.json"
        self.seed_file.write_text(json.dumps(seed))
        self.log = workdir / "simulator.log"
        self.aws_url = f"http://{net.ns_ip}:{AWS_PORT}"
        self.instance_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self, timeout: float = 60) -> None:
        """Start and wait for the ready line."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.net.name, str(SIM_PYTHON), "-m", "agent.sim",
                 "serve", "--imds", f"{IMDS_ADDRESS}:80", "--aws", f"{self.net.ns_ip}:{AWS_PORT}",
                 "--seed", str(self.seed_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, timeout)
        if not line:
            raise HarnessError(f"the simulator did not start within {timeout:.0f} s "
                               f"(exit {self.proc.poll()}):\n{self.log_tail()}")
        self.instance_id = json.loads(line)["instance_id"]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def state(self) -> dict[str, Any]:
        """``GET /_sim/state``: recorded lifecycle actions and call counts."""
        with self._opener.open(f"{self.aws_url}/_sim/state", timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the simulator's stderr."""
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def _read_line(stream: Any, timeout: float) -> str:
    """One line from a pipe, or '' after ``timeout`` seconds or at EOF."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return str(stream.readline().decode().strip())


class Container:
    """A booted ``systemd-nspawn`` container, driven through ``nsenter``."""

    def __init__(self, root: Path, net: Network, workdir: Path) -> None:
        self.root = root
        self.net = net
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def boot(self, timeout: float = 60) -> None:
        """Start nspawn and find the container's init (PID 1 inside)."""
        with self.console.open("wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "--boot", *NSPAWN_COMMON,
                 "--console=pipe", f"--network-namespace-path={self.net.path}",
                 f"--machine={self.net.name}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=CLEAN_ENV)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited {self.proc.returncode}:\n"
                                   f"{self.console_tail()}")
            self.pid = _container_init(self.proc.pid)
            if self.pid:
                return
            time.sleep(0.05)
        raise HarnessError(f"no container init after {timeout:.0f} s:\n{self.console_tail()}")

    def exec(self, *argv: str, timeout: float = 30,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command in the container's namespaces with a clean environment."""
        return run(["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                   timeout=timeout, check=check, env=CLEAN_ENV)

    def exec_bytes(self, *argv: str, timeout: float = 30) -> bytes:
        """Like :meth:`exec`, stdout as bytes (journal exports, binary files)."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv],
            capture_output=True, timeout=timeout, env=CLEAN_ENV, check=False,
            stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def wait_booted(self, timeout: float = 180) -> str:
        """Wait until startup finished (``running`` or ``degraded``); the final state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            left = max(1.0, deadline - time.monotonic())
            try:
                proc = self.exec("systemctl", "is-system-running", "--wait", timeout=left)
            except HarnessError:
                break
            state = proc.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                return state
            time.sleep(0.2)  # the manager's socket is not there yet
        raise HarnessError(f"container not booted within {timeout:.0f} s (last: {state!r})\n"
                           f"{self.diagnostics()}")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict; unit "" for the manager itself."""
        argv = ["systemctl", "show", *([unit] if unit else []), "-p", ",".join(props)]
        out = self.exec(*argv, check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit: str, states: Sequence[str], timeout: float = 90) -> dict[str, str]:
        """Poll until the unit's ActiveState is one of ``states``."""
        deadline = time.monotonic() + timeout
        props: dict[str, str] = {}
        while time.monotonic() < deadline:
            props = self.show(unit, "ActiveState", "SubState", "Result", "ExecMainStatus",
                              "NRestarts")
            if props.get("ActiveState") in states:
                return props
            time.sleep(0.25)
        raise HarnessError(f"{unit} not {'/'.join(states)} within {timeout:.0f} s: {props}\n"
                           f"{self.diagnostics()}")

    def diagnostics(self) -> str:
        """``systemctl status agent``, the agent's journal and the console's end."""
        parts = []
        with contextlib.suppress(HarnessError, OSError):
            for argv in (("systemctl", "--no-pager", "status", "agent.service",
                          "agent-ready.target", "demo-app.service"),
                         ("journalctl", "--no-pager", "-b", "-u", "agent.service",
                          "-u", "run-agent-secrets.mount", "-o", "short-monotonic"),
                         ("agent", "status")):
                proc = self.exec(*argv, timeout=20)
                parts.append(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
        parts.append(f"--- console (last lines)\n{self.console_tail()}")
        return "\n".join(parts)

    def console_tail(self, limit: int = 4000) -> str:
        """The end of the container's console output."""
        try:
            return self.console.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """Power off (nspawn turns SIGTERM into a clean halt); kill what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if self.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)  # the whole PID namespace goes
                self.proc.kill()
                self.proc.wait(timeout=10)


def _container_init(nspawn_pid: int) -> int:
    """The host pid of the process that is PID 1 in a new PID namespace under nspawn."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if not nspid or nspid.group(1).split()[-1] != "1" or len(nspid.group(1).split()) < 2:
            continue
        if _descends_from(int(entry.name), nspawn_pid):
            return int(entry.name)
    return 0


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        match = re.search(r"^PPid:\s+(\d+)$", status, re.MULTILINE)
        pid = int(match.group(1)) if match else 0
    return False


# -- a whole scenario ---------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """A booted scenario: the container, the simulator, their network."""

    container: Container
    sim: Simulator
    net: Network
    booted: str  # what is-system-running said once startup finished


@contextlib.contextmanager
def scenario(rootfs: Path, deb: Path, workdir: Path, seed: Mapping[str, Any],
             prepare: Callable[[Path, str], None], boot_timeout: float = 180) -> Iterator[Machine]:
    """Network, simulator, overlay root with the package installed, ``prepare(root,
    aws_url)``, boot; on any failure inside, the diagnostics go to stderr (pytest shows them).
    """
    with network() as net:
        sim = Simulator(net, seed, workdir)
        try:
            sim.start()
            with overlay(rootfs, workdir) as root:
                install_deb(root, deb)
                prepare(root, sim.aws_url)
                container = Container(root, net, workdir)
                try:
                    container.boot()
                    booted = container.wait_booted(boot_timeout)
                    yield Machine(container, sim, net, booted)
                except BaseException:
                    print(f"=== diagnostics\n{container.diagnostics()}\n"
                          f"=== simulator log (end)\n{sim.log_tail()}", file=sys.stderr)
                    raise
                finally:
                    container.stop()
        finally:
            sim.stop()
