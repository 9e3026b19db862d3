"""The Channels relay on a real ASGI server (daphne): greeting, frames and their limits, read state, health."""

import asyncio
import contextlib

import pytest
from websockets.exceptions import ConnectionClosed

from pipeline import Audience, emit_event
from pipeline.models import Notification
from pipeline.services import notification_mark_read
from tests.support.ws import Socket
from webapp.stack import wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def notifications_for(user, count):
    """Emit ``count`` announcements to ``user`` and wait until they are stored; return them oldest first."""
    for n in range(count):
        emit_event(event_type="announcement.posted", audience=Audience.users(user), data={"text": f"note {n}"})
    assert wait_for(lambda: Notification.objects.filter(recipient=user).count() == count, timeout=30)
    return list(Notification.objects.filter(recipient=user).order_by("cursor"))


def test_a_valid_token_in_the_query_string_or_subprotocol_is_greeted(stack, users):
    token = token_issue(user_id=users["bob"].pk)

    async def hello(url, **kwargs):
        sock = await Socket.open(url, **kwargs)
        frame = await sock.next()
        await sock.close()
        return frame, sock.ws.subprotocol

    by_query, _ = asyncio.run(hello(f"{stack.ws_url}/ws/notifications/?token={token}"))
    by_header, chosen = asyncio.run(hello(f"{stack.ws_url}/ws/notifications/", token=token))
    assert by_query == {"type": "hello", "user_id": users["bob"].pk, "unread_count": 0, "cursor": 0, "recent": []}
    assert by_header == by_query
    assert chosen == "notiflow"


def test_ping_pong_and_bad_frames_get_error_replies_and_the_socket_stays_open(stack, users):
    token = token_issue(user_id=users["bob"].pk)
    frames = [
        "{not json",
        {"type": "dance"},
        [1, 2],
        b"\x00\x01",
        {"type": "mark_read"},
        {"type": "mark_read", "ids": [1], "all": True},
        {"type": "mark_read", "ids": ["1"]},
        {"type": "mark_seen", "ids": []},
        {"type": "resume", "cursor": -1},
        {"type": "resume", "cursor": True},
        {"type": "ping", "idz": 1},
    ]

    async def exchange():
        sock = await Socket.open(f"{stack.ws_url}/ws/notifications/", token=token)
        await sock.next()  # hello
        replies = []
        for frame in frames:
            await sock.send(frame)
            replies.append(await sock.next())
        await sock.send({"type": "ping", "id": "p-1"})
        replies.append(await sock.next())
        await sock.close()
        return replies

    replies = asyncio.run(exchange())
    assert [r.get("code", r["type"]) for r in replies] == [
        "bad_json",
        "unknown_type",
        "invalid_frame",
        "binary_frame",
        *["invalid_frame"] * 7,
        "pong",
    ]
    assert replies[-1] == {"type": "pong", "id": "p-1"}
    assert all(r["detail"] for r in replies[:-1])


def test_a_frame_over_the_size_limit_closes_the_socket_with_4413(stack, users):
    async def oversized():
        sock = await Socket.open(f"{stack.ws_url}/ws/notifications/", token=token_issue(user_id=users["bob"].pk))
        await sock.next()
        await sock.send({"type": "ping", "id": "x" * 4096})
        error = await sock.next()
        return error, await sock.closed_with()

    error, code = asyncio.run(oversized())
    assert (error["code"], code) == ("too_large", 4413)


def test_a_client_over_its_rate_limit_is_closed_with_4429_after_its_burst(stack, users):
    async def flood():
        sock = await Socket.open(f"{stack.ws_url}/ws/notifications/", token=token_issue(user_id=users["bob"].pk))
        await sock.next()
        with contextlib.suppress(ConnectionClosed):  # the server may close before the last ones are sent
            for _ in range(80):  # the bucket holds 50, refilled at 20/s: 80 at once cannot all fit
                await sock.send({"type": "ping"})
        code = await sock.closed_with()
        return [f["type"] for f in sock.frames[1:]], code

    replies, code = asyncio.run(flood())
    assert code == 4429
    assert replies[-1] == "error"
    assert 50 <= replies.count("pong") < 80


