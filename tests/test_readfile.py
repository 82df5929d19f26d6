"""Files whose kind the agent does not control: a regular file only, read without blocking,
up to a stated size; anything else is one line naming the file and what it is."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agentproc import Booter, clean_environment

from agent import readfile
from agent.config.validator import section
from agent.errors import TuningError
from agent.instance.facts import nominal_facts
from agent.readfile import TEMPLATE_LIMIT, Unreadable, read_regular
from agent.tuning.config import TuningConfig
from agent.tuning.tuner import plan

KINDS = {  # how a source is made -> what the one line says it is
    "fifo": "a FIFO, not a regular file",
    "dev-zero": "a character device, not a regular file",
    "link-to-fifo": "a FIFO, not a regular file",
    "too-large": f"larger than 1 MiB ({TEMPLATE_LIMIT + 1} bytes)",
    "directory": "a directory, not a regular file",
}


def make_source(kind: str, where: Path) -> Path:
    """A template source of ``kind`` at (or, for /dev/zero, instead of) ``where``."""
    if kind == "dev-zero":
        return Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "link-to-fifo":
        os.mkfifo(where.with_name("real-fifo"))
        where.symlink_to(where.with_name("real-fifo"))
    elif kind == "too-large":
        where.write_bytes(b"x" * (TEMPLATE_LIMIT + 1))
    else:
        where.mkdir()
    return where


def within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s result, failing (not hanging) when it takes longer than ``seconds``."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(_outcome(call)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still blocked after {seconds} s"
    return box[0]


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:
        return exc


# -- the reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_only_a_regular_file_is_read(tmp_path: Path, kind: str) -> None:
    source = make_source(kind, tmp_path / "t.in")
    result = within(5, lambda: read_regular(source, TEMPLATE_LIMIT))
    assert isinstance(result, Unreadable) and str(result) == KINDS[kind]


def test_a_regular_file_up_to_the_limit(tmp_path: Path) -> None:
    (tmp_path / "t.in").write_bytes(b"y" * TEMPLATE_LIMIT)
    assert read_regular(tmp_path / "t.in", TEMPLATE_LIMIT) == b"y" * TEMPLATE_LIMIT
    (tmp_path / "link").symlink_to(tmp_path / "t.in")
    assert len(read_regular(tmp_path / "link", TEMPLATE_LIMIT)) == TEMPLATE_LIMIT
    with pytest.raises(Unreadable, match=r"^a symlink, not a regular file$"):
        read_regular(tmp_path / "link", TEMPLATE_LIMIT, follow=False)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent", TEMPLATE_LIMIT)
    assert readfile.size_text(65536) == "64 KiB" and readfile.size_text(100) == "100 bytes"


def test_a_file_whose_size_stat_does_not_tell(tmp_path: Path) -> None:
    """procfs answers st_size 0: the read itself stops at the limit."""
    assert read_regular("/proc/self/status", 1 << 16).startswith(b"Name:")
    with pytest.raises(Unreadable, match=r"^larger than 16 bytes$"):
        read_regular("/proc/self/status", 16)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-fifo"])
def test_a_source_that_became_a_fifo_fails_the_tuning_phase(tmp_path: Path, kind: str) -> None:
    """Absent at load (checked when the boot renders it), then not a regular file."""
    where = tmp_path / "app.conf.in"
    cfg = section(TuningConfig, **{"templates": [
        {"source": str(where if kind != "dev-zero" else tmp_path / "absent"),
         "path": str(tmp_path / "app.conf")}]})
    if kind == "dev-zero":  # the source, absent at load, is now /dev/zero
        (tmp_path / "absent").symlink_to("/dev/zero")
    else:
        make_source(kind, where)
    result = within(5, lambda: plan(cfg, nominal_facts("m5.xlarge")))
    assert isinstance(result, TuningError)
    source = cfg.templates[0].source
    assert str(result) == (f"tuning template {source} -> {tmp_path / 'app.conf'}: "
                           f"{KINDS[kind]}")


# -- the commands, as processes ----------------------------------------------------------------


PLAN = """state_dir = "{tmp}/state"
[[tuning.templates]]
source = "{source}"
path = "{tmp}/out/app.conf"
"""


def agent(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                  float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          env={**clean_environment(), **(env or {})}, timeout=30)
    return proc, time.monotonic() - started


def one_line_78(proc: subprocess.CompletedProcess[str], took: float, source: Path,
                kind: str) -> None:
    assert proc.returncode == 78, proc.stderr
    assert took < 10
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{source}: {KINDS[kind]}" in lines[0], lines[0]


# as another user than root, the rendered file is the caller's own (only root gives files away)
MINE_TOML = "" if os.geteuid() == 0 else f'owner = "{os.geteuid()}"\ngroup = "{os.getegid()}"\n'


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    return {"AGENT_CONFIG_CACHE": str(tmp_path / "cache.json")}


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-fifo", "too-large"])
def test_plan_refuses_a_source_that_is_not_a_regular_file(tmp_path: Path, kind: str,
                                                          cache: dict[str, str]) -> None:
    source = make_source(kind, tmp_path / "app.conf.in")
    config = tmp_path / "agent.toml"
    config.write_text(PLAN.format(tmp=tmp_path, source=source))
    proc, took = agent("plan", "--config", str(config), "--instance-type", "m5.xlarge", env=cache)
    one_line_78(proc, took, source, kind)
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-fifo"])
def test_a_cache_hit_with_a_source_replaced_by_a_fifo(booter: Booter, kind: str) -> None:
    """The cached configuration was validated with a regular source; it is not trusted once
    the source changed, and the new one is refused as at load."""
    where = booter.root / "db.properties.in"
    where.write_text("region=${region}\n")
    booter.configure(extra=f'\n[[secrets.templates]]\nsource = "{where}"\n'
                           'path = "db.properties"\n' + MINE_TOML)
    assert booter.run().returncode == 0
    assert Path(booter.env()["AGENT_CONFIG_CACHE"]).exists()  # the next run is a cache hit...
    where.unlink()
    if kind == "dev-zero":
        where.symlink_to("/dev/zero")
    else:
        make_source(kind, where)
    started = time.monotonic()
    proc = booter.run()  # ...but for the source
    one_line_78(proc, time.monotonic() - started, where, kind)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-fifo", "too-large"])
def test_run_refuses_a_secrets_template_that_is_not_a_regular_file(booter: Booter,
                                                                   kind: str) -> None:
    source = make_source(kind, booter.root / "db.properties.in")
    booter.configure(extra=f'\n[[secrets.templates]]\nsource = "{source}"\n'
                           'path = "db.properties"\n')
    started = time.monotonic()
    proc = booter.run()
    one_line_78(proc, time.monotonic() - started, source, kind)
    assert not (booter.state_dir / "state.json").exists()  # nothing began
    assert booter.world.cloud.calls("GetSecretValue") == []


@pytest.mark.integration
def test_a_config_file_that_is_a_fifo(tmp_path: Path, cache: dict[str, str]) -> None:
    os.mkfifo(tmp_path / "agent.toml")
    proc, took = agent("plan", "--config", str(tmp_path / "agent.toml"), "--instance-type",
                       "m5.xlarge", env=cache)
    assert proc.returncode == 78 and took < 10
    assert proc.stderr == f"agent: config {tmp_path / 'agent.toml'}: a FIFO, not a regular file\n"
    status, took = agent("status", env={"AGENT_CONFIG": str(tmp_path / "agent.toml"),
                                        "AGENT_STATE_DIR": ""})
    assert took < 10 and "Traceback" not in status.stderr  # the default state_dir is used
