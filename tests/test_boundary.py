"""The failure boundary: a fault at any step of any phase ends the boot inside the contract.

A happy boot runs in-process once under a profiler to list every function of the agent it
calls (each is a step of some phase). Then, for each of those functions, a fresh boot is
run with that function failing at its first call, once as a bug (``RuntimeError``) and once
as the operating system (``OSError`` ENOSPC). Whatever fails, the boot must either be ready
(a fault where the design tolerates one) or have failed exactly as an expected failure does:
one phase ``failed`` with a one-line error (``internal error`` and the phase for a bug),
``state`` ``failed``, ``on_failure`` (ABANDON) sent when the hook was known, and ``READY``
never sent; never a traceback above debug level.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import DB, FILES, PLAIN, mine, shm_dir

from agent.boot.sequence import Boot
from agent.config import loader
from agent.service import notify as service
from agent.service.notify import Notifier
from agent.sim import World
from agent.state.recorder import Recorder

pytestmark = pytest.mark.integration  # every test here starts servers or processes

AGENT = Path(__import__("agent").__file__).parent
SIM = AGENT / "sim"
# Not steps of a boot: the boundary itself reports through these, and a fault injected into
# the recorder's own write is covered by test_state_write_failures_never_stop_a_boot.
MACHINERY = {"agent.boot.sequence", "agent.state.recorder"}
# the boundaries of what never fails a boot, beside their subjects (what they call is tested)
GUARDS = {("agent.lifecycle.hook", "signal"), ("agent.telemetry.metrics", "Telemetry.report")}


class Recording(Notifier):
    """A Notifier that keeps what it would send to systemd."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.sent: list[str] = []

    def send(self, *fields: str) -> None:
        self.sent.extend(fields)


