"""The one exception root and the documented exit codes.

Every error a user can cause is an :class:`AgentError`: it carries its exit code and a
one-line message, and the CLI prints exactly that line. Anything else is a bug and keeps its
traceback. This module imports nothing, so the ``status``/``wait`` path can use it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own costs `agent status` (which imports this) 9 ms
if TYPE_CHECKING:
    from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1  # boot failed / status: failed
EXIT_USAGE = 2  # argparse
EXIT_NOT_FINISHED = 3  # status: not started or still running
EXIT_LOCKED = 75  # another `agent run` holds the lock (EX_TEMPFAIL)
EXIT_CONFIG = 78  # invalid configuration (EX_CONFIG)
EXIT_TIMEOUT = 124  # wait: timed out (as timeout(1))


class AgentError(Exception):
    """An expected failure: one line for the user, one exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentError):
    """The configuration is invalid (found at load time, before anything is fetched)."""

    exit_code = EXIT_CONFIG


class UsageError(AgentError):
    """A command line argparse cannot judge (e.g. a command this installation lacks)."""

    exit_code = EXIT_USAGE


class LockedError(AgentError):
    """Another `agent run` is already running with the same state directory."""

    exit_code = EXIT_LOCKED


class BootError(AgentError):
    """A phase of the boot failed; the boot is marked failed."""


class PhaseFailed(BootError):
    """A phase of the boot failed; its one line is recorded in state.json."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def control_at(text: str, allowed: str = "") -> int:
    """Where ``text`` holds its first control character (C0 or DEL, except those in
    ``allowed``), or -1: what systemd and a one-line message refuse."""
    if text.isprintable():  # the common case, in C
        return -1
    for index, char in enumerate(text):
        if (char < " " or char == "\x7f") and char not in allowed:
            return index
    return -1


def escape(text: str) -> str:
    """``text`` safe to print on one line of a terminal or a log: every character that is
    not printable (newline, ESC, BEL, C1 controls, bidirectional overrides, a lone surrogate)
    written as a backslash escape (``\\n``, ``\\x1b``, ``\\u202e``). What came from outside
    (tags, AWS answers, state.json) passes through here before it is printed."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
            else f"\\U{code:08x}")


def describe_failure(where: str, exc: BaseException) -> str:
    """One line: an AgentError's own message, else ``internal error`` in ``where``."""
    if isinstance(exc, AgentError):
        return str(exc)
    detail = escape(exception_detail(exc))
    return (f"internal error in {where}: {type(exc).__name__}" + (f": {detail}" if detail else "")
            + " (run with -v for the traceback)")


FOREIGN = ("botocore", "boto3", "urllib3", "http.client", "s3transfer")
"""Libraries whose exceptions may quote an answer's body: their text is never shown."""


def exception_detail(exc: BaseException) -> str:
    """An unexpected exception's text, one line of at most 200 characters; '' for an
    exception of an HTTP or AWS library (botocore's ResponseParserError embeds the body)."""
    module = type(exc).__module__ or ""
    if module.startswith(FOREIGN):
        return ""
    return " ".join(str(exc).split())[:200]


def closest(word: str, known: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The one known name most like ``word`` (a typo's hint), if any is close enough."""
    import difflib  # noqa: PLC0415 - only for a mistake

    return difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)


class ImdsError(BootError):
    """The instance metadata service could not be read."""


class AwsError(BootError):
    """An AWS API call failed permanently or ran out of retry time."""


class SecretsError(BootError):
    """A secret could not be fetched, rendered or published."""


class TuningError(BootError):
    """A tuning value could not be computed or written."""


class LifecycleError(BootError):
    """The lifecycle hook could not be found or completed."""
