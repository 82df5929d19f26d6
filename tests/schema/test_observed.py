"""The outside facts a validation read: recorded only while someone records."""

from __future__ import annotations

from agent.schema import observed


def test_facts_are_recorded_only_while_observing() -> None:
    observed.observe("owner", "before", 1)
    facts, token = observed.observing()
    try:
        observed.observe("owner", "nobody", 65534)
        observed.observe("file", "/etc/x.in", observed.file_digest(b"x"))
    finally:
        observed.stop(token)
    observed.observe("owner", "after", 2)
    assert facts == [("owner", "nobody", 65534), ("file", "/etc/x.in", observed.file_digest(b"x"))]
    assert len(observed.file_digest(b"x")) == 64 and observed.file_digest(b"y") != \
        observed.file_digest(b"x")
