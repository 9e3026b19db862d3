"""The ``websocket`` delivery method: a channel layer ``group_send`` per connected recipient.

Each notification goes to the recipient's group ``user.<id>`` as a
``notify.push`` message, which the consumer relays to every socket of that
user, on whichever ASGI process it is open. A Redis channel layer is
at-most-once: the database row stays the truth, and a reconnecting client is
sent what it missed (see the consumer).

**Presence.** The consumer counts each user's open sockets in one Redis hash
(:data:`PRESENCE_KEY`, on the channel layer's Redis): +1 once it has joined
its groups, -1 when it leaves. A batch reads the counts of its recipients
with one ``HMGET`` (:meth:`WebSocketMethod.reachable`, which the pipeline asks
before it builds the messages) and sends only to those with a socket open;
the others' deliveries are recorded ``skipped`` ("no open socket"), since their clients
read the notification from the database when they connect. So a push to a
role or to everyone costs channel-layer work in proportion to the sockets
connected, not to the audience. A batch of fewer than :data:`PRESENCE_FROM`
recipients skips the ``HMGET`` with :class:`delivery.layers.BoundedRedisChannelLayer`:
``group_send_many`` reads every group's members anyway, and a push whose
group has none is reported ``skipped`` with the same reason (one Redis round
trip fewer for the drain's batches of a steady stream, which hold one or two
events). No push is lost to the race: a consumer
counts itself before it reads its ``hello`` from the database, and the
pipeline reads the counts after its commit. A count outlives an ASGI process
that is killed (SIGKILL): its users then cost a ``group_send`` to an empty
group, as before presence, until they connect and leave again.
With :class:`delivery.layers.BoundedRedisChannelLayer` (the default), a
batch's pushes go in :data:`SEND_MANY_CHUNK` at a time, two Redis round
trips each (``group_send_many``) instead of four per push; with another
layer, one ``group_send`` each.
All sends of a batch run on one event loop, which each thread keeps
(:func:`run`): ``async_to_sync`` would start a new loop per call, and
channels_redis keeps its Redis connections per loop, so each call would open
new connections (one per push, as django-notifs' pushes do). They run
concurrently across recipients, and one after the other, in cursor order,
for each recipient, so a socket receives its user's pushes of one batch in
cursor order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError

from delivery.base import DeliveryMethod, DeliveryResult, Message
from delivery.layers import BoundedRedisChannelLayer

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


#: Redis hash (on the channel layer's Redis): ``{user id: number of open sockets}``.
PRESENCE_KEY = "notiflow:presence"
_PRESENCE_LEAVE = """
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left
"""
_HMGET_CHUNK = 1000  # user ids per HMGET
#: Recipients from which a batch reads presence before its messages are built (OPTIONS ``presence_from``):
#: below it, with notiflow's channel layer, every message is built and ``group_send_many`` reports which groups
#: had no member. Building a push costs about as much as reading a group's members in the same round trip;
#: the ``HMGET`` is a round trip of its own.
PRESENCE_FROM = 50


def _presence_connection(layer: Any) -> Any:
    """The channel layer's Redis connection that holds :data:`PRESENCE_KEY`; ``None`` for a layer without one
    (the in-memory layer): then every recipient counts as connected."""
    connection = getattr(layer, "connection", None)
    if connection is None or not hasattr(layer, "consistent_hash"):
        return None
    return connection(layer.consistent_hash(PRESENCE_KEY))


async def presence_join(user_id: int, layer: str = "default") -> None:
    """Count one more open socket of ``user_id`` (the consumer, once it has joined its groups)."""
    redis = _presence_connection(get_channel_layer(layer))
    if redis is not None:
        await redis.hincrby(PRESENCE_KEY, str(user_id), 1)


async def presence_leave(user_id: int, layer: str = "default") -> None:
    """Count one socket of ``user_id`` fewer; the user's entry goes when none is left."""
    redis = _presence_connection(get_channel_layer(layer))
    if redis is not None:
        await redis.eval(_PRESENCE_LEAVE, 1, PRESENCE_KEY, str(user_id))


async def presence_connected(user_ids: Sequence[int], layer: Any) -> set[int] | None:
    """Which of ``user_ids`` have a socket open (one ``HMGET`` per 1,000); ``None`` if the layer cannot say."""
    redis = _presence_connection(layer)
    if redis is None:
        return None
    ids = list(dict.fromkeys(user_ids))
    online: set[int] = set()
    for start in range(0, len(ids), _HMGET_CHUNK):
        part = ids[start : start + _HMGET_CHUNK]
        counts = await redis.hmget(PRESENCE_KEY, [str(uid) for uid in part])
        online.update(uid for uid, count in zip(part, counts, strict=True) if count is not None and int(count) > 0)
    return online


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


#: ``group_send`` calls in flight at once: channels_redis opens a Redis connection per concurrent call (its
#: pool has no upper bound), so 2,000 gathered sends held 2,000 connections per pool process; 32 keep the
#: pipelining and bound the connections (OPTIONS ``concurrency``).
MAX_IN_FLIGHT = 32
#: Pushes per :meth:`~delivery.layers.BoundedRedisChannelLayer.group_send_many` call: two Redis round trips
#: each, and a script that holds Redis for well under a millisecond per hundred.
SEND_MANY_CHUNK = 500
#: The reason recorded on a push skipped for want of a socket.
NO_SOCKET = "no open socket: read from the inbox on connect"