class Harness:
    """One world; boots of the agent in this process, each with a fresh launch action."""

    def __init__(self, world: World, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.world = world
        self.root = root
        self.runs = 0
        for name, value in world.env().items():
            monkeypatch.setenv(name, value)
        self.text = (world.agent_config(root / "secrets", root / "STATE", mine(FILES))
                     + f'\n[[tuning.files]]\npath = "{root}/tuning/app.env"\n'
                       "[tuning.files.values]\nWORKERS = \"vcpus * 2 + 1\"\n")

    def boot(self, profile: Any = None, during: Callable[[], Any] = contextlib.nullcontext
             ) -> tuple[bool, dict[str, Any], Recording, str | None]:
        """A fresh boot: its verdict, state.json, the notifications, the hook's result.

        ``profile`` (a ``sys.setprofile`` function) watches the boot itself (``Boot.run``),
        ``during()`` is a context entered around it (and not around loading the config).
        """
        self.runs += 1
        state = self.root / f"state-{self.runs}"
        path = self.root / f"agent-{self.runs}.toml"
        path.write_text(self.text.replace(str(self.root / "STATE"), str(state)))
        cfg = loader.load(str(path))
        assert self.world.group and self.world.instance_id
        if all(a.result for a in self.world.cloud.actions(self.world.instance_id)):
            self.world.cloud.launch(self.world.group, self.world.instance_id)  # pending again
        rec = Recorder(str(state))
        rec.start()
        notify = Recording()
        boot = Boot(cfg, rec, notify, time.monotonic())
        if profile is not None:
            threading.setprofile(profile)
            sys.setprofile(profile)
        try:
            with during():
                ok = boot.run().ready
        finally:
            if profile is not None:
                sys.setprofile(None)
                threading.setprofile(None)  # type: ignore[arg-type]
        actions = self.world.cloud.actions(self.world.instance_id)
        return ok, json.loads((state / "state.json").read_text()), notify, actions[-1].result


@pytest.fixture(scope="module")
def shm() -> Iterator[Path]:
    """A private directory on /dev/shm (a real tmpfs, for root and others alike)."""
    with shm_dir("agent-boundary-") as path:
        yield path


@pytest.fixture(scope="module")
def steps(shm: Path) -> list[tuple[str, str]]:
    """Every agent function a happy boot calls: (module, qualified name)."""
    root = shm / "trace"
    root.mkdir()
    mp = pytest.MonkeyPatch()
    seen: set[tuple[str, str]] = set()

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            if filename.startswith(str(AGENT)) and not filename.startswith(str(SIM)):
                module = frame.f_globals.get("__name__", "")
                seen.add((module, frame.f_code.co_qualname))

    try:
        with World() as world:
            world.seed(secrets={"prod/db": json.dumps(DB), "prod/plain": PLAIN,
                                "prod/bin": b"\x00binary"})
            harness = Harness(world, root, mp)
            ok, doc, _, result = harness.boot(profile)
            assert ok and doc["state"] == "ready" and result == "CONTINUE", doc
    finally:
        mp.undo()
    found = sorted((m, q) for m, q in seen
                   if m not in MACHINERY and (m, q) not in GUARDS and "<" not in q)
    assert len(found) > 60  # the boot's steps are many: the trace worked
    return found


def resolve(module: str, qualname: str) -> tuple[Any, str, Callable[..., Any]]:
    """The owner (module or class) holding the function, its attribute name, the function."""
    owner: Any = sys.modules[module]
    *outer, name = qualname.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, name, owner.__dict__[name]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as sim:
        sim.seed(secrets={"prod/db": json.dumps(DB), "prod/plain": PLAIN,
                          "prod/bin": b"\x00binary"})
        yield sim


FAULTS: dict[str, Callable[[], BaseException]] = {
    "bug": lambda: RuntimeError("injected bug"),
    "enospc": lambda: OSError(errno.ENOSPC, "No space left on device"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_at_any_step_ends_inside_the_contract(
        steps: list[tuple[str, str]], world: World, shm: Path, fault: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(threading, "excepthook", service.log_thread_exception)  # as the agent
    (shm / fault).mkdir()
    harness = Harness(world, shm / fault, monkeypatch)
    outcomes: dict[str, list[str]] = {"ready": [], "failed": []}
    for module, qualname in steps:
        owner, name, function = resolve(module, qualname)
        if not inspect.isfunction(function):  # a class body run by an import, a property...
            continue
        fired = threading.Event()

        def failing(*args: Any, _function: Any = function, _fired: Any = fired,
                    **kwargs: Any) -> Any:
            if not _fired.is_set():
                _fired.set()
                raise FAULTS[fault]()
            return _function(*args, **kwargs)

        # The function, wherever the agent's modules hold it (``from x import f`` too).
        holders = [(owner, name)] + [
            (mod, attr) for mod in list(sys.modules.values())
            if getattr(mod, "__name__", "").startswith("agent.") and mod is not owner
            for attr, value in list(vars(mod).items()) if value is function]
        @contextlib.contextmanager
        def patched(_holders: Any = holders, _failing: Any = failing) -> Iterator[None]:
            with monkeypatch.context() as patch:
                for holder, attr in _holders:
                    patch.setattr(holder, attr, _failing)
                yield

        caplog.clear()
        ok, doc, notify, result = harness.boot(during=patched)
        step = f"{module}:{qualname}"
        noisy = [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]
        assert not noisy, f"{step}: a traceback above debug level"
        if not fired.is_set():
            continue  # not reached in this boot (a path of another configuration)
        if ok:
            assert doc["state"] == "ready", step
            assert result == "CONTINUE", step
            if step != "agent.service.notify:Notifier.ready":  # the one fault keeping READY back
                assert "READY=1" in notify.sent, step
            outcomes["ready"].append(step)
            continue
        outcomes["failed"].append(step)
        assert doc["state"] == "failed" and doc["condition"] == "error", step
        assert "READY=1" not in notify.sent, step
        failed = [p for p in doc["phases"] if p["state"] == "failed"]
        assert failed, f"{step}: no phase failed"
        assert all(p["state"] != "running" for p in doc["phases"]), step
        for phase in failed:
            assert "\n" not in phase["error"], step
            if fault == "bug" and "internal error" in phase["error"]:
                assert f"in the {phase['name']} phase" in phase["error"], step
        # a hook found, and no completion of it failed on the way out (its intent is then
        # left on record for the next run, and nothing was admitted)
        known = (doc["instance"].get("instance_id") and doc["lifecycle"].get("hook")
                 and not doc["lifecycle"].get("sending"))
        if known:
            assert result == "ABANDON", f"{step}: the hook got {result}"
        else:
            assert result is None, f"{step}: the hook got {result} though never found"
    assert len(outcomes["failed"]) > 30, outcomes  # most steps cannot fail without failing


def test_state_write_failures_never_stop_a_boot(world: World, shm: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first write, a state file that cannot be written is logged, not fatal."""
    (shm / "writes").mkdir()
    harness = Harness(world, shm / "writes", monkeypatch)
    from agent import fsutil

    real = fsutil.atomic_write
    calls = {"n": 0}

    def flaky(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith("state.json"):
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, *args, **kwargs)

    monkeypatch.setattr(fsutil, "atomic_write", flaky)
    ok, _, notify, result = harness.boot()
    assert ok and result == "CONTINUE" and "READY=1" in notify.sent


def test_a_boot_writes_its_state_at_each_phase_change_and_loses_no_field(
        world: World, shm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start, each phase starting and ending, the finish: field updates ride on those; and one
    more, synced, the launch hook's intent before its completion goes out."""
    (shm / "count").mkdir()
    harness = Harness(world, shm / "count", monkeypatch)
    from agent import fsutil

    real = fsutil.atomic_write
    written: list[dict[str, Any]] = []

    def counting(path: Any, data: bytes, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith("state.json"):
            written.append(json.loads(data))
        real(path, data, *args, **kwargs)

    monkeypatch.setattr(fsutil, "atomic_write", counting)
    ok, doc, _, result = harness.boot()
    assert ok and result == "CONTINUE"
    assert len(written) == 1 + 2 * 5 + 1 + 1, [d["phases"] for d in written]
    intent = [d["lifecycle"] for d in written if d["lifecycle"].get("sending")]
    assert [i["sending"] for i in intent] == ["CONTINUE"] and intent[0]["result"] is None
    assert written[-1] == doc and doc["state"] == "ready"
    assert doc["instance"]["instance_id"] == world.instance_id
    assert doc["secrets"] and doc["lifecycle"]["result"] == "CONTINUE"
    assert [p["state"] for p in written[0]["phases"]] == ["pending"] * 5  # start, at once
