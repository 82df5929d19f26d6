"""The configuration's field rules: inert markers until pydantic validates with them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from agentproc import clean_environment
from pydantic import ValidationError

from agent.config import loader
from agent.config.validator import section
from agent.errors import ConfigError
from agent.schema.fields import SECTION, Bounds, Check, Mode, span


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        loader.load(str(path))
    return str(info.value).removeprefix(f"config {path}: ")


@pytest.mark.parametrize(("text", "line"), [
    ('[secrets]\nunit_dir = "run/x"\n', "secrets.unit_dir: 'run/x' must be an absolute path"),
    ('[[secrets.files]]\nsecret_id = "a"\npath = "a"\nmode = "0666"\n',
     "secrets.files[0].mode: 0666 lets any user write the file"),
    ('[[secrets.files]]\nsecret_id = "a"\npath = "a"\nmode = true\n',
     'secrets.files[0].mode: must be an octal mode such as "0400"'),
    ('[[secrets.files]]\nsecret_id = "a"\npath = "a"\nowner = 4294967295\n',
     "secrets.files[0].owner: 4294967295 is not a valid id (0 to 4294967294)"),
    ('[termination]\nstop_units = ["app"]\n',
     "termination.stop_units[0]: 'app' is not a unit name such as \"app.service\""),
    ('[termination]\ncommands = [["rm", "-rf"]]\n',
     "termination.commands[0]: ['rm', '-rf'] is an argv list starting with an absolute path "
     "(no shell)"),
    ('[termination]\ncommands = [[]]\n', "termination.commands: an empty command"),
    ('[imds]\ntimeout_seconds = inf\n', "imds.timeout_seconds: Input should be a finite number"),
    ('[imds]\ntimeout_seconds = 61\n',
     "imds.timeout_seconds: Input should be less than or equal to 60"),
    ('[lifecycle]\nheartbeat_seconds = 0.5\n',
     "lifecycle.heartbeat_seconds: must be 0 (automatic) or at least 1, got 0.5"),
    ('[aws]\nregion = "eu\\nwest"\n',
     "aws.region: value 'eu\\nwest' holds a control character ('\\n' at 2)"),
    ('[secrets]\nmount_size = "16x"\n',
     "secrets.mount_size: String should match pattern '^[1-9][0-9]{0,8}[kmg]?$'"),
])
def test_a_rule_refuses_with_one_line_naming_the_key(tmp_path: Path, text: str,
                                                      line: str) -> None:
    assert load_error(tmp_path, text) == line


def test_a_rule_normalises_what_it_accepts() -> None:
    """What the file says is what the section holds after its rules: a mode as a number, a
    path normalised."""
    from agent.secrets.config import SecretFile, SecretsConfig

    secrets = section(SecretsConfig, dir="//run//agent/./secrets/", files=[
        {"secret_id": "a", "path": "a", "mode": "0o440"}])
    assert secrets.dir == "/run/agent/secrets"
    assert isinstance(secrets.files[0], SecretFile) and secrets.files[0].mode == 0o440


@dataclasses.dataclass(frozen=True)
class Sample:
    """A section of a test's own, built with the same markers."""

    __pydantic_config__ = SECTION

    mode: Mode = 0o644
    ratio: Annotated[float, span(0, 1), Check(lambda v: v)] = 0.5


def test_markers_are_inert_outside_validation() -> None:
    """Constructed directly (as the cache rebuilds), a section takes its values as given;
    validated, the same class refuses them."""
    assert Sample(mode=0o777).mode == 0o777  # the constructor checks no field rule
    assert section(Sample, mode="600") == Sample(mode=0o600)
    with pytest.raises(ValidationError, match="lets any user write"):
        section(Sample, mode="0777")
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        section(Sample, ratio=2)
    with pytest.raises(ValidationError, match="Unexpected keyword argument"):
        section(Sample, bogus=1)


def test_bounds_must_come_first() -> None:
    """Bounds after a Check would constrain nothing: refused when the schema is built."""

    @dataclasses.dataclass(frozen=True)
    class Wrong:
        __pydantic_config__ = SECTION

        ratio: Annotated[float, Check(lambda v: v), Bounds(le=1)] = 0.5

    with pytest.raises(TypeError, match="Bounds must come before"):
        section(Wrong)


@pytest.mark.integration
def test_the_sections_import_no_pydantic() -> None:
    """Every section module loads (and builds its defaults) without pydantic."""
    code = ("import sys; from agent.config import cache, document, loader; "
            "from agent.schema import fields; from agent.secrets import config; "
            "from agent.tuning import config; from agent.readiness import config; "
            "from agent.cloud import config; from agent.lifecycle import config; "
            "from agent.image import config; from agent.telemetry import config; "
            "document.Config(); "
            "print(sorted(m for m in sys.modules if m == 'agent.config.validator' "
            "or m.split('.')[0] "
            "in ('pydantic', 'pydantic_core', 'pydantic_settings')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_environment(), check=True, timeout=60).stdout
    assert out.strip() == "[]"
