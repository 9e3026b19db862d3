"""The Channels relay on a real ASGI server (daphne): authentication, ping/pong, bad frames."""

import asyncio
import json
import time

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def close_code(url, **kwargs):
    async with connect(url, open_timeout=10, **kwargs) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def forged(user_id):
    claims = {"sub": str(user_id), "exp": int(time.time()) + 60}
    return jwt.encode(claims, "not-the-secret", algorithm="HS256")


@pytest.mark.parametrize("token", [None, "garbage", "forged", "expired"])
def test_a_socket_without_a_valid_token_is_closed_with_4401(stack, users, token):
    user_id = users["bob"].pk
    value = {
        None: None,
        "garbage": "not.a.jwt",
        "forged": forged(user_id),
        "expired": token_issue(user_id=user_id, ttl=-10),
    }[token]
    url = f"{stack.ws_url}/ws/notifications/" + (f"?token={value}" if value else "")
    assert asyncio.run(close_code(url)) == 4401


def test_a_valid_token_in_the_query_string_or_subprotocol_is_greeted(stack, users):
    token = token_issue(user_id=users["bob"].pk)

    async def hello(url, **kwargs):
        async with connect(url, open_timeout=10, **kwargs) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10)), ws.subprotocol

    by_query, _ = asyncio.run(hello(f"{stack.ws_url}/ws/notifications/?token={token}"))
    by_header, chosen = asyncio.run(
        hello(f"{stack.ws_url}/ws/notifications/", subprotocols=["notiflow", f"jwt.{token}"])
    )
    assert by_query == {"type": "hello", "user_id": users["bob"].pk, "unread_count": 0, "recent": []}
    assert by_header == by_query
    assert chosen == "notiflow"


def test_ping_pong_and_bad_frames_get_replies_and_the_socket_stays_open(stack, users):
    token = token_issue(user_id=users["bob"].pk)

    async def exchange():
        async with connect(f"{stack.ws_url}/ws/notifications/?token={token}", open_timeout=10) as ws:
            await ws.recv()  # hello
            replies = []
            for frame in ["{not json", json.dumps({"type": "dance"}), json.dumps([1, 2]), b"\x00\x01", "x" * 5000]:
                await ws.send(frame)
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(json.dumps({"type": "ping"}))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return replies

    replies = asyncio.run(exchange())
    assert [r.get("code", r["type"]) for r in replies] == [
        "bad_json",
        "unknown_type",
        "unknown_type",
        "binary_frame",
        "too_large",
        "pong",
    ]


def test_health_endpoint_reports_and_answers_ping(stack):
    async def health():
        async with connect(f"{stack.ws_url}/ws/health/", open_timeout=10) as ws:
            status = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "ping"}))
            return status, json.loads(await ws.recv())

    assert asyncio.run(health()) == ({"type": "status", "status": "ok"}, {"type": "pong"})


def test_hello_carries_the_unread_count_and_the_recent_unread(stack, users, connect):
    from pipeline import Audience, emit_event
    from pipeline.models import Notification
    from pipeline.services import notification_mark_read
    from webapp.stack import wait_for

    bob = users["bob"]
    for text in ("first", "second", "third"):
        emit_event(event_type="announcement.posted", audience=Audience.users(bob), data={"text": text})
    assert wait_for(lambda: Notification.objects.filter(recipient=bob).count() == 3)
    oldest = Notification.objects.filter(recipient=bob).order_by("cursor").first()
    notification_mark_read(user_id=bob.pk, notification_id=oldest.pk)

    hello = connect(bob=bob)["bob"].frames[0][1]
    assert hello["type"] == "hello"
    assert hello["unread_count"] == 2
    # The three chains run concurrently, so cursors follow commit order, not emit order: compare with the rows.
    unread = Notification.objects.filter(recipient=bob).exclude(pk=oldest.pk).order_by("-cursor")
    assert [(n["body"], n["cursor"]) for n in hello["recent"]] == [(n.body, n.cursor) for n in unread]
    assert [n["cursor"] for n in hello["recent"]] == [3, 2]
