"""Issue 9: a socket sends its user's pushes in push stream order, with no gaps and each once.

First :class:`~webapp.realtime.stream.PushStream`, the bookkeeping, alone;
then the relay (:class:`~webapp.realtime.consumers.NotificationConsumer`)
through Channels' ``WebsocketCommunicator`` on an in-memory channel layer,
with notifications stored as the pipeline stores them (cursor, ``push_seq``,
the inbox's ``(last_cursor, last_push_seq)``) and ``notify.push`` messages
sent to the user's group directly: early, late, twice or never.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction
from django.utils import timezone

from pipeline.models import Event, Inbox, Notification
from pipeline.selectors import notification_payload
from webapp.realtime.consumers import REFETCH_URL, NotificationConsumer
from webapp.realtime.stream import PushStream

# -- PushStream ---------------------------------------------------------------


def n(cursor: int) -> dict[str, Any]:
    """A push's notification payload, as far as the stream looks at it."""
    return {"id": 100 + cursor, "cursor": cursor}


def test_pushes_in_order_pass_through_and_move_the_position():
    stream = PushStream()
    assert stream.offer(n(1), 1) == [n(1)]
    assert stream.offer(n(2), 2) == [n(2)]
    assert (stream.cursor, stream.seq, stream.waiting) == (2, 2, False)


def test_a_push_before_its_predecessor_is_held_and_released_behind_it():
    stream = PushStream(cursor=4, seq=3)  # where a hello left it
    assert stream.offer(n(7), 5) == []
    assert stream.offer(n(8), 6) == []
    assert stream.waiting
    assert (stream.cursor, stream.seq) == (4, 3)  # nothing held counts as sent
    assert stream.offer(n(5), 4) == [n(5), n(7), n(8)]
    assert (stream.cursor, stream.seq, stream.waiting) == (8, 6, False)


def test_duplicates_are_dropped_whether_sent_held_or_covered_by_the_cursor():
    stream = PushStream()
    assert stream.offer(n(1), 1) == [n(1)]
    assert stream.offer(n(1), 1) == []  # the same push again
    assert stream.offer(n(3), 3) == []
    assert stream.offer(n(3), 3) == []  # held already: not held twice
    assert stream.offer(n(2), 2) == [n(2), n(3)]  # ... and released once
    assert stream.offer(n(2), 2) == []  # a number at or below the position
    covered = PushStream(cursor=10, seq=2)  # a hello or a resume sent up to cursor 10
    assert covered.offer(n(10), 3) == []
    assert covered.offer(n(9), 7) == []
    assert not covered.waiting


def test_missing_names_the_numbers_not_come_below_the_highest_held_push_and_its_cursor():
    stream = PushStream(cursor=3, seq=2)
    assert stream.missing() == ([], 0)
    for cursor, seq in ((6, 5), (9, 7), (10, 8)):
        stream.offer(n(cursor), seq)
    assert stream.missing() == ([3, 4, 6], 10)


def test_advance_forgets_the_held_pushes_it_covers_and_releases_those_that_follow():
    stream = PushStream(cursor=1, seq=1)
    for cursor, seq in ((4, 3), (5, 4), (8, 6)):
        assert stream.offer(n(cursor), seq) == []
    # A resume sent everything up to cursor 4, push number 3: 3 is not sent again, 4 follows on, 6 still waits.
    assert stream.advance(cursor=4, seq=3) == [n(5)]
    assert (stream.cursor, stream.seq) == (5, 4)
    assert stream.held == {6: n(8)}
    # An older position never moves the stream back.
    assert stream.advance(cursor=2, seq=1) == []
    assert (stream.cursor, stream.seq) == (5, 4)
    assert stream.advance(cursor=9, seq=7) == []  # covers the one still held
    assert (stream.cursor, stream.seq, stream.waiting) == (9, 7, False)


def test_skip_gap_gives_up_on_the_numbers_below_the_first_held_push_only():
    stream = PushStream(cursor=1, seq=1)
    assert stream.skip_gap() == []  # nothing held: nothing to skip
    assert (stream.cursor, stream.seq) == (1, 1)
    for cursor, seq in ((4, 4), (5, 5), (9, 8)):
        stream.offer(n(cursor), seq)
    assert stream.skip_gap() == [n(4), n(5)]  # 2 and 3 were deleted
    assert (stream.cursor, stream.seq) == (5, 5)
    assert stream.held == {8: n(9)}  # a second gap is not skipped with the first
    assert stream.skip_gap() == [n(9)]
    assert (stream.cursor, stream.seq, stream.waiting) == (9, 8, False)


