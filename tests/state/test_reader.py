"""``state.json`` for its readers: the state directory's resolution, the configuration's
top-level scan, the strict JSON reader held to ``json.loads``, and the document's shape."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from agent.state import reader


def test_state_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('state_dir = "/from/config"\n[imds]\nbogus = "unvalidated"\n')
    monkeypatch.setenv("AGENT_CONFIG", str(cfg))
    assert reader.resolve_state_dir(None) == "/from/config"
    monkeypatch.setenv("AGENT_STATE_DIR", "/from/env")
    assert reader.resolve_state_dir(None) == "/from/env"
    assert reader.resolve_state_dir("/from/flag") == "/from/flag"
    monkeypatch.delenv("AGENT_STATE_DIR")
    cfg.write_text("not toml = = =")
    assert reader.resolve_state_dir(None) == reader.DEFAULT_STATE_DIR


@pytest.mark.parametrize(("text", "found"), [
    ('state_dir = "/srv/state"\n', "/srv/state"),
    ("state_dir = '/srv/state'  # literal\n", "/srv/state"),
    ("# state_dir = '/nope'\nmode = 'oneshot'\n[secrets]\nstate_dir = 'x'\n", False),
    ('state_dir = "/srv/\\u0041"\n', None),  # an escape: tomllib decides
    ('"state_dir" = "/srv/state"\n', None),  # a quoted key
    ('notes = """\nstate_dir = "/nope"\n"""\n', None),  # a multi-line string
    ("state_dir = 5\n", None),
    ('state_dir = "/srv/state" extra\n', None),
])
def test_the_top_level_scan_answers_only_what_it_can_tell(text: str,
                                                          found: str | bool | None) -> None:
    assert reader.top_level_string(text.encode(), "state_dir") == found


def test_state_dir_from_a_config_the_scan_cannot_read(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('notes = """\nstate_dir = "/nope"\n"""\nstate_dir = "/srv/\\u0041"\n')
    monkeypatch.delenv("AGENT_STATE_DIR", raising=False)
    assert reader.resolve_state_dir(None, str(config)) == "/srv/A"  # by tomllib


def _read_as_json_does(text: str) -> None:
    """statefile.loads returns what json.loads returns, or both refuse the text."""
    try:
        want: tuple[object, ...] = ("value", json.loads(text))
    except (ValueError, RecursionError):
        want = ("refused",)
    try:
        got: tuple[object, ...] = ("value", reader.loads(text.encode("utf-8", "surrogatepass")))
    except ValueError:
        got = ("refused",)
    assert repr(got) == repr(want), text


EDGES = ['"\\ud83d\\ude00"', '"\\ud83d"', '"\\ude00\\ud83d"', '"\\ud83dx"', '"\\u12"',
         '"\\uzzzz"', '"\\u00E9 \\/ \\b\\f\\n\\r\\t"', '"\\x"', '"a\x01"', '"a\x7f"',
         '"\u2028"', '"\\"', "01", "-",
         "-0", "1.", ".5", "1e", "1e+", "1E-5", "-1.5e+300", "1e400", "12345678901234567890",
         "-Infinity", "Infinity", "NaN", "nan", "[1,]", '{"a":1,}', "{,}", "[,1]", " [ ] ",
         "\ufeff{}", '{"a" : 1 , "a" : 2}', "[1 2]", '{"a" 1}', "{1:2}", "tru", "nul", "\u0661",
         "1_0", "0x10", "[" * 60 + "]" * 60, "\x0c1", "1\x0c", "", "   ", '{"a": 1} x',
         '{"a": 1}{}', "[true, false, null]"]


@pytest.mark.parametrize("text", EDGES)
def test_the_state_reader_reads_what_json_reads(text: str) -> None:
    _read_as_json_does(text)


def test_the_state_reader_on_cut_and_garbled_documents() -> None:
    doc = json.loads(STATE_EXAMPLE)
    rnd = random.Random(19)
    alphabet = [*'{}[]":,.-+eE019 \n\\utfnal', "\x01", "\u00e9"]
    for text in (json.dumps(doc, indent=2), json.dumps(doc, ensure_ascii=False)):
        for cut in range(len(text) + 1):
            _read_as_json_does(text[:cut])
        for _ in range(1500):
            chars = list(text)
            for _ in range(rnd.randint(1, 3)):
                k = rnd.randrange(len(chars))
                action = rnd.randrange(3)
                if action == 0:
                    del chars[k]
                elif action == 1:
                    chars.insert(k, rnd.choice(alphabet))
                else:
                    chars[k] = rnd.choice(alphabet)
            _read_as_json_does("".join(chars))


def test_the_state_reader_refuses_deep_nesting_and_other_encodings() -> None:
    with pytest.raises(ValueError, match="nested deeper than 64"):
        reader.loads(b"[" * 65 + b"]" * 65)
    with pytest.raises(ValueError):
        reader.loads('{"a": "caf\u00e9"}'.encode("latin-1"))


STATE_EXAMPLE = """{"version": 1, "state": "ready", "condition": "degraded",
 "updated_at": "2026-11-26T12:00:01Z", "pid": 4242, "boot_id": "b",
 "instance": {"instance_id": "i-0abc", "instance_type": "m5.xlarge", "region": "us-east-1"},
 "phases": [{"name": "metadata", "state": "done", "duration_ms": 12,
             "detail": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ /", "error": null}],
 "secrets": [{"secret_id": "prod/db", "path": "/run/agent/secrets/db.json", "version_id": "v1"}],
 "lifecycle": {"group": "web-asg", "hook": "agent-ready", "result": "CONTINUE", "heartbeats": 0},
 "numbers": [0, -0, 1.5, -2e10, 3E-2, 12345678901234567890, true, false, null, {}, []],
 "warnings": ["tuning: noswap unavailable"], "errors": []}"""




# -- the document as read ------------------------------------------------------------------


def test_no_file_is_no_boot_yet(tmp_path: Path) -> None:
    assert reader.read(str(tmp_path)) is None
    assert reader.read(str(tmp_path / "absent")) is None


def test_what_is_not_a_regular_document_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / reader.STATE_FILE
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"state": "ready"}')
    path.symlink_to(elsewhere)
    with pytest.raises(ValueError, match=f"^{path}: "):
        reader.read(str(tmp_path))  # a link is never followed
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match=f"^{path}: "):
        reader.read(str(tmp_path))  # never blocks on a FIFO
    path.unlink()
    path.write_bytes(b" " * (reader.MAX_STATE_BYTES + 1))
    with pytest.raises(ValueError, match=f"^{path}: "):
        reader.read(str(tmp_path))
    path.write_text('{"state": "ready"')
    with pytest.raises(ValueError, match=f"^{path} is not valid JSON$"):
        reader.read(str(tmp_path))
    assert stat.S_ISREG(os.lstat(path).st_mode)


@pytest.mark.parametrize(("doc", "problem"), [
    ([], "is not a JSON object"),
    ({"state": 1}, "state is not a str"),
    ({"pid": True}, "pid is not an int"),  # a bool is no int
    ({"pid": 0}, "pid 0 is out of range"),
    ({"pid": 1 << 22}, "pid 4194304 is out of range"),
    ({"phases": [{"name": "metadata"}, "x"]}, "phases holds something other than objects"),
    ({"warnings": ["a", 1]}, "warnings holds something other than strings"),
    ({"phases": [{"name": "m"}, {"duration_ms": "12"}]}, "phases[1].duration_ms is not an int"),
    ({"instance": {"instance_id": ["i-1"]}}, "instance.instance_id is not a str"),
    ({"termination": {"steps": [1]}}, "termination.steps holds something other than objects"),
    ({"termination": {"hook": "CONTINUE"}}, "termination.hook is not a dict"),
])
def test_a_field_of_another_type_is_named(doc: object, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        reader.check(doc, "state.json")
    assert str(info.value).startswith("state.json")
    assert str(info.value).endswith(problem)


def test_absent_and_null_fields_are_fine() -> None:
    doc = {"state": "ready", "pid": None, "instance": {"instance_id": None}, "phases": [],
           "unknown": {"anything": [1]}}
    assert reader.check(doc) is doc


def test_this_boot_and_its_processes() -> None:
    assert len(reader.boot_id()) == 36
    assert reader.pid_alive(os.getpid())
    assert reader.pid_alive(1)  # another user's: still alive
    assert not reader.pid_alive((1 << 22) + 1)
