"""A Redis channel layer whose connection pool is bounded: callers wait for a connection instead of opening more.

channels_redis opens a connection per concurrent command and never closes
them while the event loop runs: 10,000 sockets closing at once made one
daphne's pool grow to about 9,000 connections, Redis refused 465 others (it
is also the Celery broker), and the ``group_discard`` calls that failed left
11,316 dead members in one user's group. Here every event loop's pool is a
:class:`redis.asyncio.BlockingConnectionPool`: at most ``max_connections``
connections, and a command that finds none free waits up to ``pool_timeout``
seconds for one (then ``redis.exceptions.ConnectionError``).

Settings, beside channels_redis' own ``CONFIG`` keys::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "delivery.layers.BoundedRedisChannelLayer",
        "CONFIG": {"hosts": ["redis://..."], "max_connections": 50, "pool_timeout": 10},
    }}

A host given as a dict is passed to the pool as keyword arguments, as
channels_redis does; Sentinel hosts are not supported by this class.

**Receiving many messages per round trip.** channels_redis' ``receive`` takes
the messages of a process's sockets (its process-specific channel) one at a
time, with four Redis commands each (a clean-up script, ``BZPOPMIN``, a
``ZADD`` to the in-flight backup, and a ``ZPOPMIN`` of the backup that the
next receive waits for): one daphne process relaying 1,000 pushes to 1,000
sockets spent about 2 ms a push. Here one script restores the backup, pops
up to ``receive_batch`` messages (100) with ``ZPOPMIN`` and keeps them in the
backup until they are in the sockets' buffers, then one ``DEL`` clears it:
two commands per batch, the same guarantee (a receive cancelled mid-way
leaves its messages in the backup, and the next receive puts them back), the
same order. Only when the channel is empty does it block, on channels_redis'
own ``BZPOPMIN`` path.

**Sending to many groups per round trip.** channels_redis' ``group_send``
costs four round trips per group (trim the group, read its members, trim the
members' channels, a script that adds the message). :meth:`group_send_many`
sends one message to each of many groups (a batch of pushes, one per
recipient) with two: one pipeline that trims and reads every group, one
script per Redis shard that trims the channels and adds every message, with
channels_redis' capacity rule (a message to a full channel is dropped and
counted) and in the order given, so that two messages to one channel are
received in that order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

logger = logging.getLogger(__name__)

#: Defaults: connections per event loop, seconds a command waits for one, messages taken per round trip.
MAX_CONNECTIONS = 50
POOL_TIMEOUT = 10.0
RECEIVE_BATCH = 100

#: KEYS: the channel's sorted set, its in-flight backup; ARGV: how many to take. Puts the backup's messages
#: back (a receive cancelled after its pop), pops up to ARGV[1] of the oldest and keeps them in the backup
#: until the receiver has buffered them. Returns ``[member, score, ...]`` as ``ZPOPMIN`` does.
_RECEIVE_MANY = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
for i = 1, #popped, 2 do
    redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
end
return popped
"""

