"""Rendering: a fetched secret value (:class:`SecretValue`), its bytes in each format, and
secret templates that combine several.

Formats of a ``[[secrets.files]]`` entry: ``raw`` (byte-exact), a ``key`` of a JSON secret
(a top-level key, else JMESPath), ``json`` (a sub-document) and ``env`` (a JSON object as
``NAME="value"`` lines systemd reads back exactly). A ``[[secrets.templates]]`` entry
substitutes ``${NAME}`` with the rendered value of the secrets entry named NAME, or a launch
fact (``$$`` is a literal ``$``). Errors name the secret and the entry, never a value.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from agent.errors import SecretsError
from agent.frozen import frozen
from agent.schema.expr import ExprError, template_names
from agent.service import envfile

if TYPE_CHECKING:
    from agent.secrets.config import SecretFile


@frozen(repr=False)
class SecretValue:
    """One fetched secret version. ``repr``/``str`` never show the value."""

    secret_id: str
    version_id: str
    arn: str = ""
    text: str | None = field(default=None, compare=False)
    binary: bytes | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        kind = "binary" if self.binary is not None else "string"
        return f"SecretValue({self.secret_id!r}, version={self.version_id!r}, {kind}=<redacted>)"

    __str__ = __repr__


def render(entry: SecretFile, value: SecretValue, where: str) -> bytes:
    """The bytes of one entry; ``where`` names it in errors (``secret 'x' (files[2] a)``)."""
    try:
        return _render(entry, value, where)
    except UnicodeEncodeError:
        raise SecretsError(f"{where}: the value is not valid Unicode (it holds a lone "
                           "surrogate, as JSON's \\ud800 escape makes one)") from None


def _render(entry: SecretFile, value: SecretValue, where: str) -> bytes:
    if entry.format == "raw" and not entry.key:
        if value.binary is not None:
            return bytes(value.binary)
        return (value.text or "").encode()
    document = _json_document(value, where, entry.format)
    selected = _select(document, entry.key, where) if entry.key else document
    if entry.format == "env":
        if not isinstance(selected, dict):
            raise SecretsError(f"{where}: env format needs a JSON object")
        try:
            return envfile.render((name, _scalar(v)) for name, v in selected.items()).encode()
        except envfile.EnvFileError as exc:
            raise SecretsError(f"{where}: {exc}") from None
    if entry.format == "json":
        return (json.dumps(selected, indent=2, ensure_ascii=False) + "\n").encode()
    if isinstance(selected, str):
        return selected.encode()
    return _scalar(selected).encode()


def _json_document(value: SecretValue, where: str, fmt: str) -> Any:
    if value.text is None:
        raise SecretsError(f"{where}: a binary secret has no keys ({fmt} format or key given)")
    try:
        return json.loads(value.text)
    except (ValueError, RecursionError):
        raise SecretsError(f"{where}: the secret is not JSON, so it has no keys") from None


def _select(document: Any, key: str, where: str) -> Any:
    """A top-level key, else a JMESPath expression (jmespath ships with botocore)."""
    if isinstance(document, dict) and key in document:
        return document[key]
    import jmespath  # noqa: PLC0415 - only for nested selections
    from jmespath.exceptions import JMESPathError  # noqa: PLC0415

    try:
        found = jmespath.search(key, document)
    except (JMESPathError, ValueError, TypeError, RecursionError):
        raise SecretsError(f"{where}: key {key!r} is neither a key nor a valid JMESPath") from None
    if found is None:
        raise SecretsError(f"{where}: key {key!r} matches nothing")
    return found


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def template_variables(text: str, where: str) -> list[str]:
    """The variables a template uses (SecretsError for a stray ``$``)."""
    try:
        return template_names(text)
    except ExprError as exc:
        raise SecretsError(f"{where}: {exc}") from None


def render_template(text: str, variables: Mapping[str, bytes | str], where: str) -> bytes:
    """A template with its variables filled in (every one must be given, as UTF-8 text)."""
    values: dict[str, str] = {}
    for name in template_variables(text, where):
        if name not in variables:
            raise SecretsError(f"{where}: unknown variable ${{{name}}} (a template uses the "
                               "names of secrets entries kept here, and the launch facts)")
        value = variables[name]
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise SecretsError(f"{where}: ${{{name}}} is binary, not text: a template "
                                   "can only hold text") from None
        values[name] = value
    try:
        return string.Template(text).substitute(values).encode()
    except UnicodeEncodeError:
        raise SecretsError(f"{where}: a value is not valid Unicode") from None
