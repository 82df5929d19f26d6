"""Fixtures of the real-systemd end-to-end tests: the cached root, the package, the report."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import FrameType

import harness
import pytest

_REPORT: list[str] = []
_STARTED = time.monotonic()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a CI timeout) unwinds like Ctrl-C, so that every cleanup runs."""
    del frame
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def e2e_setup() -> Iterator[harness.Setup]:
    """Skip without root/tools; else the rootfs (debootstrapped once) and the .deb.

    Holds the run lock for the session: one e2e run at a time uses the cache.
    """
    reason = harness.skip_reason()
    if reason:
        pytest.skip(reason)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with harness.locked(harness.CACHE / "run.lock"):
            _REPORT.append(f"machine at start: {harness.machine()}")
            _REPORT.append(f"release: {harness.RELEASE.title} (AGENT_E2E_DIST={harness.SUITE})")
            harness.sweep_stale()
            warm = harness.DEBS.is_dir() and any(harness.DEBS.glob("*.deb"))
            rootfs, seconds = harness.ensure_rootfs()
            built = (f"built in {seconds:.0f} s (debootstrap, package cache "
                     f"{'warm' if warm else 'cold'})" if seconds else "cached")
            _REPORT.append(f"rootfs: {built} ({rootfs})")
            started = time.monotonic()
            found = sorted((harness.REPO / "dist" / harness.SUITE).glob("*.deb"))
            before = {p: p.stat().st_mtime_ns for p in found}
            deb = harness.build_deb()
            how = "up to date, reused" if before.get(deb) == deb.stat().st_mtime_ns else "built"
            _REPORT.append(f"package: {deb.name} ({how}, {time.monotonic() - started:.0f} s)")
            yield harness.Setup(rootfs, deb, _REPORT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the e2e report and keep it in the release's cache (report.txt)."""
    if not _REPORT:
        return
    lines = [*_REPORT, f"e2e total: {time.monotonic() - _STARTED:.0f} s",
             f"machine at end: {harness.machine()}"]
    terminalreporter.section("agent e2e report")
    for line in lines:
        terminalreporter.write_line(line)
    harness.REPORT.parent.mkdir(parents=True, exist_ok=True)
    harness.REPORT.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n") + "\n".join(lines) + "\n")
