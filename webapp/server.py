"""daphne, with limits on what one HTTP client may hold open: ``python -m webapp.server [limits] [daphne's options]``.

daphne (through Twisted) waits for a request's headers and body as long as
bytes keep coming (its only timeout is 60 s of silence, reset by each
byte), and takes a body of any size (spooled to a temporary file before the
application sees it). A client that sends a header line every 50 s, or a
10 GB body, holds a connection, a file and memory for as long as it likes.
This runs daphne's own command line with three limits more:

``--header-timeout`` (seconds, default 10)
    from the connection (or the end of the previous request on a kept-alive
    one) to the end of the request's headers, WebSocket handshakes included;
    past it: ``408 Request Timeout`` and the connection is closed.
``--body-timeout`` (seconds, default 30)
    from the end of the headers to the end of the body; past it: 408, closed.
``--max-body-bytes`` (default 1,048,576)
    a ``Content-Length`` above it is refused with ``413 Content Too Large``
    before any of the body is read; a chunked body is cut off with 413 when it
    passes it.

A refused client that does not read the reply is dropped after
``ABORT_AFTER`` seconds more. WebSocket frames are limited by daphne's own
``--websocket_max_message_size`` / ``--websocket_max_frame_size`` and the relay's
``MAX_FRAME_BYTES``; a slow WebSocket opening handshake by
``--websocket_connect_timeout``. The limits follow nginx's
``client_header_timeout``, ``client_body_timeout`` and ``client_max_body_size``
(60 s, 60 s and 1 MiB there); behind such a proxy they are a second line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import reactor
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

#: Seconds a refused client has to read the reply before its connection is dropped.
ABORT_AFTER = 5.0


@dataclass(frozen=True)
class Limits:
    """``header_timeout`` and ``body_timeout`` in seconds, ``max_body_bytes`` in bytes."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024


class LimitedHTTPChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel with a deadline for each request's headers and body, and a body size limit."""

    limits = Limits()

    def __init__(self) -> None:
        super().__init__()
        self._deadline: Any = None  # the IDelayedCall of the running deadline
        self._body_bytes = 0

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.callLater(seconds, partial(self._refuse, b"408 Request Timeout"))

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _refuse(self, status: bytes) -> None:
        """Answer ``status`` and close; drop the connection if the client does not read it."""
        self._deadline = None
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return
        transport.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *args: None  # type: ignore[method-assign]
        self.loseConnection()
        self._abortingCall = self.callLater(ABORT_AFTER, self.forceAbortClient)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm(self.limits.header_timeout)

    def allHeadersReceived(self) -> None:
        self._disarm()
        if self.length is not None and self.length > self.limits.max_body_bytes:
            self._refuse(b"413 Content Too Large")
            return
        super().allHeadersReceived()
        if self.length != 0:  # a body follows (Content-Length, or chunked when None)
            self._body_bytes = 0
            self._arm(self.limits.body_timeout)

    def rawDataReceived(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > self.limits.max_body_bytes + 4096:  # the chunks' framing is counted too
            self._refuse(b"413 Content Too Large")
            return
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self.transport.disconnecting:
            self._arm(self.limits.header_timeout)  # the next request on this kept-alive connection

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)


class LimitedServer(Server):
    """daphne's :class:`~daphne.server.Server`, its HTTP connections served by :class:`LimitedHTTPChannel`."""

    def run(self) -> None:
        reactor.callWhenRunning(self._limit)  # before any connection is accepted
        super().run()

    def _limit(self) -> None:
        self.http_factory.protocol = LimitedHTTPChannel


class LimitedCommandLineInterface(CommandLineInterface):
    server_class = LimitedServer


def _limits_parse(argv: Sequence[str]) -> tuple[Limits, list[str]]:
    """Our three options out of ``argv``; the rest is daphne's. Exits with a usage error for a bad value."""
    parser = argparse.ArgumentParser(add_help=False)
    defaults = Limits()
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout)
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    ours, rest = parser.parse_known_args(list(argv))
    if ours.header_timeout <= 0 or ours.body_timeout <= 0 or ours.max_body_bytes < 0:
        parser.error("--header-timeout and --body-timeout must be positive, --max-body-bytes at least 0")
    return Limits(ours.header_timeout, ours.body_timeout, ours.max_body_bytes), rest


def main(argv: Sequence[str] | None = None) -> None:
    limits, rest = _limits_parse(sys.argv[1:] if argv is None else argv)
    LimitedHTTPChannel.limits = limits
    LimitedCommandLineInterface().run(rest)


if __name__ == "__main__":
    main()
