"""WebSocket consumers: the notification relay and the health check.

Protocol of ``/ws/notifications/`` (JSON text frames):

server → client
  ``{"type": "hello", "user_id": int, "unread_count": int, "recent": [notification, ...]}`` once, on connect
  ``{"type": "notification", "notification": notification}`` for each push
  ``{"type": "pong"}`` in answer to ``ping``
  ``{"type": "error", "code": str, "detail": str}`` for a frame it cannot use; the socket stays open
client → server
  ``{"type": "ping"}``

Close codes: 4401, no valid token (the socket is accepted first, so a
browser can tell "renew your token" from a network error).
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from delivery.websocket import user_group
from pipeline.conf import notiflow_settings
from pipeline.selectors import notifications_recent_unread, notifications_unread_count
from webapp.realtime.auth import SUBPROTOCOL

CLOSE_UNAUTHENTICATED = 4401
MAX_FRAME_BYTES = 4096


def role_group(name: str) -> str:
    """The Channels group of one role's members (non-group-name characters replaced)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"role.{safe}"[:99]


BROADCAST_GROUP = "all"


@database_sync_to_async
def _inbox_summary(user_id: int) -> tuple[int, list[dict[str, Any]]]:
    return (
        notifications_unread_count(user_id=user_id),
        notifications_recent_unread(user_id=user_id, limit=notiflow_settings.RECENT_ON_CONNECT),
    )


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    """Relays a user's pushes; joins ``user.<id>``, ``role.<name>`` for each role, and ``all``."""

    groups_joined: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in self.scope.get("subprotocols", []) else None
        await self.accept(subprotocol=subprotocol)
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.groups_joined = [user_group(user.pk), BROADCAST_GROUP] + [
            role_group(name) for name in self.scope.get("roles", [])
        ]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        unread, recent = await _inbox_summary(user.pk)
        await self.send_json({"type": "hello", "user_id": user.pk, "unread_count": unread, "recent": recent})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.send_json({"type": "error", "code": "binary_frame", "detail": "Send JSON text frames."})
            return
        if len(text_data.encode()) > MAX_FRAME_BYTES:
            await self.send_json(
                {"type": "error", "code": "too_large", "detail": f"Frames are at most {MAX_FRAME_BYTES} bytes."}
            )
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_json({"type": "error", "code": "bad_json", "detail": "The frame is not valid JSON."})
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json(
                {"type": "error", "code": "unknown_type", "detail": f"Unknown frame type {kind!r}; expected 'ping'."}
            )

    async def notify_push(self, message: dict[str, Any]) -> None:
        """Channel layer ``notify.push``: relay one notification to the socket."""
        await self.send_json({"type": "notification", "notification": message["notification"]})

    async def notify_broadcast(self, message: dict[str, Any]) -> None:
        """Channel layer ``notify.broadcast``: relay an ephemeral message sent to a role or to ``all``."""
        await self.send_json({"type": "broadcast", "payload": message["payload"]})


class HealthConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/health/``: no auth; reports status on connect and answers ``ping`` with ``pong``."""

    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"type": "status", "status": "ok"})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "unknown_type", "detail": 'Send {"type": "ping"}.'})
