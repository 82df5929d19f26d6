"""Secrets: rendering, and publishing generations on real tmpfs mounts."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agent.errors import SecretsError
from agent.fsutil import TMPFS_MAGIC, fs_type
from agent.instance.context import LaunchContext
from agent.secrets import generations, publish, render
from agent.secrets.config import SecretFile, SecretsConfig
from agent.secrets.publish import Kept, Rendered, SecretRef
from agent.secrets.render import SecretValue
from agent.service import envfile
from agent.state.recorder import Recorder

DOC = {"username": "app", "password": "s3cr3t-\"quoted\"-$x", "port": 5432,
       "nested": {"host": "db.internal", "replicas": ["a", "b"]}}


def entry(**kw: Any) -> SecretFile:
    kw.setdefault("secret_id", "prod/db")
    kw.setdefault("path", "db.json")
    return SecretFile(**kw)


def rendered(item: SecretFile, value: SecretValue, index: int) -> bytes:
    """What the secrets phase writes for ``item`` configured as ``secrets.files[index]``."""
    kept = Kept(f"secrets.files[{index}]", item, SecretRef.of(item))
    return render.render(item, value, kept.label)


def text_value(doc: Any = DOC) -> SecretValue:
    return SecretValue("prod/db", "v1", text=json.dumps(doc) if not isinstance(doc, str) else doc)


def test_raw_string_is_byte_exact() -> None:
    value = text_value("line1\nline2 no newline at end")
    assert rendered(entry(), value, 0) == b"line1\nline2 no newline at end"


def test_raw_binary_is_byte_exact() -> None:
    blob = bytes(range(256)) * 3
    value = SecretValue("bin", "v1", binary=blob)
    assert rendered(entry(secret_id="bin"), value, 0) == blob


def test_key_selects_top_level_value() -> None:
    assert rendered(entry(key="password"), text_value(), 0) == DOC["password"].encode()
    assert rendered(entry(key="port"), text_value(), 0) == b"5432"


def test_key_is_jmespath_for_nested_values() -> None:
    assert rendered(entry(key="nested.host"), text_value(), 0) == b"db.internal"
    assert rendered(entry(key="nested.replicas[1]"), text_value(), 0) == b"b"
    assert json.loads(rendered(entry(key="nested"), text_value(), 0)) == DOC["nested"]


def test_env_format_reads_back_exactly() -> None:
    out = rendered(entry(format="env"), text_value({"USER": "app", "PASS": 'a "b" $c'}), 0)
    assert envfile.parse(out.decode()) == {"USER": "app", "PASS": 'a "b" $c'}


def test_env_format_of_a_sub_object() -> None:
    out = rendered(entry(format="env", key="nested"), text_value(), 0)
    assert envfile.parse(out.decode()) == {"host": "db.internal", "replicas": '["a","b"]'}


@pytest.mark.parametrize(
    ("kw", "value", "problem"),
    [
        ({"key": "nope"}, text_value(), "key 'nope' matches nothing"),
        ({"key": "password"}, text_value("not json at all"), "is not JSON"),
        ({"key": "x"}, SecretValue("prod/db", "v", binary=b"\x00"), "binary secret has no keys"),
        ({"format": "env"}, SecretValue("prod/db", "v", binary=b"\x00"), "binary secret"),
        ({"format": "env"}, text_value(["a", "b"]), "env format needs a JSON object"),
        ({"format": "env"}, text_value({"bad-name": "x"}), "not a valid environment variable"),
        ({"format": "env"}, text_value({"OK": "nul\0"}), "control characters"),
        ({"key": "a[?"}, text_value(), "neither a key nor a valid JMESPath"),
    ],
)
def test_data_errors_name_secret_and_entry_never_the_value(kw: dict[str, Any],
                                                           value: SecretValue,
                                                           problem: str) -> None:
    with pytest.raises(SecretsError) as info:
        rendered(entry(**kw), value, 3)
    message = str(info.value)
    assert "secret 'prod/db' (secrets.files[3] db.json)" in message
    assert problem in message
    assert "s3cr3t" not in message


def test_secret_value_repr_is_redacted() -> None:
    value = SecretValue("prod/db", "v1", text="hunter2")
    assert "hunter2" not in repr(value)
    assert "hunter2" not in str(value)
    assert "hunter2" not in repr([value, {"k": value}])
    assert "hunter2" not in repr(Rendered(entry(), "v1", b"hunter2"))


# -- where the files go --------------------------------------------------------------------


def test_storage_check_accepts_tmpfs_and_ramfs(tmpfs: Path, ramfs: Path) -> None:
    assert fs_type(tmpfs) == TMPFS_MAGIC
    publish.check_storage(tmpfs / "not" / "yet" / "there", True)
    publish.check_storage(ramfs / "secrets", True)


def test_storage_check_refuses_disk(disk_dir: Path) -> None:
    target = disk_dir / "secrets"
    with pytest.raises(SecretsError, match="not tmpfs/ramfs") as info:
        publish.check_storage(target, True)
    assert "tmpfs" in str(info.value)
    assert not target.exists()
    publish.check_storage(target, False)  # explicitly allowed


def test_rendered_files_keep_the_config_order(tmp_path: Path) -> None:
    cfg = SecretsConfig(dir=str(tmp_path), files=[entry(path="a", key="username"),
                                                   entry(path="b", key="port")])
    chosen = publish.select(cfg, LaunchContext.offline("m5.large"), dict)
    published = publish.Secrets(cfg, Recorder(str(tmp_path / "state")))
    published.context = LaunchContext.offline("m5.large")
    out = published._render(chosen, {SecretRef.of(entry()): text_value()}, {})
    assert [(r.entry.path, r.content) for r in out] == [("a", b"app"), ("b", b"5432")]


def rendered_set(contents: dict[str, bytes], **kw: Any) -> list[Rendered]:
    return [Rendered(entry(path=path, **kw), "v1", data) for path, data in contents.items()]


def test_files_get_their_owner_and_the_directory_its_traverse_mode(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files to another user needs root")
    root = tmp_path / "secrets"
    rendered = rendered_set({"db.json": b"x"}, mode=0o440, owner="nobody", group="nogroup")
    generations.publish(root, [r.item() for r in rendered],
                        publish.dir_mode([r.entry for r in rendered]))
    st = (root / "db.json").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 65534, 65534)
    assert stat.S_IMODE(root.stat().st_mode) == 0o711  # non-root reader may traverse
    assert publish.dir_mode([entry()]) == 0o700


def test_non_root_agent_cannot_give_files_away() -> None:
    if os.geteuid() != 0:
        pytest.skip("switches to nobody and back: needs root")
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))  # a tmpfs that nobody can reach
    shm.chmod(0o1777)
    os.setegid(65534)
    os.seteuid(65534)
    try:
        with pytest.raises(SecretsError, match=r"cannot give it to root:root: the agent runs "
                                               r"as uid 65534"):
            generations.publish(shm / "secrets",
                                [r.item() for r in rendered_set({"db.json": b"x"})], 0o700)
        assert not [p for p in (shm / "secrets").iterdir() if p.name.startswith(".gen")]
        # its own files it can publish
        mine = rendered_set({"db.json": b"x"}, owner="65534", group="65534")
        assert generations.publish(shm / "secrets", [r.item() for r in mine], 0o700).generation
    finally:
        os.seteuid(0)
        os.setegid(0)
        shutil.rmtree(shm)


def test_a_region_that_resolves_to_nothing_is_as_if_not_set() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db"
    ctx = LaunchContext.offline("m5.large", tags={}, region="us-east-1")
    by_arn = SecretRef.of(entry(secret_id=arn, region="{tag:Region|}"), ctx, "secrets.files[0]")
    assert by_arn.region == "eu-west-1"  # the ARN's, as without region
    by_name = SecretRef.of(entry(secret_id="prod/db", region="{tag:Region|}"), ctx, "x")
    assert by_name.region == ""  # the default region
    tagged = LaunchContext.offline("m5.large", tags={"Region": "ap-south-1"})
    assert SecretRef.of(entry(secret_id=arn, region="{tag:Region|}"), tagged, "x").region == (
        "ap-south-1")
