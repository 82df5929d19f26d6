"""The one-line rules: what counts as a control character, and outside text escaped."""

from __future__ import annotations

import logging
import sys

import pytest

from agent.errors import control_at, describe_failure, escape
from agent.service.notify import Notifier, OneLineFormatter


@pytest.mark.parametrize(("text", "escaped"), [
    ("prod/db", "prod/db"),
    ("grüße, 東京", "grüße, 東京"),  # printable letters of any script stay as they are
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x1b]0;title\x07\x1b[2J", "\\x1b]0;title\\x07\\x1b[2J"),
    ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL, and the C1 control sequence introducer
    ("abc\u202edef", "abc\\u202edef"),  # a right-to-left override
    ("\u2028next", "\\u2028next"),  # a line separator
    ("bad\udcffbyte", "bad\\udcffbyte"),  # an undecodable byte (surrogateescape)
    ("\U000e0001tag", "\\U000e0001tag"),  # a language tag (format character)
])
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped
    assert escape(text).isprintable()


def test_control_at_is_what_systemd_and_one_line_refuse() -> None:
    assert control_at("plain text ü") == -1
    assert control_at("a\x1bb") == 1
    assert control_at("tab\there") == 3
    assert control_at("tab\there\nand newline", allowed="\t\n") == -1
    assert control_at("tab\there\x7f", allowed="\t\n") == 8
    assert control_at("\u202e") == -1  # printable or not, only C0 and DEL are control here


def test_an_internal_error_is_one_escaped_line() -> None:
    line = describe_failure("secrets", RuntimeError("bad\n\x1b[2Jthing"))
    assert line.isprintable()
    assert "RuntimeError: bad \\x1b[2Jthing" in line


def test_log_lines_are_escaped_tracebacks_kept() -> None:
    formatter = OneLineFormatter("agent: %(levelname)s %(message)s")
    record = logging.LogRecord("agent.secrets.publish", logging.ERROR, __file__, 1,
                               "secret %r: %s", ("x\x1b]0;t\x07", "AWS says\nforged"), None)
    assert formatter.format(record) == (
        "agent: ERROR secret 'x\\x1b]0;t\\x07': AWS says\\nforged")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("agent", logging.DEBUG, __file__, 1, "bug\n", (),
                                   sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "agent: DEBUG bug\\n" and lines[1].startswith("Traceback")


def test_the_status_told_to_systemd_is_one_field() -> None:
    """A newline in STATUS= would add a field of its own (READY=1, a forged status)."""
    sent: list[str] = []
    notifier = Notifier()
    notifier._notify = sent.append  # type: ignore[assignment]
    notifier.status("boot failed: region 'x\nREADY=1'")
    assert sent == ["STATUS=boot failed: region 'x\\nREADY=1'"]