def test_read_state_changes_reach_every_socket_of_the_user_with_the_new_unread_count(stack, users):
    bob, carol = users["bob"], users["carol"]
    first, second, third = notifications_for(bob, 3)
    token = token_issue(user_id=bob.pk)

    async def two_tabs():
        url = f"{stack.ws_url}/ws/notifications/"
        tab1, tab2 = await Socket.open(url, token=token), await Socket.open(url, token=token)
        spy = await Socket.open(url, token=token_issue(user_id=carol.pk))
        for sock in (tab1, tab2, spy):
            await sock.next()
        await tab1.send({"type": "mark_read", "ids": [first.pk]})
        by_socket = [await tab.until(lambda f: f["type"] == "read_state") for tab in (tab1, tab2)]
        # The REST API's mark goes through the same service: both tabs hear it too.
        await asyncio.to_thread(notification_mark_read, user_id=bob.pk, notification_id=second.pk)
        by_api = [await tab.until(lambda f: f["type"] == "read_state") for tab in (tab1, tab2)]
        await tab2.send({"type": "mark_seen", "all": True})
        seen = [await tab.until(lambda f: f["type"] == "read_state") for tab in (tab1, tab2)]
        await tab2.send({"type": "mark_read", "all": True})
        all_read = [await tab.until(lambda f: f["type"] == "read_state") for tab in (tab1, tab2)]
        spied = await spy.drain(1.0)
        for sock in (tab1, tab2, spy):
            await sock.close()
        return by_socket, by_api, seen, all_read, spied

    by_socket, by_api, seen, all_read, spied = asyncio.run(two_tabs())

    def frame(ids, state, unread):
        return {"type": "read_state", "ids": ids, "all": ids is None, "state": state, "unread_count": unread}

    assert by_socket == [frame([first.pk], "read", 2)] * 2
    assert by_api == [frame([second.pk], "read", 1)] * 2
    assert seen == [frame(None, "seen", 1)] * 2
    assert all_read == [frame(None, "read", 0)] * 2
    assert spied == []
    third.refresh_from_db()
    assert third.state == Notification.State.READ


def test_health_endpoint_reports_its_checks_and_answers_ping(stack):
    async def health():
        sock = await Socket.open(f"{stack.ws_url}/ws/health/")
        status = await sock.next()
        await sock.send({"type": "ping"})
        pong = await sock.next()
        await sock.send("{oops")
        error = await sock.next()
        await sock.close()
        return status, pong, error

    status, pong, error = asyncio.run(health())
    assert status["type"] == "status"
    assert status["status"] == "ok"
    assert status["checks"] == {"database": "ok", "channel_layer": "ok"}
    assert pong == {"type": "pong"}
    assert error["code"] == "bad_json"


def test_hello_carries_the_unread_count_the_latest_cursor_and_the_recent_unread(stack, users, connect):
    bob = users["bob"]
    oldest, *_ = notifications_for(bob, 3)
    notification_mark_read(user_id=bob.pk, notification_id=oldest.pk)

    hello = connect(bob=bob)["bob"].frames[0][1]
    assert hello["type"] == "hello"
    assert hello["unread_count"] == 2
    assert hello["cursor"] == 3
    # The three chains run concurrently, so cursors follow commit order, not emit order: compare with the rows.
    unread = Notification.objects.filter(recipient=bob).exclude(pk=oldest.pk).order_by("-cursor")
    assert [(n["body"], n["cursor"]) for n in hello["recent"]] == [(n.body, n.cursor) for n in unread]
    assert [n["cursor"] for n in hello["recent"]] == [3, 2]
