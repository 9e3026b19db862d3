"""A WebSocket delivery method that loses pushes on purpose, for ``bench.hotpath --drop-pushes N``.

:class:`DroppingWebSocketMethod` skips the channel layer for every ``N``-th
push a pool process sends (``OPTIONS["every"]``) and reports it ``sent``, as
a Redis channel layer past its ``capacity`` or ``expiry`` does: the database
says sent, the socket never gets it. The relay then has to notice the gap
and fill it from the database (``NOTIFLOW["WEBSOCKET"]["GAP_WAIT"]``); the
benchmark measures what that costs in latency. The stack runs with
``DJANGO_SETTINGS_MODULE=bench.lossy_settings``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from delivery.base import DeliveryResult, Message
from delivery.websocket import WebSocketMethod


class DroppingWebSocketMethod(WebSocketMethod):
    """:class:`~delivery.websocket.WebSocketMethod` that drops every ``OPTIONS["every"]``-th push (per process)
    and reports it sent."""

    _counter = itertools.count(1)

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        every = int(self.options.get("every", 5))
        kept: list[Message] = []
        dropped: set[int] = set()
        for index, message in enumerate(batch):
            if next(self._counter) % every == 0:
                dropped.add(index)
            else:
                kept.append(message)
        sent = iter(super().send(kept) if kept else [])
        return [DeliveryResult.sent() if index in dropped else next(sent) for index in range(len(batch))]
