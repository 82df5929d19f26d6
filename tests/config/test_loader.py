"""Configuration: file + environment, strictness, and one clear line per error (exit 78)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_origin

import pytest

from agent.config import loader, validator
from agent.errors import EXIT_CONFIG, ConfigError
from agent.schema import fields
from agent.state import reader

GOOD = """
state_dir = "/run/agent-test"
mode = "oneshot"

[imds]
endpoint = "http://127.0.0.1:8111/"
timeout_seconds = 1.5

[aws]
region = "eu-west-1"

[secrets]
dir = "/run/agent-test/secrets"

[[secrets.files]]
secret_id = "prod/db"
path = "db.json"
mode = "0440"
group = "root"

[[secrets.files]]
secret_id = "prod/api"
path = "app/api.env"
format = "env"

[[tuning.files]]
path = "/run/agent-test/tuning/app.env"
format = "env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"

[lifecycle]
hook_name = "agent-ready"
on_failure = "continue"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loader.load(str(write(tmp_path, text)))
    assert info.value.exit_code == EXIT_CONFIG
    message = str(info.value)
    assert "\n" not in message
    return message


def test_full_file_loads(tmp_path: Path) -> None:
    cfg = loader.load(str(write(tmp_path, GOOD)))
    assert cfg.state_dir == "/run/agent-test"
    assert cfg.mode == "oneshot"
    assert cfg.imds.endpoint == "http://127.0.0.1:8111"  # trailing slash dropped
    assert cfg.imds.timeout_seconds == 1.5
    assert cfg.imds.token_ttl_seconds == 21600  # default kept
    assert cfg.aws.region == "eu-west-1"
    assert [f.path for f in cfg.secrets.files] == ["db.json", "app/api.env"]
    assert cfg.secrets.files[0].mode == 0o440
    assert cfg.secrets.files[1].mode == 0o400
    assert cfg.secrets.files[1].format == "env"
    assert cfg.tuning.files[0].values["WORKERS"] == "vcpus * 2 + 1"
    assert cfg.lifecycle.on_failure == "continue"


def test_defaults_when_default_file_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "DEFAULT_CONFIG", "/nonexistent/agent.toml")
    cfg = loader.load()
    assert cfg.state_dir == "/run/agent"
    assert cfg.secrets.dir == "/run/agent/secrets"
    assert cfg.secrets.require_tmpfs is True
    assert cfg.lifecycle.on_failure == "abandon"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("AGENT_CONFIG", str(path))
    monkeypatch.setenv("AGENT_STATE_DIR", "/run/other")
    monkeypatch.setenv("AGENT_IMDS__TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("AGENT_LIFECYCLE__ENABLED", "false")
    cfg = loader.load()
    assert cfg.state_dir == "/run/other"
    assert cfg.imds.timeout_seconds == 7
    assert cfg.imds.endpoint == "http://127.0.0.1:8111"  # the file's other keys survive
    assert cfg.lifecycle.enabled is False
    assert cfg.lifecycle.hook_name == "agent-ready"


def test_environment_naming_no_key_is_ignored(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_NOT_A_KEY", "1")
    monkeypatch.setenv("AGENT_IMDS__NOT_A_KEY", "1")
    cfg = loader.load(str(write(tmp_path, GOOD)))
    assert cfg.imds.timeout_seconds == 1.5


def test_env_list_override_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SECRETS__FILES",
                       '[{"secret_id": "x", "path": "x.txt", "mode": "0400"}]')
    cfg = loader.load(str(write(tmp_path, GOOD)))
    assert [f.secret_id for f in cfg.secrets.files] == ["x"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ("[imds]\nendpint = 'http://x'\n", "imds.endpint: unknown key"),
        ("mode = 'forever'\n", "mode: Input should be 'daemon' or 'oneshot'"),
        ("[secrets]\ndir = 'relative'\n", "secrets.dir: 'relative' must be an absolute path"),
        ("[[secrets.files]]\npath = 'a'\n", "secrets.files[0]: a secretsmanager entry needs"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = '/etc/passwd'\n",
         "secrets.files[0].path: '/etc/passwd' must be a relative file name"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = '../escape'\n",
         "secrets.files[0].path: '../escape' may not contain"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'a/../../b'\n", "may not contain '.' or '..'"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = '.current'\n", "reserved for the agent"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\nmode = '0999'\n", "octal mode"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\nmode = '0666'\n",
         "secrets.files[0].mode: 0666 lets any user write the file"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\nmode = '4400'\n", "beyond 0777"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\nowner = 'no-such-user-x'\n",
         "no such user 'no-such-user-x'"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\ngroup = 'no-such-group-x'\n",
         "no such group 'no-such-group-x'"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\nformat = 'yaml'\n",
         "secrets.files[0].format"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\n"
         "[[secrets.files]]\nsecret_id = 'b'\npath = 'x'\n", "both write 'x'"),
        ("[[secrets.files]]\nsecret_id = 'a'\npath = 'x'\n"
         "[[secrets.files]]\nsecret_id = 'b'\npath = 'x/y'\n", "collide"),
        ("[[tuning.files]]\npath = 'rel.env'\n",
         "tuning.files[0].path: 'rel.env' must be an absolute"),
        ("[[secrets.files]]\nsource = 'ssm'\npath = 'x'\n", "an ssm entry needs parameter"),
        ("[[secrets.files]]\nsource = 'ssm'\nparameter = '/p'\nsecret_id = 's'\npath = 'x'\n",
         "an ssm entry needs parameter (and no secret_id"),
        ("[[secrets.files]]\nsource = 'vault'\nsecret_id = 's'\npath = 'x'\n",
         "secrets.files[0].source: Input should be 'secretsmanager' or 'ssm'"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'x'\nversion_stage = 'AWSPREVIOUS'\n"
         "version_id = 'v1'\n", "give version_stage or version_id, not both"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'x'\nunits = ['app']\n",
         "'app' is not a unit name"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'x'\nreload_units = ['a b.service']\n",
         "is not a unit name"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'a b'\nunits = ['app.service']\n",
         "credential name 'a b' is not valid"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'x'\non_change = [['reload-app']]\n",
         "starting with an absolute path"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'x'\non_change = [[]]\n",
         "secrets.files[0].on_change: an empty command"),
        ("[[secrets.files]]\nsecret_id = 's'\npath = 'a/x'\nunits = ['app.service']\n"
         "[[secrets.files]]\nsecret_id = 's'\npath = 'b/x'\nunits = ['app.service']\n",
         "both give app.service a credential named 'x'"),
        ("[secrets]\nmount_size = 'lots'\n", "secrets.mount_size"),
        ("[secrets]\nunit_dir = 'relative'\n",
         "secrets.unit_dir: 'relative' must be an absolute path"),
        ("[[tuning.files]]\npath = '/run/a.env'\n[tuning.files.values]\n'1X' = '1'\n",
         "not a valid variable name"),
    ],
)
def test_each_error_is_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                    expected: str) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"config {tmp_path / 'agent.toml'}: ")
    assert expected in message


