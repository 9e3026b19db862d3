"""Issue 10, item 5 and revocation: what one account can take from the relay, and what it loses when revoked.

Through Channels' ``WebsocketCommunicator`` against the relay's consumer (an
in-memory channel layer), or the whole WebSocket stack with its session and
ticket authentication; the channel layer's own limits against the real Redis
of the test stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client

from delivery.layers import BoundedRedisChannelLayer
from webapp.realtime.auth import websocket_stack
from webapp.realtime.consumers import NotificationConsumer
from webapp.realtime.routing import websocket_urlpatterns
from webapp.stack import Stack

relay_db = pytest.mark.django_db(transaction=True)  # the consumer reads through database_sync_to_async threads
COMES = 5.0  # seconds a frame that must come may take


@pytest.fixture
def relay(settings: Any) -> Iterator[Any]:
    """An in-memory channel layer; returns ``settings`` to set ``NOTIFLOW["WEBSOCKET"]`` keys with
    :func:`limits`. Afterwards closes the consumer threads' database connections (see test_stream.py)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    yield settings
    asyncio.run(sync_to_async(connections.close_all)())


def limits(settings: Any, **values: Any) -> None:
    settings.NOTIFLOW = {**settings.NOTIFLOW, "WEBSOCKET": {**settings.NOTIFLOW["WEBSOCKET"], **values}}


async def open_socket(user: Any) -> WebsocketCommunicator:
    """A socket of ``user`` (authenticated as the middleware would), greeted with its ``hello``."""
    socket = WebsocketCommunicator(NotificationConsumer.as_asgi(), "/ws/notifications/")
    socket.scope["user"] = user
    connected, _ = await socket.connect(timeout=COMES)
    assert connected
    assert (await socket.receive_json_from(timeout=COMES))["type"] == "hello"
    return socket


async def closed_with(socket: WebsocketCommunicator, timeout: float = COMES) -> tuple[dict[str, Any], int]:
    """The ``error`` frame a closing socket sends, and its close code."""
    frame = await socket.receive_json_from(timeout=timeout)
    close = await socket.receive_output(timeout=timeout)
    assert close["type"] == "websocket.close", close
    return frame, close["code"]


async def pong(socket: WebsocketCommunicator) -> bool:
    await socket.send_json_to({"type": "ping"})
    return (await socket.receive_json_from(timeout=COMES))["type"] == "pong"


@relay_db
def test_a_socket_past_the_users_cap_is_closed_with_4409_and_others_are_not_affected(users, relay):
    limits(relay, MAX_SOCKETS_PER_USER=3)
    alice, bob = users["alice"], users["bob"]

    async def scenario() -> None:
        mine = [await open_socket(alice) for _ in range(3)]
        extra = WebsocketCommunicator(NotificationConsumer.as_asgi(), "/ws/notifications/")
        extra.scope["user"] = alice
        await extra.connect(timeout=COMES)
        frame, code = await closed_with(extra)
        assert (frame["code"], code) == ("too_many_sockets", 4409)
        await get_channel_layer().group_send(f"user.{alice.pk}", {"type": "notify.broadcast", "payload": 1})
        for socket in mine:  # the refused one joined no group: the three get the message, nothing else
            assert await socket.receive_json_from(timeout=COMES) == {"type": "broadcast", "payload": 1}
        theirs = await open_socket(bob)  # another user is not counted against alice
        await mine[0].disconnect()
        again = await open_socket(alice)  # a place was freed
        assert await pong(again) and await pong(theirs)
        for socket in (*mine[1:], again, theirs):
            await socket.disconnect()

    asyncio.run(scenario())


@relay_db
def test_a_users_sockets_share_one_rate(users, relay):
    limits(relay, RATE=1000.0, BURST=1000, USER_RATE=0.01, USER_BURST=6)
    alice, bob = users["alice"], users["bob"]

    async def scenario() -> None:
        sockets = [await open_socket(alice) for _ in range(3)]
        for socket in sockets:  # 6 frames in all: within the user's burst, though each socket has 1,000
            assert await pong(socket) and await pong(socket)
        await sockets[2].send_json_to({"type": "ping"})
        frame, code = await closed_with(sockets[2])
        assert (frame["code"], code) == ("rate_limited", 4429)
        assert "together" in frame["detail"]
        theirs = await open_socket(bob)
        assert await pong(theirs)  # bob has a bucket of his own
        for socket in (*sockets[:2], theirs):
            await socket.disconnect()

    asyncio.run(scenario())


