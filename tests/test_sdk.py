"""botocore with its documentation generator (and urllib3's http2 package) on demand: clients
work as before, a boot loads neither, and whatever does use them (boto3, ``help()``) gets the
real modules. Each case runs in a fresh interpreter, since the stand-in only ever goes in before
botocore's client is loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from agentproc import Booter

from agent import sdk
from agent.sim import World


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


@pytest.fixture(scope="module")
def world() -> Any:
    with World() as w:
        w.seed(secrets={"prod/plain": "plain-secret-7f3a9c"})
        yield w


def test_clients_call_aws_without_the_docs_loaded(world: World) -> None:
    proc = python("""
        import sys
        from agent import sdk
        assert sdk.docs_on_demand()
        aws = sdk.load()
        import botocore.session
        client = botocore.session.get_session().create_client("secretsmanager")
        print(client.get_secret_value(SecretId="prod/plain")["SecretString"])
        print(repr(client.get_secret_value.__doc__))
        print(sorted(m for m in sys.modules if m.startswith("botocore.docs")))
        assert not sdk.docs_on_demand()  # once is all: never over modules already there
    """, world.env())
    assert proc.returncode == 0, proc.stderr
    value, doc, loaded = proc.stdout.splitlines()
    assert value == "plain-secret-7f3a9c"
    assert doc == "''"  # the boot reads no docstring: none is generated
    # the two stand-ins, and the one small module botocore.handlers takes from the package
    assert loaded == "['botocore.docs', 'botocore.docs.docstring', 'botocore.docs.utils']"


def test_whatever_reads_the_docs_gets_botocores_own(world: World) -> None:
    proc = python("""
        import sys
        from agent import sdk
        sdk.docs_on_demand()
        import boto3  # boto3's docstrings import LazyLoadedDocstring: the real module loads
        import botocore.docs.docstring as real
        assert getattr(real, "__getattr__", None) is None, "still the stand-in"
        assert hasattr(real.ClientMethodDocstring, "_write_docstring")  # botocore's own
        client = boto3.client("secretsmanager")
        print(client.get_secret_value(SecretId="prod/plain")["SecretString"])
        from botocore.docs.method import document_model_driven_method  # the generator works
        print("botocore.docs.service" in sys.modules or callable(document_model_driven_method))
    """, world.env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["plain-secret-7f3a9c", "True"]


def test_without_a_stand_in_when_botocore_s_client_is_loaded() -> None:
    import botocore.client  # noqa: F401 - loaded here, as in any test process

    before = sys.modules.get(sdk.DOCSTRING)
    assert sdk.docs_on_demand() is False
    assert sys.modules.get(sdk.DOCSTRING) is before


def test_a_boot_never_imports_what_it_defers(booter: Booter,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert booter.run().returncode == 0, booter.outputs[-1]  # validates, and fills the cache
    booter.world.relaunch()
    shutil.rmtree(booter.state_dir)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    proc = booter.run()  # a first boot, as from a baked image: the configuration cached
    assert proc.returncode == 0, proc.stderr
    assert "pydantic" not in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"botocore.client", "botocore.session"} <= imported  # the boot did load botocore
    docs = {m for m in imported if m.startswith("botocore.docs")}
    assert docs == {"botocore.docs.utils"}, docs  # botocore.handlers' helpers, not the generator
    assert "importlib.metadata" not in imported  # urllib3.http2's __init__ did not run
    assert Path(booter.state_dir / "state.json").exists()


def test_urllib3_http2_runs_its_init_only_when_one_of_its_names_is_used(world: World) -> None:
    proc = python("""
        import sys
        from agent import sdk
        assert sdk.init_on_demand(sdk.HTTP2, sdk.HTTP2_NAMES)
        assert not sdk.init_on_demand(sdk.HTTP2, sdk.HTTP2_NAMES)  # once
        import botocore.session
        client = botocore.session.get_session().create_client("secretsmanager")
        print(client.get_secret_value(SecretId="prod/plain")["SecretString"])  # urllib3 works
        print("importlib.metadata" in sys.modules)
        from urllib3.http2 import inject_into_urllib3, probe  # the package's own, when asked
        print("importlib.metadata" in sys.modules, callable(inject_into_urllib3),
              probe.__name__)
    """, world.env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["plain-secret-7f3a9c", "False",
                                        "True True urllib3.http2.probe"]


def test_nothing_is_deferred_once_its_package_is_loaded() -> None:
    import urllib3  # noqa: F401 - loaded here, as in any test process

    assert sdk.init_on_demand(sdk.HTTP2, sdk.HTTP2_NAMES) is False
    assert sdk.init_on_demand("no_such_package_here.sub", ("x",)) is False
