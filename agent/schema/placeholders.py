"""Placeholders and ``when`` conditions: the launch context's language, checked at load.

``{region}``, ``{account}``, ``{availability_zone}``, ``{instance_id}``, ``{instance_type}``,
``{group}``, ``{tag:KEY}`` and ``{tag:KEY|default}``; ``{{`` and ``}}`` are literal braces.
:func:`parse` splits a text into literal pieces and placeholders (ValueError naming what is
wrong); :func:`condition` compiles a ``when`` expression. Their values at a launch come from
:class:`agent.instance.context.LaunchContext`.
"""

from __future__ import annotations

import re

from agent.errors import closest
from agent.frozen import frozen
from agent.schema.expr import ExprError, Expression, compile_expression

PLACEHOLDER_FACTS = ("region", "account", "availability_zone", "instance_id", "instance_type",
                     "group")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_TAG_KEY = re.compile(r"[^|{}]{1,128}")


@frozen()
class Placeholder:
    """One ``{...}`` of a text: a fact, or a tag (with its default, if any)."""

    text: str  # as written: "{tag:Environment|staging}"
    name: str  # a fact's name, or "tag"
    key: str = ""  # the tag's key
    default: str | None = None  # after "|": the value when the tag is absent

    @property
    def is_tag(self) -> bool:
        """Whether it reads a tag."""
        return self.name == "tag"


def parse(text: str) -> list[str | Placeholder]:
    """The literal pieces and placeholders of ``text``; ValueError naming what is wrong."""
    pieces: list[str | Placeholder] = []
    literal, pos = [], 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos:match.start()])
        pos = match.end()
        token, inner = match.group(), match.group(1)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif inner is None:
            raise ValueError(f"unbalanced {token!r} at {match.start()} (write {token * 2} for "
                             "a literal brace)")
        else:
            pieces.append("".join(literal))
            literal = []
            pieces.append(_placeholder(token, inner))
    literal.append(text[pos:])
    pieces.append("".join(literal))
    return [piece for piece in pieces if piece != ""]


def _placeholder(token: str, inner: str) -> Placeholder:
    name, colon, rest = inner.partition(":")
    if colon and name == "tag":
        key, bar, default = rest.partition("|")
        if not _TAG_KEY.fullmatch(key):
            raise ValueError(f"{token}: a tag placeholder is {{tag:KEY}} or {{tag:KEY|default}}")
        return Placeholder(token, "tag", key, default if bar else None)
    if inner in PLACEHOLDER_FACTS:
        return Placeholder(token, inner)
    close = closest(inner, [*PLACEHOLDER_FACTS, "tag:KEY"])
    hint = f"did you mean {{{close[0]}}}? " if close else ""
    raise ValueError(f"unknown placeholder {token} ({hint}placeholders: "
                     f"{', '.join('{' + n + '}' for n in PLACEHOLDER_FACTS)}, {{tag:KEY}}, "
                     "{tag:KEY|default})")


def placeholders(text: str) -> list[Placeholder]:
    """The placeholders of a text (checked)."""
    return [piece for piece in parse(text) if isinstance(piece, Placeholder)]


def condition(text: str) -> Expression:
    """A ``when`` expression, checked (ValueError naming the problem)."""
    try:
        return compile_expression(text)
    except ExprError as exc:
        raise ValueError(f"when = {text!r}: {exc}") from None
