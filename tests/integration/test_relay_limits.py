"""One account against the real relay (daphne, Redis): a cap on its sockets, and nothing left behind when a crowd
of sockets closes at once (issue 10, item 5). Also: a deactivated user's open socket is closed."""

import asyncio

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from websockets.exceptions import ConnectionClosed

from pipeline.conf import notiflow_settings
from tests.support.ws import Socket
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def greeted(url: str, user_id: int) -> Socket:
    socket = await Socket.open(url, token=token_issue(user_id=user_id, ttl=300))
    frame = await socket.next()
    assert frame["type"] == "hello", frame
    return socket


def test_a_users_sockets_past_the_cap_are_refused_with_4409_and_a_crowd_closing_leaves_no_member(stack):
    cap = int(notiflow_settings.WEBSOCKET["MAX_SOCKETS_PER_USER"])
    User = get_user_model()
    crowd = [User.objects.create_user(username=f"crowd{i}", password="x") for i in range(10)]
    layer = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)
    url = f"{stack.ws_url}/ws/notifications/"

    async def scenario() -> None:
        members_before = layer.zcard("asgi:group:all")
        sockets = await asyncio.gather(*(greeted(url, u.pk) for u in crowd for _ in range(cap)))
        assert layer.zcard("asgi:group:all") == members_before + len(crowd) * cap

        extra = await Socket.open(url, token=token_issue(user_id=crowd[0].pk, ttl=300))
        frame = await extra.next()
        assert frame["code"] == "too_many_sockets"
        with pytest.raises(ConnectionClosed):
            await extra.next()
        assert extra.close_code == 4409
        assert layer.zcard("asgi:group:all") == members_before + len(crowd) * cap  # it joined no group

        await asyncio.gather(*(s.ws.close() for s in sockets))  # all at once
        for _ in range(100):
            if layer.zcard("asgi:group:all") == members_before:
                break
            await asyncio.sleep(0.1)
        assert layer.zcard("asgi:group:all") == members_before
        assert [layer.zcard(f"asgi:group:user.{u.pk}") for u in crowd] == [0] * len(crowd)
        again = await greeted(url, crowd[0].pk)  # and the relay still serves
        await again.ws.close()

    asyncio.run(scenario())


def test_a_deactivated_users_open_socket_is_closed_with_4403(stack, users):
    interval = float(notiflow_settings.WEBSOCKET["REVALIDATE"])
    url = f"{stack.ws_url}/ws/notifications/"
    alice, bob = users["alice"], users["bob"]

    async def scenario() -> None:
        mine, theirs = await greeted(url, alice.pk), await greeted(url, bob.pk)
        alice.is_active = False
        await sync_to_async(alice.save)(update_fields=["is_active"])
        frame = await mine.next(timeout=interval + 5)
        assert frame["code"] == "account_inactive"
        with pytest.raises(ConnectionClosed):
            await mine.next()
        assert mine.close_code == 4403
        await theirs.send({"type": "ping"})
        assert (await theirs.next())["type"] == "pong"
        await theirs.ws.close()

    asyncio.run(scenario())
