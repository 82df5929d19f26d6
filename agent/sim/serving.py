"""How every server of the simulated cloud runs: in a daemon thread, started and stopped
the same way, and usable as a context manager (``with World() as world: ...``)."""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Self


class Served:
    """Something that serves between :meth:`start` and :meth:`stop`; ``with`` does both."""

    def start(self) -> Self:
        """Begin serving; ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving (nothing when not started)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerThread:
    """A bound ``socketserver`` server (``http.server``, werkzeug's) served by a daemon
    thread until :meth:`stop`: shut down, its socket closed, the thread joined."""

    def __init__(self, server: socketserver.BaseServer, name: str,
                 poll_interval: float = 0.05) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(poll_interval,),
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when bound to port 0)."""
        return int(self.server.server_address[1])  # type: ignore[index]

    def stop(self) -> None:
        """Stop serving (a short poll interval makes it quick) and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
