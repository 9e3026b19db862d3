"""A WebSocket client that listens in a background thread, for the demo and the tests.

Each :class:`Listener` connects to ``/ws/notifications/`` with a JWT offered
as a subprotocol (``["notiflow", "jwt.<token>"]``) and records every frame it
receives with its arrival time (``time.time()``, seconds).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol


class Listener:
    """One user's socket. ``frames`` is ``[(arrival_time, frame_dict), ...]``."""

    def __init__(self, *, name: str, url: str, token: str) -> None:
        self.name = name
        self.url = url
        self.token = token
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.hello = threading.Event()
        self.closed_with: int | None = None

    def notifications(self) -> list[tuple[float, dict[str, Any]]]:
        """``[(arrival_time, notification_payload), ...]`` of the pushes received."""
        return [(t, f["notification"]) for t, f in list(self.frames) if f.get("type") == "notification"]

    async def run(self, stop: asyncio.Event) -> None:
        protocols = [Subprotocol("notiflow"), Subprotocol(f"jwt.{self.token}")]
        async with connect(self.url, subprotocols=protocols, open_timeout=10) as ws:
            reader = asyncio.ensure_future(self._read(ws))
            await stop.wait()
            reader.cancel()
            self.closed_with = ws.close_code

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            self.frames.append((time.time(), frame))
            if frame.get("type") == "hello":
                self.hello.set()


class ListenerGroup:
    """Run several listeners on one event loop in a daemon thread."""

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = list(listeners)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="ws-listeners")
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await asyncio.gather(*(listener.run(self._stop) for listener in self.listeners))

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported through .error and start()
            self.error = exc

    def start(self, *, timeout: float = 15.0) -> None:
        """Connect everyone and wait for each ``hello``; raise if one does not arrive."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            if not listener.hello.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{listener.name}: no hello from the server ({self.error!r})")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
