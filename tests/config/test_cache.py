"""The validated-configuration cache: the same configuration, without pydantic, or a miss."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from agentproc import IS_ROOT, clean_environment

from agent.config import cache as configcache
from agent.config import loader

REPO = Path(__file__).resolve().parents[2]


def everything(tmp_path: Path) -> Path:
    """packaging/agent.toml with every key uncommented, and a template source that exists."""
    text = (REPO / "packaging/agent.toml").read_text()
    text = re.sub(r"(?m)^#(?=[\[A-Za-z_])", "", text)
    source = tmp_path / "application.properties.in"
    source.write_text("${region}\n")
    text = text.replace("/etc/orders/application.properties.in", str(source))
    path = tmp_path / "agent.toml"
    path.write_text(text)
    tomllib.loads(text)
    return path


def same(view: Any, model: Any, where: str = "config") -> None:
    """The rebuilt configuration holds what the validated one holds, field by field, its
    compiled forms (``when`` conditions, values, profiles, resolved ids) included."""
    assert type(view) is type(model), f"{where}: {type(view)} != {type(model)}"
    if dataclasses.is_dataclass(model):
        for field in dataclasses.fields(model):
            same(getattr(view, field.name), getattr(model, field.name), f"{where}.{field.name}")
        for name in ("credential_name", "label", "in_budget", "kind", "enabled"):
            if hasattr(type(model), name):
                assert getattr(view, name) == getattr(model, name), f"{where}.{name}"
        return
    if isinstance(model, list | tuple):
        assert len(view) == len(model), where
        for index, (a, b) in enumerate(zip(view, model, strict=True)):
            same(a, b, f"{where}[{index}]")
        return
    if isinstance(model, dict):
        assert view.keys() == model.keys(), where
        for key in model:
            same(view[key], model[key], f"{where}.{key}")
        return
    if isinstance(model, ast.AST):
        assert ast.dump(view) == ast.dump(model), where
        return
    assert view == model, f"{where}: {view!r} != {model!r}"


def test_a_hit_is_the_configuration_that_was_validated(tmp_path: Path) -> None:
    path = everything(tmp_path)
    validated = configcache.load(str(path))  # a miss: validated, then stored
    assert isinstance(validated, loader.Config)
    assert oct(os.stat(configcache.cache_path()).st_mode & 0o777) == "0o600"
    with mock.patch.object(loader, "validate", wraps=loader.validate) as validate:
        cached = configcache.load(str(path))
    assert not validate.called and cached is not validated  # a hit: rebuilt, not validated
    same(cached, validated)
    assert cached == validated
    assert cached.secrets.outputs() != [] and len(cached.secrets.outputs()) == len(
        validated.secrets.outputs())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cached.state_dir = "/elsewhere"


def test_the_resident_hands_over_the_configuration_it_booted_with(tmp_path: Path) -> None:
    """A validated configuration and one from the cache dump the same (the resident's jobs
    rebuild it from the hand-off), and the rebuilt one holds what was validated."""
    path = everything(tmp_path)
    validated = configcache.load(str(path))
    cached = configcache.load(str(path))
    dumped = configcache.dump(validated)
    assert configcache.dump(cached) == dumped
    same(configcache.view(json.loads(json.dumps(dumped))), validated)


@pytest.mark.integration
def test_a_hit_imports_no_pydantic(tmp_path: Path) -> None:
    path = everything(tmp_path)
    configcache.load(str(path))
    code = ("import sys; from agent.config import cache as configcache; "
            f"cfg = configcache.load({str(path)!r}); "
            "print(type(cfg).__name__, sorted(m for m in sys.modules if 'pydantic' in m "
            "or m == 'agent.config.validator'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_environment(), check=True, timeout=60).stdout
    assert out.strip() == "Config []"


def test_the_key_holds_the_source_of_every_section(tmp_path: Path) -> None:
    """A section's module changed by an upgrade is a miss: every module that declares a
    section of the configuration is part of the cache's key, and every part exists."""
    package = Path(configcache.__file__).parent.parent
    assert [name for name in configcache.SCHEMA if not (package / name).is_file()] == []
    declared, todo = set(), [loader.Config]
    while todo:
        section = todo.pop()
        declared.add(section.__module__.removeprefix("agent.").replace(".", "/") + ".py")
        hints = typing.get_type_hints(section)
        for field in dataclasses.fields(section):
            todo += [t for t in _types(hints[field.name]) if dataclasses.is_dataclass(t)
                     and isinstance(t, type) and t.__module__.startswith("agent.")]
    assert len(declared) >= 8  # the whole, and its sections beside their subjects
    assert sorted(declared - set(configcache.SCHEMA)) == []


