"""The instance a boot runs on, as the metadata phase produces it for the phases after it.

:class:`Instance` holds what IMDS and the history said (the metadata, the launch context, this
instance's boot before this one) and the two things made from them on first use, each once
per boot, by whichever phase asks first (the others wait for it): the AWS clients (botocore
is loaded with them) and the machine's facts (which may ask ``DescribeInstanceTypes``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agent.frozen import frozen
from agent.instance.context import LaunchContext

if TYPE_CHECKING:
    from agent.cloud.aws import Aws, Handler
    from agent.cloud.config import AwsConfig
    from agent.cloud.imds import ImdsClient, Metadata
    from agent.instance.facts import Facts

T = TypeVar("T")


class Once(Generic[T]):
    """A value made on first use, once: a thread that asks while another makes it waits for
    that one (a failure is not kept: the next use tries again)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.value: T | None = None  # once made

    def __call__(self) -> T:
        """The value, made now if it is not yet."""
        with self._lock:
            if self.value is None:
                self.value = self._make()
            return self.value


@frozen()
class Instance:
    """The instance: its metadata, launch context and earlier boot (None: none known), and
    its AWS clients and machine facts, each made once, on first use."""

    meta: Metadata
    context: LaunchContext
    earlier_boot: dict[str, Any] | None
    clients: Once[Aws]
    facts: Once[Facts]

    @classmethod
    def known(cls, meta: Metadata, earlier_boot: dict[str, Any] | None, *, aws: AwsConfig,
              imds: ImdsClient, events: Sequence[Handler] = ()) -> Instance:
        """The instance ``meta`` describes; its clients as ``[aws]`` says, their credentials
        from ``imds``, ``events``' handlers registered on each."""
        identity = meta.identity

        def clients() -> Aws:
            from agent.cloud.aws import Aws  # noqa: PLC0415 - botocore, loaded on first use

            return Aws.from_config(aws, identity.region, imds=imds, events=events)

        def facts() -> Facts:
            from agent.instance.facts import read_facts  # noqa: PLC0415

            return read_facts(identity.instance_type,
                              describe=lambda name: made_clients().describe_instance_type(name))

        made_clients = Once(clients)
        return cls(meta, LaunchContext.at_boot(meta, made_clients), earlier_boot, made_clients,
                   Once(facts))

    def in_service(self) -> Instance:
        """The same instance, put InService (a warm pool's instance, promoted)."""
        return dataclasses.replace(self, meta=self.meta.in_service())
