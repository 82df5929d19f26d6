"""The instance as the metadata phase hands it on: its clients and facts made once, on first
use, whichever phase asks first; a promotion keeps them."""

from __future__ import annotations

import threading
import time

import pytest

from agent.boot.instance import Instance, Once
from agent.cloud.imds import Identity, ImdsClient, Metadata
from agent.config.document import AwsConfig

IDENTITY = Identity("i-0abc", "m5.large", "us-east-1", "us-east-1a", "ami-1", "123456789012",
                    "x86_64", "10.0.0.1")


def test_once_makes_its_value_once_while_threads_ask_together() -> None:
    made: list[int] = []

    def make() -> int:
        time.sleep(0.05)  # the others ask meanwhile
        made.append(1)
        return len(made)

    once = Once(make)
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(once())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == [1] and seen == [1] * 8 and once.value == 1


def test_once_keeps_no_failure_the_next_use_tries_again() -> None:
    attempts: list[int] = []

    def make() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("not yet")
        return "made"

    once = Once(make)
    with pytest.raises(OSError, match="not yet"):
        once()
    assert once.value is None
    assert once() == "made" and once() == "made" and len(attempts) == 2


def test_an_instance_made_from_its_metadata_and_promoted_keeps_what_it_made() -> None:
    meta = Metadata(IDENTITY, {"Environment": "prod"}, "Warmed:Running")
    instance = Instance.known(meta, None, aws=AwsConfig(), imds=ImdsClient())
    assert instance.meta.warm and instance.context is not None
    assert instance.clients.value is None and instance.facts.value is None  # nothing made yet
    promoted = instance.in_service()
    assert promoted.meta.target_state == "InService" and not promoted.meta.warm
    assert promoted.meta.identity == IDENTITY and instance.meta.warm  # the original unchanged
    assert promoted.clients is instance.clients and promoted.facts is instance.facts
    assert promoted.earlier_boot is None and promoted.context is instance.context