def _types(hint: Any) -> list[Any]:
    """``hint`` and the types inside it (``list[SecretFile]``, ``Annotated[...]``)."""
    return [hint, *(t for arg in typing.get_args(hint) for t in _types(arg))]


def hit(path: Path) -> bool:
    """Whether the configuration came from the cache (then nothing was validated)."""
    with mock.patch.object(loader, "validate", wraps=loader.validate) as validate:
        configcache.load(str(path))
    return not validate.called


def test_what_the_validation_read_is_its_key(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = everything(tmp_path)
    configcache.load(str(path))
    assert hit(path)
    path.write_text(path.read_text() + "\n")  # the file's bytes
    assert not hit(path) and hit(path)
    monkeypatch.setenv("AGENT_IMDS__TIMEOUT_SECONDS", "3")  # the environment
    assert not hit(path)
    assert configcache.load(str(path)).imds.timeout_seconds == 3
    source = tmp_path / "application.properties.in"  # a template a validator read
    source.write_text("${region} ${DB_PASSWORD}\n")
    with pytest.raises(loader.ConfigError, match=r"unknown variable \$\{DB_PASSWORD\}"):
        configcache.load(str(path))


def test_a_user_id_that_changed_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[[secrets.files]]\nsecret_id = "s"\npath = "x"\nowner = "nobody"\n')
    configcache.load(str(path))
    where = Path(configcache.cache_path())
    document = json.loads(where.read_text())
    assert ["owner", "nobody", 65534] in document["observed"]
    document["observed"] = [["owner", "nobody", 4242]]  # as if the image's nobody were another
    where.write_text(json.dumps(document))
    assert not hit(path)


@pytest.mark.parametrize("damage", ["corrupt", "readable", "symlink", "foreign", "format"])
def test_a_bad_cache_is_a_miss_never_an_error(tmp_path: Path, damage: str) -> None:
    path = everything(tmp_path)
    configcache.load(str(path))
    where = Path(configcache.cache_path())
    if damage == "corrupt":
        where.write_text('{"format": 1, "key": ')
    elif damage == "readable":
        where.chmod(0o644)
    elif damage == "symlink":
        (tmp_path / "real.json").write_bytes(where.read_bytes())
        (tmp_path / "real.json").chmod(0o600)
        where.unlink()
        where.symlink_to(tmp_path / "real.json")
    elif damage == "foreign":
        if not IS_ROOT:
            pytest.skip("giving the cache to another user needs root")
        os.chown(where, 65534, 65534)
    else:
        document = json.loads(where.read_text())
        document["config"] = {"m": "Config", "f": []}  # not what a dump looks like
        where.write_text(json.dumps(document))
    assert not hit(path)  # validated again (and stored again where it can be)


def test_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CONFIG_CACHE", "")
    path = everything(tmp_path)
    assert not hit(path) and not hit(path)


def test_errors_are_the_validations(tmp_path: Path) -> None:
    with pytest.raises(loader.ConfigError, match="no such file"):
        configcache.load(str(tmp_path / "absent.toml"))
    path = tmp_path / "agent.toml"
    path.write_text("mode = 'sometimes'\n")
    with pytest.raises(loader.ConfigError, match="mode"):
        configcache.load(str(path))
    assert not Path(configcache.cache_path()).exists()  # nothing cached from a failure


@pytest.mark.integration
def test_bake_check_primes_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "image"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "agent.service").symlink_to("/lib/systemd/system/agent.service")
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{root}/run/agent"\n[secrets]\ndir = "{root}/run/s"\n')
    proc = subprocess.run([sys.executable, "-m", "agent", "bake-check", "--config", str(path),
                           "--root", str(root)], capture_output=True, text=True,
                          env=clean_environment(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    cache = root / "var/lib/agent/config-cache.json"
    assert f"validated configuration cached in {cache}" in proc.stdout
    assert json.loads(cache.read_text())["format"] == configcache.FORMAT


@pytest.mark.integration
def test_a_boot_after_the_first_imports_no_pydantic(booter: Any) -> None:
    assert booter.run().returncode == 0  # a miss: validated, cached
    shutil.rmtree(booter.state_dir)  # the next instance's first boot (the cache is elsewhere)
    booter.world.cloud.launch(booter.world.group, booter.world.instance_id)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agent", "run", "--oneshot",
                           "--config", str(booter.config_path)], capture_output=True, text=True,
                          env=booter.env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "botocore.session" in imported  # the import log is complete
    assert not {m for m in imported if m.split(".")[0] in ("pydantic", "pydantic_settings",
                                                            "psutil")}
    assert "agent.tuning.profiles" not in imported  # no entry is a profile, a drop-in or a sysctl
    assert booter.results()[-1] == "CONTINUE"