def _push(message: Message) -> tuple[str, dict[str, Any]]:
    """``(group, channel-layer message)`` of one push: ``notify.push`` to the recipient's group."""
    return user_group(message.recipient.id), {
        "type": "notify.push",
        "notification": dict(message.payload),
        "seq": message.push_seq,
    }


def _in_cursor_order(batch: Sequence[Message], indexes: Iterable[int]) -> list[int]:
    """``indexes`` of ``batch`` sorted by cursor (messages without one last, then by position): each
    recipient's pushes in the order its sockets must receive them."""
    return sorted(indexes, key=lambda i: (batch[i].cursor is None, batch[i].cursor or 0, i))


def _layer_failure(exc: BaseException) -> DeliveryResult:
    return DeliveryResult.retry(f"channel layer: {type(exc).__name__}: {exc}")


class WebSocketMethod(DeliveryMethod):
    """Push through the channel layer. OPTIONS: ``layer`` (alias, default ``"default"``), ``concurrency``
    (``group_send`` calls in flight, default :data:`MAX_IN_FLIGHT`), ``presence_from`` (default
    :data:`PRESENCE_FROM`)."""

    key = "websocket"
    send_inline = True
    streamed = True
    unreachable_reason = NO_SOCKET

    def reachable(self, recipient_ids: Sequence[int]) -> set[int] | None:
        """The recipients with a socket open (presence, one ``HMGET`` per 1,000); ``None`` when the channel
        layer cannot say or cannot be reached (then :meth:`send` meets the same error and asks for a retry),
        and, with :class:`~delivery.layers.BoundedRedisChannelLayer`, for fewer than ``presence_from``
        distinct recipients (:meth:`send` then reports a push to a group without members ``skipped``)."""
        layer = get_channel_layer(self.options.get("layer", "default"))
        few = len(set(recipient_ids)) < int(self.options.get("presence_from", PRESENCE_FROM))
        if few and isinstance(layer, BoundedRedisChannelLayer):
            return None
        try:
            return run(presence_connected(recipient_ids, layer))
        except (TimeoutError, RedisError, OSError) as exc:
            logger.warning("presence unreadable: %s: %s", type(exc).__name__, exc)
            return None

    def check(self) -> None:
        if get_channel_layer(self.options.get("layer", "default")) is None:
            raise ImproperlyConfigured("The websocket delivery method needs CHANNEL_LAYERS configured.")

    async def _send_all(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        layer = get_channel_layer(self.options.get("layer", "default"))
        assert layer is not None  # checked at start-up
        if isinstance(layer, BoundedRedisChannelLayer):
            return await self._send_grouped(layer, batch)
        in_flight = asyncio.Semaphore(int(self.options.get("concurrency", MAX_IN_FLIGHT)))

        async def one(message: Message) -> DeliveryResult:
            try:
                async with in_flight:
                    await layer.group_send(*_push(message))
            except (TimeoutError, RedisError, OSError) as exc:
                return _layer_failure(exc)
            return DeliveryResult.sent()

        # Different recipients' pushes run concurrently; one recipient's run one after the other, in cursor
        # order, so that each of their sockets receives them in that order (the channel layer keeps the order
        # of sends to one channel).
        results: list[DeliveryResult] = [DeliveryResult.sent()] * len(batch)
        by_recipient: dict[int, list[int]] = {}
        for index, message in enumerate(batch):
            by_recipient.setdefault(message.recipient.id, []).append(index)

        async def in_order(indexes: list[int]) -> None:
            for index in _in_cursor_order(batch, indexes):
                results[index] = await one(batch[index])

        await asyncio.gather(*(in_order(indexes) for indexes in by_recipient.values()))
        return results

    async def _send_grouped(self, layer: BoundedRedisChannelLayer, batch: Sequence[Message]) -> list[DeliveryResult]:
        """The batch's pushes through :meth:`~delivery.layers.BoundedRedisChannelLayer.group_send_many`,
        :data:`SEND_MANY_CHUNK` at a time, in cursor order (so each recipient's in cursor order); a push whose
        recipient's group has no member is ``skipped`` (:data:`NO_SOCKET`). A chunk that fails is retried with
        every chunk after it, so that no push overtakes one that failed."""
        order = _in_cursor_order(batch, range(len(batch)))
        results: list[DeliveryResult] = [DeliveryResult.sent()] * len(batch)
        for start in range(0, len(order), SEND_MANY_CHUNK):
            part = order[start : start + SEND_MANY_CHUNK]
            empty: list[int] = []
            try:
                await layer.group_send_many([_push(batch[i]) for i in part], empty=empty)
            except (TimeoutError, RedisError, OSError) as exc:
                failed = _layer_failure(exc)
                for i in order[start:]:
                    results[i] = failed
                break
            for position in empty:
                results[part[position]] = DeliveryResult.skipped(NO_SOCKET)
        return results

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        """Send each message to its recipient's group: through ``group_send_many`` with notiflow's channel layer,
        else one ``group_send`` each, concurrently. Presence is not read here: the pipeline asks
        :meth:`reachable` first and sends only to recipients with a socket open."""
        return run(self._send_all(batch))