def test_a_push_without_a_number_passes_unless_its_cursor_was_sent():
    stream = PushStream(cursor=3, seq=2)
    assert stream.offer(n(4), None) == [n(4)]
    assert stream.offer(n(3), None) == []
    assert stream.offer({"id": 1, "title": "no cursor"}, None) == [{"id": 1, "title": "no cursor"}]
    assert (stream.cursor, stream.seq, stream.waiting) == (3, 2, False)  # not part of the stream
    stream.offer(n(6), 4)  # held for 3
    assert stream.offer(n(5), None) == [n(5)]  # not held behind the stream's gap
    assert stream.held == {4: n(6)}


# -- the relay ----------------------------------------------------------------

relay_db = pytest.mark.django_db(transaction=True)  # the consumer reads through database_sync_to_async threads

#: Generous: how long a frame that must come may take (far above GAP_WAIT where a fill is awaited).
COMES = 5.0


@pytest.fixture
def gap_wait(settings: Any) -> Iterator[Callable[[float], None]]:
    """An in-memory channel layer for the test (Channels drops its cached layers when ``CHANNEL_LAYERS``
    changes); call the fixture to set ``NOTIFLOW["WEBSOCKET"]["GAP_WAIT"]``.

    Afterwards it closes the database connection of the thread that ran the consumer's queries (asgiref's
    one thread for thread-sensitive calls outside ``async_to_sync``): importing ``worker`` sets
    ``CONN_MAX_AGE`` to 600 s, so that connection would stay open, and PostgreSQL refuses to drop the
    test database while a session is open on it."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    def set_gap_wait(seconds: float) -> None:
        settings.NOTIFLOW = {
            **settings.NOTIFLOW,
            "WEBSOCKET": {**settings.NOTIFLOW["WEBSOCKET"], "GAP_WAIT": seconds},
        }

    yield set_gap_wait
    asyncio.run(sync_to_async(connections.close_all)())  # queued behind any query still running there


def store_sync(user: Any, *pushed: bool) -> list[tuple[int | None, dict[str, Any]]]:
    """Store one notification of ``user`` per flag as the pipeline does: the next cursors, under the inbox's
    row lock, numbered in the push stream when pushed (``push_seq`` empty otherwise), the inbox advanced to
    match. Returns ``[(push_seq, payload)]`` in cursor order, payloads as read back from the database."""
    now = timezone.now()
    created = []
    with transaction.atomic():
        Inbox.objects.get_or_create(user=user)
        inbox = Inbox.objects.select_for_update().get(user=user)
        for push in pushed:
            inbox.last_cursor += 1
            seq = None
            if push:
                inbox.last_push_seq += 1
                seq = inbox.last_push_seq
            event = Event.objects.create(
                event_type="announcement.posted",
                audience={"kind": "users", "user_ids": [user.pk]},
                occurred_at=now,
                published_at=now,
                completed_at=now,
            )
            created.append(
                Notification.objects.create(
                    event=event,
                    recipient=user,
                    event_type="announcement.posted",
                    category="announcements",
                    title=f"n{inbox.last_cursor}",
                    cursor=inbox.last_cursor,
                    push_seq=seq,
                    occurred_at=now,
                )
            )
        inbox.save(update_fields=["last_cursor", "last_push_seq"])
    return [(row.push_seq, notification_payload(Notification.objects.get(pk=row.pk))) for row in created]


store = database_sync_to_async(store_sync)


async def open_socket(user: Any) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """A socket of ``user``, connected; returns it and its ``hello`` frame."""
    socket = WebsocketCommunicator(NotificationConsumer.as_asgi(), "/ws/notifications/")
    socket.scope["user"] = user
    connected, _ = await socket.connect(timeout=COMES)
    assert connected
    hello = await socket.receive_json_from(timeout=COMES)
    assert hello["type"] == "hello"
    assert hello["user_id"] == user.pk
    return socket, hello


async def push(user: Any, stored: tuple[int | None, dict[str, Any]]) -> None:
    """The pipeline's push of one stored notification to ``user``'s sockets."""
    seq, payload = stored
    await get_channel_layer().group_send(
        f"user.{user.pk}", {"type": "notify.push", "notification": payload, "seq": seq}
    )


async def received(socket: WebsocketCommunicator, count: int, timeout: float = COMES) -> list[dict[str, Any]]:
    """The next ``count`` frames, each of which must be a ``notification``: their payloads."""
    frames = [await socket.receive_json_from(timeout=timeout) for _ in range(count)]
    assert [f["type"] for f in frames] == ["notification"] * count, frames
    return [f["notification"] for f in frames]


async def nothing_more(socket: WebsocketCommunicator, seconds: float) -> None:
    """No frame comes within ``seconds`` (a frame that does is shown)."""
    if not await socket.receive_nothing(timeout=seconds):
        raise AssertionError(f"unexpected frame: {json.loads((await socket.receive_output())['text'])}")


@relay_db
def test_the_hello_starts_the_stream_and_late_pushes_it_covered_are_dropped(users, gap_wait):
    gap_wait(5.0)
    alice = users["alice"]
    before = store_sync(alice, True, True)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        socket, hello = await open_socket(alice)
        await push(alice, before[1])  # committed before the hello was read, pushed after: in the hello already
        ((_, third),) = await store(alice, True)
        await push(alice, (3, third))
        frames = await received(socket, 1, timeout=1.0)  # seq 3 follows the hello's seq 2 at once
        await nothing_more(socket, 0.5)
        await socket.disconnect()
        assert frames == [third]
        return hello, frames

    hello, frames = asyncio.run(scenario())
    assert (hello["cursor"], hello["unread_count"]) == (2, 2)
    assert hello["recent"] == [before[1][1], before[0][1]]
    assert [p["cursor"] for p in frames] == [3]


@relay_db
def test_a_push_that_comes_before_its_predecessor_is_sent_after_it(users, gap_wait):
    gap_wait(5.0)  # no gap fill within the test: only the late push itself can release the early one
    alice = users["alice"]

    async def scenario() -> list[dict[str, Any]]:
        socket, hello = await open_socket(alice)
        assert hello["cursor"] == 0
        first, second = await store(alice, True, True)
        await push(alice, second)
        await nothing_more(socket, 0.5)  # held: 1 has not come
        await push(alice, first)
        frames = await received(socket, 2, timeout=1.0)
        await nothing_more(socket, 0.3)
        await socket.disconnect()
        assert frames == [first[1], second[1]]
        return frames

    assert [p["cursor"] for p in asyncio.run(scenario())] == [1, 2]


@relay_db
@pytest.mark.parametrize(
    ("pushed", "cursors"),
    [
        ((True, True, True), [1, 2, 3]),
        # An unpushed notification (cursor 2) inside the gap: the fill reads past it, as the pushes do.
        ((True, False, True, True), [1, 3, 4]),
    ],
)
def test_a_lost_push_is_read_from_the_database_after_gap_wait_and_its_late_copy_is_dropped(
    users, gap_wait, pushed, cursors
):
    gap_wait(0.2)
    alice = users["alice"]

    async def scenario() -> list[dict[str, Any]]:
        socket, _ = await open_socket(alice)
        one, two, three = [row for row in await store(alice, *pushed) if row[0] is not None]
        await push(alice, one)
        await push(alice, three)  # two is lost
        frames = await received(socket, 3)  # 1 at once; 2 (from the database) and 3 after GAP_WAIT
        await push(alice, two)  # the lost push turns up after all
        await nothing_more(socket, 1.0)  # also past the quiet check GAP_WAIT after the fill
        await socket.disconnect()
        assert frames == [one[1], two[1], three[1]]
        return frames

    assert [p["cursor"] for p in asyncio.run(scenario())] == cursors


@relay_db
def test_a_gap_behind_more_held_pushes_than_resume_limit_is_filled_not_refetched(users, gap_wait, settings):
    # Many pushes come within GAP_WAIT of a lost one (a busy user): the fill reads the missing numbers only, so
    # the held pushes, however many, are sent behind them; no refetch. Two gaps are filled in one go.
    gap_wait(0.2)
    alice = users["alice"]
    limit = int(settings.NOTIFLOW["WEBSOCKET"]["RESUME_LIMIT"])
    lost = {2, limit + 10}

    async def scenario() -> list[dict[str, Any]]:
        socket, _ = await open_socket(alice)
        rows = await store(alice, *([True] * (limit * 2)))
        for row in rows:
            if row[0] not in lost:
                await push(alice, row)
        frames = await received(socket, len(rows))  # 1 at once; the rest after GAP_WAIT, 2 and 35 from the database
        await nothing_more(socket, 0.5)
        await socket.disconnect()
        assert frames == [payload for _, payload in rows]
        return frames

    assert [p["cursor"] for p in asyncio.run(scenario())] == list(range(1, limit * 2 + 1))


@relay_db
def test_a_lost_last_push_is_found_by_the_quiet_check_and_sent_once(users, gap_wait):
    gap_wait(0.2)
    alice = users["alice"]

    async def scenario() -> list[dict[str, Any]]:
        socket, _ = await open_socket(alice)
        one, two = await store(alice, True, True)
        await push(alice, one)  # two is lost, and nothing comes after it to show the gap
        frames = await received(socket, 2)  # the inbox's last_push_seq 2 > 1: 2 is read from the database
        await nothing_more(socket, 1.0)
        await socket.disconnect()
        assert frames == [one[1], two[1]]
        return frames

    assert [p["cursor"] for p in asyncio.run(scenario())] == [1, 2]


@relay_db
def test_a_notification_without_a_push_number_does_not_stall_the_stream(users, gap_wait):
    gap_wait(5.0)  # a stall would last this long: the pushes must come well before
    alice = users["alice"]

    async def scenario() -> list[dict[str, Any]]:
        socket, _ = await open_socket(alice)
        one, unpushed, three = await store(alice, True, False, True)
        assert (one[0], unpushed[0], three[0]) == (1, None, 2)
        await push(alice, one)
        await push(alice, three)
        frames = await received(socket, 2, timeout=1.0)
        await nothing_more(socket, 0.5)  # cursor 2 is not a socket's
        await socket.disconnect()
        return frames

    assert [p["cursor"] for p in asyncio.run(scenario())] == [1, 3]


@relay_db
def test_a_resume_while_pushes_are_held_carries_them_and_they_are_not_sent_again(users, gap_wait):
    gap_wait(5.0)  # no gap fill within the test: the resume alone must settle the held pushes
    alice = users["alice"]

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        socket, _ = await open_socket(alice)
        stored = await store(alice, True, True, True)
        await push(alice, stored[1])
        await push(alice, stored[2])
        await nothing_more(socket, 0.5)  # held: 1 has not come
        await socket.send_json_to({"type": "resume", "cursor": 0})
        resumed = await socket.receive_json_from(timeout=COMES)
        assert resumed == {
            "type": "resumed",
            "recovered": True,
            "notifications": [payload for _, payload in stored],
            "cursor": 3,
        }
        await push(alice, stored[0])  # the lost push turns up after all: the resume sent it
        await nothing_more(socket, 0.5)  # 2 and 3 are not sent again either
        ((_, fourth),) = await store(alice, True)
        await push(alice, (4, fourth))  # the stream goes on after the resume's position (seq 3)
        frames = await received(socket, 1, timeout=1.0)
        await nothing_more(socket, 0.3)
        await socket.disconnect()
        assert frames == [fourth]
        return resumed, frames

    resumed, frames = asyncio.run(scenario())
    assert [p["cursor"] for p in resumed["notifications"]] == [1, 2, 3]
    assert [p["cursor"] for p in frames] == [4]


@relay_db
def test_a_resume_above_the_latest_cursor_is_told_to_refetch(users, gap_wait):
    gap_wait(5.0)
    alice = users["alice"]
    store_sync(alice, True, True)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        socket, hello = await open_socket(alice)
        await socket.send_json_to({"type": "resume", "cursor": 7})
        resumed = await socket.receive_json_from(timeout=COMES)
        third = await store(alice, True)
        await push(alice, third[0])
        frames = await received(socket, 1, timeout=1.0)  # the stream is still at the hello's position
        await nothing_more(socket, 0.3)
        await socket.disconnect()
        return hello, resumed, frames

    hello, resumed, frames = asyncio.run(scenario())
    assert hello["cursor"] == 2
    assert resumed == {"type": "resumed", "recovered": False, "notifications": [], "cursor": 2, "refetch": REFETCH_URL}
    assert [p["cursor"] for p in frames] == [3]
