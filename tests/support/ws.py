"""A small asyncio WebSocket client for the relay's tests: connect, read frames, wait for one, see the close code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol


class Socket:
    """One open socket. ``frames`` holds every JSON frame received so far, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        token: str | None = None,
        ticket: str | None = None,
        headers: dict[str, str] | None = None,
        origin: str | None = None,
    ) -> Socket:
        protocols = [Subprotocol("notiflow")]
        if token:
            protocols.append(Subprotocol(f"jwt.{token}"))
        if ticket:
            protocols.append(Subprotocol(f"ticket.{ticket}"))
        ws = await connect(
            url,
            subprotocols=protocols,
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=10,
            max_size=None,
        )
        return cls(ws)

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame; raises :class:`ConnectionClosed` (recording ``close_code``) or :class:`TimeoutError`."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
            raise
        frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def until(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Read until a frame matches ``match``; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - loop.time()))
            if match(frame):
                return frame

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds``."""
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await self.next(left))
            except TimeoutError:
                break
        return got

    async def closed_with(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            while True:
                await self.next(timeout)
        except ConnectionClosed:
            return self.close_code

    async def close(self) -> None:
        await self.ws.close()


async def close_code(url: str, **kwargs: Any) -> int | None:
    """Open a socket and return the code the server closes it with (``None`` if it stays open 10 s)."""
    sock = await Socket.open(url, **kwargs)
    try:
        return await sock.closed_with()
    except TimeoutError:
        return None
    finally:
        await sock.close()


async def handshake_status(url: str, **kwargs: Any) -> int:
    """The HTTP status of a refused handshake (403 for a foreign origin), or 101 if it was accepted."""
    try:
        sock = await Socket.open(url, **kwargs)
    except InvalidStatus as refused:
        return refused.response.status_code
    await sock.close()
    return 101