def test_bad_toml_names_file_and_position(tmp_path: Path) -> None:
    message = load_error(tmp_path, "state_dir = \n")
    assert f"config {tmp_path / 'agent.toml'}: not valid TOML" in message
    assert "line 1" in message


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        loader.load(str(tmp_path / "absent.toml"))


def test_missing_file_named_by_env_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file"):
        loader.load()


def test_env_error_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_IMDS__MAX_WAIT_SECONDS", "never")
    message = load_error(tmp_path, GOOD)
    assert message.startswith("environment AGENT_IMDS__MAX_WAIT_SECONDS: imds.max_wait_seconds")


def test_several_errors_are_counted_on_one_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "a = 1\nb = 2\nc = 3\n")
    assert message.endswith("(and 2 more)")


def test_bad_expression_is_a_config_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[[tuning.files]]\npath = '/run/a.env'\n"
                                   "[tuning.files.values]\nHEAP = 'memroy_mib * 2'\n")
    assert "tuning.files[0].values" in message
    assert "memroy_mib" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("[imds]\ntimeout_seconds = 'x'\n", "imds.timeout_seconds"),
     ("nonsense = true\n", "nonsense: unknown key")],
)
@pytest.mark.integration
def test_cli_run_exits_78_with_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AGENT_") or k == "AGENT_CONFIG_CACHE"}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--oneshot", "--config",
                           str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == EXIT_CONFIG
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_cli_plan_exits_78_too(tmp_path: Path) -> None:
    path = write(tmp_path, "[lifecycle]\nbogus = 1\n")
    proc = subprocess.run([sys.executable, "-m", "agent", "plan", "--config", str(path),
                           "--instance-type", "m5.large"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_CONFIG
    assert "lifecycle.bogus: unknown key" in proc.stderr


def _locations(model: type[Any], header: str = "", loc: str = ""
               ) -> list[tuple[str, str, str]]:
    """(TOML table header, dotted location, field) for every key of the configuration."""
    found = []
    for name, annotation in fields.keys(model).items():
        found.append((header, f"{loc}{name}", name))
        inner = validator.section_of(annotation)
        if inner is not None:
            listed = get_origin(annotation) is list
            table = f"{loc}{name}".replace("[0]", "")
            found += _locations(inner, f"[[{table}]]\n" if listed else f"[{table}]\n",
                                f"{loc}{name}[0]." if listed else f"{loc}{name}.")
    return found


@pytest.mark.parametrize(("header", "where", "name"), _locations(loader.Config))
def test_every_misspelled_key_gets_the_closest_one(tmp_path: Path, header: str, where: str,
                                                   name: str) -> None:
    """Sections and keys, at every level and in list entries: 'did you mean'."""
    typo = name + name[-1]
    prefix = where.rpartition(".")[0]
    message = load_error(tmp_path, f"{header}{typo} = 1\n")
    assert message.startswith(f"config {tmp_path / 'agent.toml'}: "
                              f"{prefix + '.' if prefix else ''}{typo}: unknown key "
                              f"(did you mean {name!r}?)"), message


@pytest.mark.parametrize(("text", "expected"), [
    ("[secret]\ndir = '/run/x'\n", "secret: unknown key (did you mean 'secrets'?)"),
    ("[[secret.files]]\nsecret_id = 'a'\npath = 'x'\n",
     "secret: unknown key (did you mean 'secrets'?)"),
    ("[[secrets.files]]\nsecret_idd = 'a'\npath = 'x'\n",
     "secrets.files[0].secret_idd: unknown key (did you mean 'secret_id'?)"),
    ("[[tuning.profiles]]\nuze = 'jvm'\n",  # the typo, not "use: missing"
     "tuning.profiles[0].uze: unknown key (did you mean 'use'?) (and 1 more)"),
    ("[[tuning.profile]]\nuse = 'jvm'\n", "tuning.profile: unknown key (did you mean "
     "'profiles'?)"),
    ("[tuning.limits]\n", "tuning.limits: unknown key (known here: files, profiles, dropins, "
     "templates, sysctl, budget, unit_dir, history_file)"),
])
def test_section_typos_get_a_hint(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == f"config {tmp_path / 'agent.toml'}: {expected}"
