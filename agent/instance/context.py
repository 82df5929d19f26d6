"""The launch context: what differs from one launch of an image to the next.

One image is baked once and promoted unchanged from staging to production; what differs
per launch comes from the instance's own facts, never from user-data
(docs/how-to/one-image-many-environments.md). This module holds those facts and the rules
that use them:

* placeholders in secrets entries: ``{region}``, ``{account}``, ``{availability_zone}``,
  ``{instance_id}``, ``{instance_type}``, ``{group}``, ``{tag:KEY}`` and
  ``{tag:KEY|default}``; ``{{`` and ``}}`` are literal braces. :mod:`agent.schema.placeholders`
  checks them at load; :meth:`LaunchContext.resolve` fills them in at boot (or in an offline
  plan);
* conditions (``when``) and tuning values read the launch facts ``region``, ``account``,
  ``availability_zone`` and ``group`` and ``tag('KEY')`` (:meth:`LaunchContext.scope`).

A placeholder's value comes from outside (anyone allowed to tag the instance sets a tag), so
it may hold only the characters of what it lands in (:data:`DESTINATIONS`): a tag cannot turn
a secret's name into another account's ARN. An empty value counts as absent.

Tags and the group are fetched only when something needs them, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import AgentError, BootError, escape
from agent.frozen import frozen
from agent.schema.expr import ExprError, Expression, Value, tag_scope
from agent.schema.placeholders import Placeholder, parse

if TYPE_CHECKING:
    from agent.cloud.aws import Aws
    from agent.cloud.imds import Metadata


class ContextError(BootError):
    """A placeholder or condition needs a value this launch does not have."""


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@frozen()
class Destination:
    """What a resolved text is, and the characters a placeholder's value may hold in it
    (AWS's own rules for the name)."""

    what: str  # "a secret name"
    allowed: str  # the characters besides letters and digits
    letters: str = _ALNUM
    optional: bool = False  # an empty result means the default (a region's)

    def refused(self, value: str) -> str:
        """The first character of ``value`` it may not hold ('' when all are allowed)."""
        return next((c for c in value if c not in self.letters and c not in self.allowed), "")

    @property
    def rule(self) -> str:
        """What it holds, in words."""
        return f"{'lowercase ' if self.letters.islower() else ''}letters, digits and {self.allowed}"


DESTINATIONS = {
    "secret_id": Destination("a secret name", "/_+=.@-"),
    "parameter": Destination("a parameter name", "_.-/"),
    "role_arn": Destination("a role name", "_+=,.@-"),
    "region": Destination("a region", "-", "abcdefghijklmnopqrstuvwxyz0123456789", True),
}
"""What each key with placeholders becomes (secret and parameter names: Secrets Manager's
and SSM's name rules; a role name: IAM's; a region: like ``us-east-1``)."""
VALUE_SHOWN = 100  # characters of a refused value that its message shows


Tags = Mapping[str, str]


class Missing(Protocol):
    """Words what to do about a value that is not there (or a tag that is empty)."""

    def __call__(self, what: Placeholder | str, empty: bool = False) -> str: ...


class LaunchContext:
    """This launch's facts, and its tags and group, each fetched the first time it is needed.

    ``tags`` and ``group`` are values, or callables that fetch them (``tags``: None when
    unknown; ``group``: '' when the instance is in no group). ``missing`` words what to do
    about a value that is not there (a boot and an offline plan say different things).
    """

    def __init__(self, facts: Mapping[str, str], *,
                 tags: Tags | Callable[[], Tags] | None,
                 group: str | Callable[[], str] | None,
                 missing: Missing) -> None:
        self.facts = dict(facts)
        self._tags = tags
        self._group = group
        self._missing = missing
        self._lock = threading.Lock()

    @classmethod
    def at_boot(cls, meta: Metadata, aws: Callable[[], Aws]) -> LaunchContext:
        """The context of this boot: the identity document's facts; the tags from IMDS (else
        one ``ec2:DescribeTags``) and the group from its tag (else
        ``DescribeAutoScalingInstances``), each only when first needed."""
        ident = meta.identity
        facts = {"region": ident.region, "account": ident.account_id,
                 "availability_zone": ident.availability_zone,
                 "instance_id": ident.instance_id, "instance_type": ident.instance_type}

        def tags() -> Tags:
            return meta.tags if meta.tags is not None else describe_tags(aws(), ident.instance_id)

        def group() -> str:
            from agent.cloud.autoscaling import instance_state  # noqa: PLC0415
            from agent.cloud.imds import GROUP_TAG  # noqa: PLC0415

            if meta.tags is not None:
                return meta.tags.get(GROUP_TAG, "")
            return instance_state(aws(), ident.instance_id)[1]

        return cls(facts, tags=tags, group=group, missing=_at_boot)

    @classmethod
    def offline(cls, instance_type: str, *, tags: Tags | None = None, region: str | None = None,
                account: str | None = None, group: str | None = None,
                zone: str | None = None) -> LaunchContext:
        """The context ``agent plan --instance-type`` is given: what is not given is missing,
        and a placeholder that needs it says which option gives it."""
        facts = {"instance_type": instance_type, "region": region or "",
                 "account": account or "", "availability_zone": zone or "",
                 "instance_id": ""}
        return cls(facts, tags=tags, group=group, missing=_offline)

    def tags(self) -> Tags:
        """The instance's tags (fetched once)."""
        with self._lock:
            if callable(self._tags):
                self._tags = dict(self._tags())
            if self._tags is None:
                raise ContextError(self._missing("tags"))
            return self._tags

    def group(self) -> str:
        """The Auto Scaling group ('' when none; fetched once)."""
        with self._lock:
            if callable(self._group):
                self._group = self._group()
            if self._group is None:
                raise ContextError(self._missing("{group}"))
            return self._group

    @property
    def tags_unknown(self) -> bool:
        """Whether the tags are neither given nor to be fetched (an offline plan without
        ``--tag``)."""
        return self._tags is None

    def require_tags(self, uses: Iterable[tuple[str, str]]) -> None:
        """ContextError naming each tag and where it is read, when the tags are unknown and
        ``uses`` ((key, tag) pairs) reads some."""
        if not self.tags_unknown:
            return
        where: dict[str, list[str]] = {}
        for key, tag in uses:
            where.setdefault(tag, []).append(key)
        if where:
            raise ContextError("the instance's tags are needed, give --tag KEY=VALUE for each: "
                               + ", ".join(f"{escape(repr(tag))} ({', '.join(keys)})"
                                           for tag, keys in where.items()))

    def value(self, placeholder: Placeholder) -> str:
        """A placeholder's value, or ContextError saying what is missing (an empty tag is
        absent: its default applies)."""
        empty = False
        if placeholder.is_tag:
            found = self.tags().get(placeholder.key) or None
            empty = found is None and placeholder.key in self.tags()
            if found is None:
                found = placeholder.default
        elif placeholder.name == "group":
            found = self.group() or None
        else:
            found = self.facts.get(placeholder.name) or None
        if found is None:
            raise ContextError(self._missing(placeholder, empty))
        return found

    def resolve(self, text: str, where: str, key: str) -> str:
        """``text`` (the value of ``key`` in the entry ``where``) with its placeholders filled
        in; ContextError naming the entry and the placeholder when one has no value, or one
        holds a character its destination (:data:`DESTINATIONS`) may not."""
        destination = DESTINATIONS[key]
        pieces = []
        for piece in parse(text):
            if isinstance(piece, str):
                pieces.append(piece)
                continue
            try:
                value = self.value(piece)
            except ContextError as exc:
                raise ContextError(f"{where}: {exc}") from None
            bad = destination.refused(value)
            if bad:
                shown = escape(value[:VALUE_SHOWN]) + ("..." if len(value) > VALUE_SHOWN else "")
                raise ContextError(
                    f"{where}: {key}: {piece.text} is '{shown}', which may not go into "
                    f"{destination.what}: '{escape(bad)}' is not allowed "
                    f"({destination.rule} only)")
            pieces.append(value)
        resolved = "".join(pieces)
        if not resolved and not destination.optional:
            raise ContextError(f"{where}: {key} {text!r} is empty here")
        return resolved

    def scope(self, expressions: Iterable[Expression]) -> dict[str, Value]:
        """The launch facts and tags those expressions read (fetching only what they need)."""
        needed = [e for e in expressions]
        scope: dict[str, Value] = {k: v for k, v in self.facts.items()
                                   if k in ("region", "account", "availability_zone")}
        if any("group" in e.names for e in needed):
            scope["group"] = self.group()
        if any(e.tags for e in needed):
            scope.update(tag_scope(self.tags()))
        return scope

    def holds(self, expression: Expression, facts: Mapping[str, Value], where: str) -> bool:
        """Whether a ``when`` condition is true here."""
        try:
            return bool(expression.evaluate({**facts, **self.scope([expression])}))
        except ExprError as exc:
            raise ContextError(f"{where}: when = {expression.text!r}: {exc}") from None


def describe_tags(aws: Aws, instance_id: str) -> dict[str, str]:
    """The instance's tags from ``ec2:DescribeTags`` (when IMDS does not serve them)."""
    from agent.cloud.aws import describe, is_access_denied  # noqa: PLC0415 - botocore, boot only

    tags: dict[str, str] = {}
    params: dict[str, Any] = {"Filters": [{"Name": "resource-id", "Values": [instance_id]}]}
    while True:
        try:
            reply = aws.call("ec2", "describe_tags", **params)
        except ContextError:
            raise
        except AgentError as exc:
            raise ContextError(f"instance tags: {exc}") from None
        except Exception as exc:
            if is_access_denied(exc):
                raise ContextError("instance tags: access denied: the instance role needs "
                                   "ec2:DescribeTags (or turn on instance metadata tags)"
                                   ) from None
            raise ContextError(f"instance tags: ec2 DescribeTags: {describe(exc)}") from None
        for item in reply.get("Tags") or []:
            if isinstance(item.get("Key"), str):
                tags[item["Key"]] = str(item.get("Value", ""))
        params["NextToken"] = reply.get("NextToken") or ""
        if not params["NextToken"]:
            return tags


OPTIONS = {"region": "--region REGION", "account": "--account ACCOUNT",
           "availability_zone": "--availability-zone ZONE", "group": "--group NAME"}


def _offline(what: Placeholder | str, empty: bool = False) -> str:
    if what == "tags":
        return "the instance's tags are needed: give them, --tag KEY=VALUE for each"
    if isinstance(what, Placeholder) and what.is_tag:
        return f"no value for {what.text}: give --tag {what.key}=VALUE" + (
            " (an empty value counts as absent)" if empty else "")
    name = what.name if isinstance(what, Placeholder) else what.strip("{}")
    option = OPTIONS.get(name)
    if option is None:
        return f"no value for {{{name}}}: it is known only on the instance itself"
    return f"no value for {{{name}}}: give {option}"


def _at_boot(what: Placeholder | str, empty: bool = False) -> str:
    if what == "tags":
        return "the instance's tags are not known"
    if isinstance(what, Placeholder) and what.is_tag:
        problem = (f"the instance's tag {what.key!r} is empty" if empty else
                   f"the instance has no tag {what.key!r}")
        return (f"no value for {what.text}: {problem} (tag it, or give a default: "
                f"{{tag:{what.key}|default}})")
    name = what.text if isinstance(what, Placeholder) else what
    if name == "{group}":
        return "no value for {group}: the instance is in no Auto Scaling group"
    return f"no value for {name}"
