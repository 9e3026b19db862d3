"""Resume: a client that reconnects with its last cursor gets every notification it missed, once, in order."""

import asyncio
import threading

import pytest
from django.db import transaction
from django.utils import timezone

from pipeline import Audience, emit_event
from pipeline.models import Event, Inbox, Notification
from tests.support.ws import Socket
from webapp.stack import wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def announce(user, *texts):
    for text in texts:
        emit_event(event_type="announcement.posted", audience=Audience.users(user), data={"text": text})


def stored(user, count):
    assert wait_for(lambda: Notification.objects.filter(recipient=user).count() >= count, timeout=60)
    return list(Notification.objects.filter(recipient=user).order_by("cursor"))


def late_commit(user, *, reserved_id, text):
    """Store one notification the way a transaction that started early and committed last leaves it.

    With PostgreSQL a transaction takes its id from the sequence at INSERT and
    becomes visible at COMMIT, so a row with a *lower* id can appear after rows
    with higher ids were read: a resume "after the last id" would skip it.
    ``reserved_id`` is such an id, taken before the others. The cursor is
    assigned as notiflow's persist step assigns it, under the inbox lock.
    """
    now = timezone.now()  # published and complete: the outbox relay and the recovery sweep leave it alone
    event = Event.objects.create(
        event_type="announcement.posted",
        data={"text": text},
        audience={"users": [user.pk]},
        occurred_at=now,
        published_at=now,
        completed_at=now,
    )
    with transaction.atomic():
        inbox = Inbox.objects.select_for_update().get(user=user)
        inbox.last_cursor += 1
        inbox.save(update_fields=["last_cursor"])
        return Notification.objects.create(
            id=reserved_id,
            event=event,
            recipient=user,
            event_type="announcement.posted",
            category="announcements",
            title="late",
            body=text,
            cursor=inbox.last_cursor,
            occurred_at=now,
        )


def test_a_reconnecting_client_gets_everything_it_missed_once_in_order_even_when_ids_commit_out_of_order(stack, users):
    bob, carol = users["bob"], users["carol"]
    announce(bob, "before")
    (before,) = stored(bob, 1)
    token = token_issue(user_id=bob.pk)
    url = f"{stack.ws_url}/ws/notifications/"

    async def last_cursor_then_disconnect():
        sock = await Socket.open(url, token=token)
        hello = await sock.next()
        await sock.close()
        return hello["cursor"]

    cursor = asyncio.run(last_cursor_then_disconnect())
    assert cursor == before.cursor
    # While bob is away: an id is taken first (a placeholder row of carol's), then 12 events
    # go through the pipeline (concurrent chains), then the early id commits last.
    reserved = Notification.objects.create(
        event=before.event,
        recipient=carol,
        event_type="x",
        category="x",
        title="",
        cursor=1,
        occurred_at=timezone.now(),
    ).pk
    Notification.objects.filter(pk=reserved).delete()
    announce(bob, *(f"away {n}" for n in range(12)))
    stored(bob, 13)
    late = late_commit(bob, reserved_id=reserved, text="committed last")
    missed = Notification.objects.filter(recipient=bob, cursor__gt=cursor).order_by("cursor")
    assert late.pk < min(n.pk for n in missed if n.pk != late.pk)  # ids out of commit order

    async def reconnect():
        sock = await Socket.open(f"{url}?cursor={cursor}", token=token)
        hello = await sock.next()
        resumed = await sock.next()
        extra = await sock.drain(1.0)
        await sock.close()
        return hello, resumed, extra

    hello, resumed, extra = asyncio.run(reconnect())
    assert hello["recent"] == []
    assert resumed["type"] == "resumed"
    assert resumed["recovered"] is True
    got = [n["id"] for n in resumed["notifications"]]
    assert got == [n.pk for n in missed]
    assert len(got) == len(set(got)) == 13
    assert late.pk in got
    assert [n["cursor"] for n in resumed["notifications"]] == list(range(cursor + 1, cursor + 14))
    assert resumed["cursor"] == cursor + 13
    assert [f for f in extra if f["type"] == "notification"] == []


def test_pushes_that_arrive_during_a_resume_come_after_it_and_are_not_repeated(stack, users):
    bob = users["bob"]
    token = token_issue(user_id=bob.pk)
    url = f"{stack.ws_url}/ws/notifications/"
    announce(bob, *(f"missed {n}" for n in range(8)))
    stored(bob, 8)
    emitting = threading.Thread(target=announce, args=(bob, *(f"live {n}" for n in range(8))))

    async def resume_while_emitting():
        sock = await Socket.open(url, token=token)
        await sock.next()  # hello
        emitting.start()
        await sock.send({"type": "resume", "cursor": 0})  # the first-message form
        frames = []
        while sum(len(f.get("notifications", [])) + (f["type"] == "notification") for f in frames) < 16:
            frames.append(await sock.until(lambda f: f["type"] in ("resumed", "notification"), timeout=30))
        frames += await sock.drain(1.5)
        await sock.close()
        return frames

    frames = asyncio.run(resume_while_emitting())
    emitting.join()
    kinds = [f["type"] for f in frames if f["type"] in ("resumed", "notification")]
    assert kinds.count("resumed") == 1
    resumed_at = kinds.index("resumed")
    resumed = frames[[f["type"] for f in frames].index("resumed")]
    delivered = [n["cursor"] for n in resumed["notifications"]] + [
        f["notification"]["cursor"] for f in frames if f["type"] == "notification"
    ]
    assert sorted(delivered) == list(range(1, 17))  # all 16, each once
    assert [n["cursor"] for n in resumed["notifications"]] == sorted(n["cursor"] for n in resumed["notifications"])
    # Every push after the resume is newer than what the resume carried.
    later = [f["notification"]["cursor"] for f in frames[resumed_at + 1 :] if f["type"] == "notification"]
    assert all(c > resumed["cursor"] for c in later)


def test_past_the_resume_limit_the_client_is_told_to_refetch(stack, users):
    bob = users["bob"]
    announce(bob, *(f"n{n}" for n in range(27)))  # RESUME_LIMIT is 25 in the test settings
    stored(bob, 27)

    async def reconnect():
        sock = await Socket.open(f"{stack.ws_url}/ws/notifications/?cursor=1", token=token_issue(user_id=bob.pk))
        await sock.next()
        resumed = await sock.next()
        await sock.close()
        return resumed

    assert asyncio.run(reconnect()) == {
        "type": "resumed",
        "recovered": False,
        "notifications": [],
        "cursor": 27,
        "refetch": "/api/notifications/",
    }
