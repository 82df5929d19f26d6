"""The ``[secrets]`` section: owners resolved at load, conditions compiled, sources checked."""

from __future__ import annotations

import dataclasses
import pwd
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import cache
from agent.config.validator import section
from agent.schema import observed
from agent.secrets.config import SecretFile, SecretsConfig, source_problem


def test_owner_and_group_are_resolved_once_into_plain_fields() -> None:
    nobody = pwd.getpwnam("nobody")
    entry = section(SecretFile, secret_id="a", path="db/pw", owner="nobody", group="0",
                    when="region == 'eu-west-1'")
    assert (entry.uid, entry.gid) == (nobody.pw_uid, 0)
    assert {f.name for f in dataclasses.fields(entry) if not f.init} == {
        "uid", "gid", "condition"}  # not keys: a file cannot set them
    assert entry.condition is not None and entry.condition.names == {"region"}
    assert entry.credential_name == "pw" and entry.label == "secret 'a'"
    with pytest.raises(ValidationError, match="Unexpected keyword argument"):
        section(SecretFile, secret_id="a", path="x", uid=0)


def test_an_unknown_owner_is_one_line() -> None:
    with pytest.raises(ValidationError, match="no such user 'no-such-user-here'"):
        section(SecretFile, secret_id="a", path="x", owner="no-such-user-here")


def test_the_ids_a_validation_read_are_recorded() -> None:
    facts, token = observed.observing()
    try:
        section(SecretFile, secret_id="a", path="x", owner="nobody")
    finally:
        observed.stop(token)
    assert ("owner", "nobody", pwd.getpwnam("nobody").pw_uid) in facts


def test_a_template_source_names_only_known_variables(tmp_path: Path) -> None:
    source = tmp_path / "app.in"
    source.write_text("${DB_PASSWORD} ${region}\n")
    assert source_problem(str(source), {"DB_PASSWORD"}) == ""
    assert source_problem(str(source), {"DB_PASSWORDS"}).startswith(
        "unknown variable ${DB_PASSWORD} (did you mean ${DB_PASSWORDS}?): a template uses the "
        "names of secrets entries and ")
    assert source_problem(str(tmp_path / "absent"), set()) == ""  # the boot checks it


def test_a_cached_rebuild_is_the_validated_section(tmp_path: Path) -> None:
    source = tmp_path / "app.in"
    source.write_text("${db}\n")
    validated = section(SecretsConfig, files=[
        {"secret_id": "{region}/db", "name": "db", "publish": False, "when": "vcpus > 1"},
        {"parameter": "p", "source": "ssm", "path": "p", "owner": "nobody",
         "units": ["app.service"]}],
        templates=[{"source": str(source), "path": "app.conf"}])
    rebuilt = cache.rebuild(SecretsConfig, cache.dump(validated))
    assert type(rebuilt) is SecretsConfig and rebuilt == validated
    assert [(e.uid, e.gid) for e in rebuilt.files] == [(e.uid, e.gid) for e in validated.files]
    assert rebuilt.tag_uses() == validated.tag_uses() == []
    assert [w for w, _ in rebuilt.outputs()] == ["files[1]", "templates[0]"]
