"""The ``websocket`` delivery method: a channel layer ``group_send`` per recipient.

Each notification goes to the recipient's group ``user.<id>`` as a
``notify.push`` message, which the consumer relays to every socket of that
user. A Redis channel layer is at-most-once: the database row stays the
truth, and a reconnecting client is sent what it missed (see the consumer).
All sends of a batch run concurrently on one event loop, which each thread
keeps (:func:`run`): ``async_to_sync`` would start a new loop per call, and
channels_redis keeps its Redis connections per loop, so each call would open
new connections (one per push, as django-notifs' pushes do).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError

from delivery.base import DeliveryMethod, DeliveryResult, Message

logger = logging.getLogger(__name__)


T = TypeVar("T")
_local = threading.local()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from sync code on this thread's own event loop, kept between calls.

    In a thread that runs an event loop already (an async consumer), use
    ``async_to_sync`` instead: this raises ``RuntimeError`` there.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()  # a forked child never reuses its parent's loop or connections
        _local.loop, _local.pid = loop, os.getpid()
    return loop.run_until_complete(coroutine)


def user_group(user_id: int) -> str:
    """The Channels group of one user's sockets."""
    return f"user.{user_id}"


def read_state_push(*, user_id: int, frame: Mapping[str, Any], layer: str = "default") -> bool:
    """Send a ``read_state`` frame to every socket of ``user_id`` (channel layer type ``notify.read_state``).

    Sync; at most once, like every push: a failure is logged and returns
    ``False`` (the change is committed already, and a client reconnecting
    reads the unread count in its ``hello``).
    """
    channel_layer = get_channel_layer(layer)
    if channel_layer is None:
        return False
    try:
        async_to_sync(channel_layer.group_send)(
            user_group(user_id), {"type": "notify.read_state", "frame": dict(frame)}
        )
    except (TimeoutError, RedisError, OSError) as exc:
        logger.warning("read_state push to user %s failed: %s: %s", user_id, type(exc).__name__, exc)
        return False
    return True


class WebSocketMethod(DeliveryMethod):
    """Push through the channel layer. OPTIONS: ``layer`` (alias, default ``"default"``)."""

    key = "websocket"
    send_inline = True

    def check(self) -> None:
        if get_channel_layer(self.options.get("layer", "default")) is None:
            raise ImproperlyConfigured("The websocket delivery method needs CHANNEL_LAYERS configured.")

    async def _send_all(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        layer = get_channel_layer(self.options.get("layer", "default"))
        assert layer is not None  # checked at start-up

        async def one(message: Message) -> DeliveryResult:
            try:
                await layer.group_send(
                    user_group(message.recipient.id), {"type": "notify.push", "notification": dict(message.payload)}
                )
            except (TimeoutError, RedisError, OSError) as exc:
                return DeliveryResult.retry(f"channel layer: {type(exc).__name__}: {exc}")
            return DeliveryResult.sent()

        return list(await asyncio.gather(*(one(m) for m in batch)))

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        return run(self._send_all(batch))
