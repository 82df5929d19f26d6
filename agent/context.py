"""The launch context: what differs from one launch of an image to the next.

One image is baked once and promoted unchanged from staging to production; what differs
per launch comes from the instance's own facts, never from user-data (DESIGN.md, "Launch
context"). This module holds those facts and the rules that use them:

* placeholders in secrets entries: ``{region}``, ``{account}``, ``{availability_zone}``,
  ``{instance_id}``, ``{instance_type}``, ``{group}``, ``{tag:KEY}`` and
  ``{tag:KEY|default}``; ``{{`` and ``}}`` are literal braces. :mod:`agent.placeholders`
  checks them at load; :meth:`LaunchContext.resolve` fills them in at boot (or in an offline
  plan);
* conditions (``when``) and tuning values read the launch facts ``region``, ``account``,
  ``availability_zone`` and ``group`` and ``tag('KEY')`` (:meth:`LaunchContext.scope`).

Tags and the group are fetched only when something needs them, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, BootError
from agent.expr import ExprError, Expression, Value, tag_scope
from agent.placeholders import Placeholder, parse

if TYPE_CHECKING:
    from agent.aws import Aws
    from agent.imds import Metadata


class ContextError(BootError):
    """A placeholder or condition needs a value this launch does not have."""


Tags = Mapping[str, str]


class LaunchContext:
    """This launch's facts, and its tags and group, each fetched the first time it is needed.

    ``tags`` and ``group`` are values, or callables that fetch them (``tags``: None when
    unknown; ``group``: '' when the instance is in no group). ``missing`` words what to do
    about a value that is not there (a boot and an offline plan say different things).
    """

    def __init__(self, facts: Mapping[str, str], *,
                 tags: Tags | Callable[[], Tags] | None,
                 group: str | Callable[[], str] | None,
                 missing: Callable[[Placeholder | str], str]) -> None:
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
            from agent.imds import GROUP_TAG  # noqa: PLC0415
            from agent.lifecycle import instance_state  # noqa: PLC0415

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

    def value(self, placeholder: Placeholder) -> str:
        """A placeholder's value, or ContextError saying what is missing."""
        if placeholder.is_tag:
            found = self.tags().get(placeholder.key)
            if found is None:
                found = placeholder.default
        elif placeholder.name == "group":
            found = self.group() or None
        else:
            found = self.facts.get(placeholder.name) or None
        if found is None:
            raise ContextError(self._missing(placeholder))
        return found

    def resolve(self, text: str, where: str) -> str:
        """``text`` with its placeholders filled in; ContextError naming ``where`` and which."""
        try:
            return "".join(piece if isinstance(piece, str) else self.value(piece)
                           for piece in parse(text))
        except ContextError as exc:
            raise ContextError(f"{where}: {exc}") from None

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
    from agent.aws import describe, is_access_denied  # noqa: PLC0415 - botocore, boot only

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


def _offline(what: Placeholder | str) -> str:
    if what == "tags":
        return "the instance's tags are needed: give them, --tag KEY=VALUE for each"
    if isinstance(what, Placeholder) and what.is_tag:
        return f"no value for {what.text}: give --tag {what.key}=VALUE"
    name = what.name if isinstance(what, Placeholder) else what.strip("{}")
    option = OPTIONS.get(name)
    if option is None:
        return f"no value for {{{name}}}: it is known only on the instance itself"
    return f"no value for {{{name}}}: give {option}"


def _at_boot(what: Placeholder | str) -> str:
    if what == "tags":
        return "the instance's tags are not known"
    if isinstance(what, Placeholder) and what.is_tag:
        return (f"no value for {what.text}: the instance has no tag {what.key!r} (tag it, or "
                f"give a default: {{tag:{what.key}|default}})")
    name = what.text if isinstance(what, Placeholder) else what
    if name == "{group}":
        return "no value for {group}: the instance is in no Auto Scaling group"
    return f"no value for {name}"