@relay_db
def test_a_deactivated_users_sockets_close_with_4403_within_the_revalidation_interval(users, relay):
    limits(relay, REVALIDATE=0.2)
    alice, bob = users["alice"], users["bob"]

    async def scenario() -> None:
        mine, theirs = await open_socket(alice), await open_socket(bob)
        alice.is_active = False
        await sync_to_async(alice.save)(update_fields=["is_active"])
        frame, code = await closed_with(mine, timeout=2.0)
        assert (frame["code"], code) == ("account_inactive", 4403)
        await asyncio.sleep(0.5)  # two more checks: bob's socket stays
        assert await pong(theirs)
        await theirs.disconnect()

    asyncio.run(scenario())


def signed_in_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def open_stack_socket(*, cookie: str | None = None, ticket: str | None = None) -> WebsocketCommunicator:
    """A socket through the relay's whole WebSocket stack (session, tickets, tokens), greeted."""
    headers = [(b"cookie", cookie.encode())] if cookie else []
    socket = WebsocketCommunicator(
        websocket_stack(URLRouter(websocket_urlpatterns)),
        "/ws/notifications/",
        headers=headers,
        subprotocols=[f"ticket.{ticket}"] if ticket else None,
    )
    connected, _ = await socket.connect(timeout=COMES)
    assert connected
    hello = await socket.receive_json_from(timeout=COMES)
    assert hello["type"] == "hello", hello
    return socket


@relay_db
@pytest.mark.parametrize("credential", ["cookie", "ticket"])
def test_a_socket_opened_with_a_session_closes_with_4401_when_the_session_signs_out(users, relay, stack, credential):
    limits(relay, REVALIDATE=0.2)
    alice = users["alice"]
    signed_in, other_session = signed_in_client(alice), signed_in_client(alice)
    cookie = f"sessionid={signed_in.cookies['sessionid'].value}"
    ticket = None
    if credential == "ticket":  # a one-time ticket issued to the session, as the demo page's client gets one
        response = signed_in.post("/api/ws-ticket/")
        assert response.status_code == 200, response.content
        ticket = response.json()["ticket"]

    async def scenario() -> None:
        mine = await open_stack_socket(cookie=cookie if credential == "cookie" else None, ticket=ticket)
        other = await open_stack_socket(cookie=f"sessionid={other_session.cookies['sessionid'].value}")
        await asyncio.sleep(0.5)
        assert await pong(mine)  # still signed in: the checks leave it open
        await sync_to_async(signed_in.logout)()
        frame, code = await closed_with(mine, timeout=2.0)
        assert (frame["code"], code) == ("signed_out", 4401)
        assert await pong(other)  # the same user's other session is still signed in
        await other.disconnect()

    asyncio.run(scenario())


@relay_db
def test_group_memberships_are_renewed_before_the_layers_group_expiry(users, settings, stack: Stack):
    """channels_redis drops a member older than ``group_expiry`` at the next ``group_send``: a socket must renew."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "delivery.layers.BoundedRedisChannelLayer",
            "CONFIG": {"hosts": [settings.CHANNEL_LAYER_REDIS_URL], "group_expiry": 2, "prefix": "renewal"},
        }
    }
    alice = users["alice"]

    async def scenario() -> None:
        socket = await open_socket(alice)
        await asyncio.sleep(3.5)  # past the group expiry: renewed every 0.5 s (a quarter of it)
        await get_channel_layer().group_send(f"user.{alice.pk}", {"type": "notify.broadcast", "payload": "late"})
        assert await socket.receive_json_from(timeout=COMES) == {"type": "broadcast", "payload": "late"}
        await socket.disconnect()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(sync_to_async(connections.close_all)())


def test_the_layers_pool_holds_at_most_max_connections_per_event_loop(stack: Stack):
    """600 concurrent ``group_add`` calls: channels_redis alone opens a connection for each one in flight; the
    bounded layer makes them wait for one of its ``max_connections``, and every call still succeeds."""
    url = django_settings.CHANNEL_LAYER_REDIS_URL
    server = redis.Redis.from_url(url)
    redis_port = urlsplit(url).port or 6379

    def connected() -> int:
        """This process's TCP connections to the Redis server (the server's own count includes every other
        process of the test stack, which may connect or leave meanwhile)."""
        return sum(
            1
            for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
        )

    async def connections_during(layer: RedisChannelLayer) -> int:
        before = connected()
        await asyncio.gather(*(layer.group_add("pool-test", f"specific.c{i}") for i in range(600)))
        during = connected() - before  # the pool keeps its connections open until flush()
        await asyncio.gather(*(layer.group_discard("pool-test", f"specific.c{i}") for i in range(600)))
        assert server.zcard("pool:group:pool-test") == 0
        await layer.flush()
        return during

    bounded = asyncio.run(connections_during(BoundedRedisChannelLayer(hosts=[url], prefix="pool", max_connections=4)))
    unbounded = asyncio.run(connections_during(RedisChannelLayer(hosts=[url], prefix="pool")))
    assert bounded <= 4
    assert unbounded > 4 * 4  # what the bound prevents
