"""Requests going out to AWS, as the boot's scheduling needs to know them.

A boot runs on one core's worth of CPU while AWS answers: the main thread waits until the
secrets' first request is out, then until the hook lookup's is, before it computes the
tuning (:mod:`agent.boot.sequence`). :class:`Outgoing` tells those moments. Its handler is
registered on every AWS client the boot makes, on botocore's documented ``request-created``
event, which botocore emits for each attempt once its request is made and signed, just before
it is sent (a request that cannot be made, or signed, tells nothing). The first request of all sets
:attr:`Outgoing.first` (the secrets are fetched by threads of their own); a request of a
thread that watches (the hook's lookup, in its thread) sets that thread's event.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

EVENT = "request-created"  # botocore's: an attempt's request made, signed, about to be sent


class Outgoing:
    """Events set when requests go out: :attr:`first`, and ``with outgoing.watch(event):``."""

    def __init__(self) -> None:
        self.first = threading.Event()  # set when a first request goes out, from any thread
        self._watched = threading.local()  # .event: what this thread's next request sets

    def handlers(self) -> list[tuple[str, Callable[..., None]]]:
        """The botocore event handlers to register on every client (``client.meta.events``)."""
        return [(EVENT, self.request_made)]

    def request_made(self, **kwargs: Any) -> None:
        """botocore's ``request-created``: a request of this thread is going out."""
        self.first.set()
        event = getattr(self._watched, "event", None)
        if event is not None:
            event.set()

    @contextlib.contextmanager
    def watch(self, event: threading.Event) -> Iterator[None]:
        """Within the block, ``event`` is set when this thread sends a request."""
        self._watched.event = event
        try:
            yield
        finally:
            self._watched.event = None