#: KEYS: channel keys, one per message (a key may repeat); ARGV: the messages, then each one's capacity and
#: score, then the expiry cut-off and the expiry (seconds). Trims each channel of expired messages once, then
#: adds each message unless its channel is full (as channels_redis' group_send). Returns how many were dropped.
_SEND_MANY = """
local n = #KEYS
local cutoff = ARGV[3 * n + 1]
local expiry = ARGV[3 * n + 2]
local trimmed = {}
local over_capacity = 0
for i = 1, n do
    if not trimmed[KEYS[i]] then
        redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
        trimmed[KEYS[i]] = true
    end
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""
#: A message's score is its send time; messages of one call are this far apart (seconds), so that those to
#: one channel keep their order (at 1.7e9 s a double still tells 2.4e-7 s apart).
_SCORE_STEP = 1e-6


class BoundedRedisChannelLayer(RedisChannelLayer):
    """channels_redis' :class:`RedisChannelLayer` with at most ``max_connections`` connections per event loop
    and shard; a command waits up to ``pool_timeout`` seconds for a free one; a process's sockets receive up to
    ``receive_batch`` messages per Redis round trip. Raises ``ValueError`` for a non-positive bound."""

    def __init__(
        self,
        *args: Any,
        max_connections: int = MAX_CONNECTIONS,
        pool_timeout: float = POOL_TIMEOUT,
        receive_batch: int = RECEIVE_BATCH,
        **kwargs: Any,
    ) -> None:
        if int(max_connections) < 1 or float(pool_timeout) <= 0 or int(receive_batch) < 1:
            raise ValueError("max_connections and receive_batch must be at least 1, pool_timeout positive (seconds).")
        self.max_connections = int(max_connections)
        self.pool_timeout = float(pool_timeout)
        self.receive_batch = int(receive_batch)
        self._last_score = 0.0
        super().__init__(*args, **kwargs)

    async def group_send_many(
        self, sends: Sequence[tuple[str, dict[str, Any]]], *, empty: list[int] | None = None
    ) -> int:
        """Send each ``(group, message)`` of ``sends`` as ``group_send`` would, in two Redis round trips per
        shard instead of four per group; messages to one channel are received in the order of ``sends``.

        Returns how many messages were dropped because their channel was full (channels_redis logs the same
        case and drops the message too). ``empty``: a list to which the positions in ``sends`` of the messages
        whose group had no member (sent to no one) are appended. Raises what the Redis client raises
        (``redis.exceptions.RedisError``, ``OSError``, ``TimeoutError``); messages may then have been sent
        to some of the groups.
        """
        by_group_shard: dict[int, list[int]] = defaultdict(list)
        for position, (group, _message) in enumerate(sends):
            assert self.require_valid_group_name(group), "Group name not valid"
            by_group_shard[self.consistent_hash(group)].append(position)
        members: list[list[str]] = [[] for _ in sends]
        cutoff = int(time.time()) - self.group_expiry
        for index, positions in by_group_shard.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for position in positions:
                key = self._group_key(sends[position][0])
                pipe.zremrangebyscore(key, min=0, max=cutoff)
                pipe.zrange(key, 0, -1)
            replies = await pipe.execute()
            for position, names in zip(positions, replies[1::2], strict=True):
                members[position] = [name.decode("utf8") for name in names]

        keys: dict[int, list[Any]] = defaultdict(list)
        payloads: dict[int, list[Any]] = defaultdict(list)
        capacities: dict[int, list[int]] = defaultdict(list)
        for position, ((_group, message), names) in enumerate(zip(sends, members, strict=True)):
            if not names:
                if empty is not None:
                    empty.append(position)
                continue
            by_shard, key_message, key_capacity = self._map_channel_keys_to_connection(names, message)
            for index, channel_keys in by_shard.items():
                for channel_key in channel_keys:
                    keys[index].append(channel_key)
                    payloads[index].append(key_message[channel_key])
                    capacities[index].append(key_capacity[channel_key])
        dropped = 0
        for index, channel_keys in keys.items():
            now = time.time()
            first = max(now, self._last_score + _SCORE_STEP)
            scores = [first + i * _SCORE_STEP for i in range(len(channel_keys))]
            self._last_score = scores[-1]
            dropped += int(
                await self.connection(index).eval(
                    _SEND_MANY,
                    len(channel_keys),
                    *channel_keys,
                    *payloads[index],
                    *capacities[index],
                    *scores,
                    int(now) - int(self.expiry),
                    self.expiry,
                )
            )
        if dropped:
            logger.info("%s of %s messages dropped: their channel was full", dropped, len(sends))
        return dropped

    async def receive_single(self, channel: str) -> tuple[Any, dict[str, Any]]:
        """The next message of ``channel`` as ``(channel name, message)``, as channels_redis' does; for a
        process-specific channel (``...!``) the messages popped with it, up to ``receive_batch``, go into
        their sockets' buffers first, in order (``receive`` holds its lock around this call, and nothing
        awaits between the buffering and the return)."""
        if "!" not in channel or self.receive_batch == 1:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        index = self.consistent_hash(channel)
        channel_key = self.prefix + channel
        backup = self._backup_channel_name(channel_key)
        connection = self.connection(index)
        await self.receive_clean_locks.acquire(channel_key)
        try:
            popped = await connection.eval(_RECEIVE_MANY, 2, channel_key, backup, self.receive_batch)
            contents = popped[0::2]
            while not contents:  # nothing waiting: block on one message, channels_redis' way
                member = await self._brpop_with_clean(index, channel_key, timeout=self.brpop_timeout)
                if member is not None:
                    contents = [member]
            cleaner = asyncio.ensure_future(connection.delete(backup))  # every one of them is buffered by then
            self.receive_cleaners.append(cleaner)

            def cleaned(task: asyncio.Future[Any]) -> None:
                self.receive_cleaners.remove(task)
                self.receive_clean_locks.release(channel_key)

            cleaner.add_done_callback(cleaned)
        except BaseException:
            self.receive_clean_locks.release(channel_key)
            raise
        received = []
        for content in contents:
            message = self.deserialize(content)
            received.append((message.pop("__asgi_channel__", channel), message))
        for target, message in received[:-1]:  # the last is buffered by receive(), after these
            for name in target if isinstance(target, list) else [target]:
                self.receive_buffer[name].put_nowait(message)
        return received[-1]

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        if "master_name" in host:
            raise ValueError("BoundedRedisChannelLayer does not support Sentinel hosts; use RedisChannelLayer.")
        host.update(max_connections=self.max_connections, timeout=self.pool_timeout)
        if "address" in host:
            return BlockingConnectionPool.from_url(host.pop("address"), **host)
        return BlockingConnectionPool(**host)
