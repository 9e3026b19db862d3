"""delivery.layers.BoundedRedisChannelLayer: many messages per Redis round trip, received and sent, in order.

Against the real Redis of the test stack (its channel-layer URL), each test
with a prefix of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from delivery import websocket
from delivery.base import Message, Outcome, Recipient
from delivery.layers import BoundedRedisChannelLayer
from webapp.stack import Stack

CHANNELS = 300
PER_CHANNEL = 3
ARRIVES = 10.0  # seconds every message may take


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    """A key prefix of the test's own on the stack's channel-layer Redis; its keys are deleted afterwards."""
    name = f"layertest{uuid.uuid4().hex[:8]}"
    yield name
    server = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)
    for key in server.scan_iter(f"{name}*"):
        server.delete(key)


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every Redis command this process's asyncio clients send, as they send it."""
    sent: list[str] = []
    original = Redis.execute_command

    async def counted(self: Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await original(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", counted)
    return sent


def layer_of(kind: type[RedisChannelLayer], prefix: str, **config: Any) -> RedisChannelLayer:
    return kind(hosts=[settings.CHANNEL_LAYER_REDIS_URL], prefix=prefix, capacity=2000, **config)


async def receive_everything(layer: RedisChannelLayer, channels: list[str], expected: int) -> dict[str, list[int]]:
    """Receive on every channel at once (as a process's sockets do) until ``expected`` messages came."""
    got: dict[str, list[int]] = defaultdict(list)
    done = asyncio.Event()
    count = 0

    async def reader(channel: str) -> None:
        nonlocal count
        while True:
            message = await layer.receive(channel)
            got[channel].append(message["n"])
            count += 1
            if count == expected:
                done.set()

    readers = [asyncio.create_task(reader(channel)) for channel in channels]
    try:
        await asyncio.wait_for(done.wait(), ARRIVES)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return got


async def prefilled(layer: RedisChannelLayer, sender: RedisChannelLayer) -> list[str]:
    """``CHANNELS`` channels of ``layer``'s process with ``PER_CHANNEL`` messages each, sent round-robin."""
    channels = [await layer.new_channel() for _ in range(CHANNELS)]
    for n in range(PER_CHANNEL):
        for channel in channels:
            await sender.send(channel, {"type": "test.message", "n": n})
    return channels


def test_a_process_receives_its_sockets_messages_many_per_round_trip_each_channel_in_order(prefix, commands):
    """900 waiting messages for 300 sockets of one process: channels_redis takes them with four commands each;
    the bounded layer with two per ``receive_batch`` (100), and every channel gets its own messages in order."""

    async def run(kind: type[RedisChannelLayer], **config: Any) -> tuple[dict[str, list[int]], list[str], int]:
        layer, sender = layer_of(kind, prefix, **config), layer_of(RedisChannelLayer, prefix)
        channels = await prefilled(layer, sender)
        before = len(commands)
        got = await receive_everything(layer, channels, CHANNELS * PER_CHANNEL)
        used = len(commands) - before
        await layer.flush()
        await sender.close_pools()
        return got, channels, used

    got, channels, batched = asyncio.run(run(BoundedRedisChannelLayer))
    assert {channel: got[channel] for channel in channels} == {channel: [0, 1, 2] for channel in channels}
    assert set(got) == set(channels)

    got, channels, one_by_one = asyncio.run(run(RedisChannelLayer))
    assert {channel: got[channel] for channel in channels} == {channel: [0, 1, 2] for channel in channels}
    assert one_by_one >= 4 * CHANNELS * PER_CHANNEL  # what the batches save
    # 9 batches of 100: a script and a DEL each, then the blocking receive of the readers left waiting.
    assert batched <= 2 * (CHANNELS * PER_CHANNEL // 100) + 6


def test_messages_a_cancelled_receive_left_in_flight_come_first_and_in_order(prefix):
    """A receive cancelled after its pop leaves the messages in the channel's backup (``$inflight``): the next
    receive puts them back in front, then takes the rest, and clears the backup once they are buffered."""
    server = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)

    async def run() -> tuple[list[int], int]:
        layer, sender = layer_of(BoundedRedisChannelLayer, prefix), layer_of(RedisChannelLayer, prefix)
        channel = await layer.new_channel()
        for n in range(3):
            await sender.send(channel, {"type": "test.message", "n": n})
        key = prefix + layer.non_local_name(channel)
        # What a receive cancelled between its pop and its buffering leaves behind: the two oldest in flight.
        for member, score in server.zpopmin(key, 2):
            server.zadd(key + "$inflight", {member: score})
        await sender.send(channel, {"type": "test.message", "n": 3})
        got = [(await asyncio.wait_for(layer.receive(channel), ARRIVES))["n"] for _ in range(4)]
        await asyncio.sleep(0.1)  # the backup's clean-up runs beside the receive
        in_flight = int(server.exists(key + "$inflight"))
        await layer.flush()
        await sender.close_pools()
        return got, in_flight

    got, in_flight = asyncio.run(run())
    assert got == [0, 1, 2, 3]
    assert in_flight == 0


def test_a_receive_waiting_on_an_empty_channel_can_be_cancelled_and_the_next_gets_the_message(prefix):
    """An empty channel blocks on channels_redis' own ``BZPOPMIN``; cancelling that wait loses nothing."""

    async def run() -> dict[str, Any]:
        layer, sender = layer_of(BoundedRedisChannelLayer, prefix), layer_of(RedisChannelLayer, prefix)
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0.2)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await sender.send(channel, {"type": "test.message", "n": 7})
        message = await asyncio.wait_for(layer.receive(channel), ARRIVES)
        await layer.flush()
        await sender.close_pools()
        return message

    assert asyncio.run(run()) == {"type": "test.message", "n": 7}


@pytest.mark.parametrize("config", [{"receive_batch": 0}, {"max_connections": 0}, {"pool_timeout": 0}])
def test_bounds_below_one_are_refused(config):
    with pytest.raises(ValueError, match="at least 1"):
        BoundedRedisChannelLayer(hosts=["redis://127.0.0.1:1/0"], **config)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each round trip this process's asyncio Redis clients make: a command, or a whole pipeline."""
    trips: list[str] = []
    command, pipeline = Redis.execute_command, Pipeline.execute

    async def one_command(self: Redis, *args: Any, **options: Any) -> Any:
        trips.append(str(args[0]).upper())
        return await command(self, *args, **options)

    async def one_pipeline(self: Pipeline, *args: Any, **options: Any) -> Any:
        trips.append("PIPELINE")
        return await pipeline(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", one_command)
    monkeypatch.setattr(Pipeline, "execute", one_pipeline)
    return trips


def test_group_send_many_reaches_every_member_in_order_in_two_round_trips(prefix, round_trips):
    """300 groups of two sockets each (one process), three messages to each group in one call, and a group
    with no member: every socket gets its group's three in order, in one pipeline and one script, where
    channels_redis' group_send takes four round trips per group; the message to no one is reported."""

    async def run() -> tuple[dict[str, list[int]], dict[str, str], int, int]:
        layer, receiver = layer_of(BoundedRedisChannelLayer, prefix), layer_of(BoundedRedisChannelLayer, prefix)
        group_of: dict[str, str] = {}
        for g in range(CHANNELS):
            for _ in range(2):
                channel = await receiver.new_channel()
                await layer.group_add(f"g{g}", channel)
                group_of[channel] = f"g{g}"
        sends = [(f"g{g}", {"type": "test.message", "n": n}) for n in range(PER_CHANNEL) for g in range(CHANNELS)]
        sends.append(("nobody", {"type": "test.message", "n": -1}))
        before = len(round_trips)
        dropped = await layer.group_send_many(sends, empty=empty)
        trips = len(round_trips) - before
        got = await receive_everything(receiver, list(group_of), 2 * CHANNELS * PER_CHANNEL)
        await layer.flush()
        return got, group_of, trips, dropped

    empty: list[int] = []
    got, group_of, trips, dropped = asyncio.run(run())
    assert dropped == 0
    assert empty == [CHANNELS * PER_CHANNEL]  # the position of the message to "nobody"
    assert {channel: got[channel] for channel in group_of} == {channel: [0, 1, 2] for channel in group_of}
    assert set(got) == set(group_of)
    assert trips == 2


def test_group_send_many_drops_past_capacity_and_skips_expired_members(prefix):
    """channels_redis' rules: a message to a full channel is dropped (and counted), a member older than
    ``group_expiry`` is not sent to."""
    server = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)

    async def run() -> tuple[int, list[int], int, list[str]]:
        layer = BoundedRedisChannelLayer(hosts=[settings.CHANNEL_LAYER_REDIS_URL], prefix=prefix, capacity=2)
        other_process = layer_of(BoundedRedisChannelLayer, prefix)
        full, stale = await layer.new_channel(), await other_process.new_channel()
        await layer.group_add("room", full)
        await layer.group_add("room", stale)
        server.zadd(f"{prefix}:group:room", {stale: time.time() - layer.group_expiry - 10})
        dropped = await layer.group_send_many([("room", {"type": "test.message", "n": n}) for n in range(3)])
        got = [(await asyncio.wait_for(layer.receive(full), ARRIVES))["n"] for _ in range(2)]
        stale_waiting = int(server.zcard(prefix + other_process.non_local_name(stale)))
        members = [name.decode() for name in server.zrange(f"{prefix}:group:room", 0, -1)]
        await layer.flush()
        return dropped, got, stale_waiting, members

    dropped, got, stale_waiting, members = asyncio.run(run())
    assert (dropped, got) == (1, [0, 1])
    assert stale_waiting == 0
    assert len(members) == 1  # the expired member was trimmed from the group


def test_a_small_push_batch_skips_presence_and_reports_the_groups_without_a_socket(prefix, monkeypatch, round_trips):
    """Below PRESENCE_FROM recipients the websocket method reads no presence (reachable: None, no Redis call):
    group_send_many's two round trips send the push whose group has a socket and report the others
    ``skipped`` (no open socket). From PRESENCE_FROM recipients on, presence is read first."""
    layer, receiver = layer_of(BoundedRedisChannelLayer, prefix), layer_of(BoundedRedisChannelLayer, prefix)
    monkeypatch.setattr(websocket, "get_channel_layer", lambda alias="default": layer)
    first = 10**9  # user ids no other test counts in the presence hash
    channel = asyncio.run(receiver.new_channel())
    asyncio.run(layer.group_add(websocket.user_group(first), channel))
    method = websocket.WebSocketMethod(alias="websocket")

    def push(user_id: int) -> Message:
        recipient = Recipient(id=user_id, username=f"u{user_id}", email="")
        return Message(user_id, user_id, "t", "c", recipient, "title", "", "d", cursor=1, payload={"id": user_id})

    before = len(round_trips)
    assert method.reachable([first, first + 1, first + 2]) is None
    results = method.send([push(first), push(first + 1), push(first + 2)])
    trips = len(round_trips) - before

    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.SKIPPED, websocket.NO_SOCKET),
        (Outcome.SKIPPED, websocket.NO_SOCKET),
    ]
    assert trips == 2
    received = asyncio.run(asyncio.wait_for(receiver.receive(channel), ARRIVES))
    assert received["notification"] == {"id": first}
    many = list(range(first + 1, first + 1 + websocket.PRESENCE_FROM))
    before = len(round_trips)
    assert method.reachable(many) == set()  # presence read: nobody among them has a socket
    assert len(round_trips) - before == 1
