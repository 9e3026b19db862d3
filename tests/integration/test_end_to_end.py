"""emit_event() in this process → real worker → real Redis → real ASGI server → WebSocket client; real SMTP."""

import json
from pathlib import Path

import pytest

from pipeline import Audience, emit_event
from pipeline.models import Delivery, Notification
from webapp.stack import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_one_event_reaches_its_recipient_everywhere_and_no_one_else(users, connect, clean_mail):
    stack = clean_mail
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    sockets = connect(bob=bob, carol=carol)

    event_id = emit_event(
        event_type="critique.created",
        actor=alice,
        audience=Audience.users(bob),
        data={"artwork_title": "Blue Heron", "excerpt": "Lovely reflections"},
    )

    pushes = wait_for(lambda: sockets["bob"].notifications())
    assert len(pushes) == 1
    payload = pushes[0][1]
    assert payload["event_id"] == str(event_id)
    assert payload["event_type"] == "critique.created"
    assert payload["title"] == "alice critiqued your artwork “Blue Heron”"
    assert payload["body"] == "alice wrote: “Lovely reflections”"
    assert payload["data"] == {"artwork_title": "Blue Heron", "excerpt": "Lovely reflections"}
    assert payload["cursor"] == 1
    assert payload["state"] == "unseen"

    emails = wait_for(stack.emails)
    assert [(m["To"], m["Subject"]) for m in emails] == [
        ("bob@example.com", "alice critiqued your artwork “Blue Heron”")
    ]
    assert "Lovely reflections" in emails[0].get_body(preferencelist=("html",)).get_content()

    # carol, connected at the same moment, received nothing of it: a later event of her own is her first push.
    sentinel = emit_event(event_type="announcement.posted", audience=Audience.users(carol), data={"text": "hi"})
    carol_pushes = wait_for(lambda: sockets["carol"].notifications())
    assert [p["event_id"] for _, p in carol_pushes] == [str(sentinel)]
    assert len(sockets["bob"].notifications()) == 1

    notification = Notification.objects.get(event_id=event_id)
    assert notification.recipient == bob
    assert Notification.objects.filter(event_id=event_id).count() == 1
    deliveries = wait_for(
        lambda: list(Delivery.objects.filter(notification=notification, status="sent").order_by("method"))
    )
    assert [(d.method, d.status, d.attempts) for d in deliveries] == [("email", "sent", 1), ("websocket", "sent", 1)]
    assert Delivery.objects.filter(notification__event_id=event_id).count() == 2


def test_the_actor_is_left_out_of_the_audience(users, connect):
    alice = users["alice"]
    event_id = emit_event(
        event_type="announcement.posted", actor=alice, audience=Audience.everyone(), data={"text": "hello all"}
    )
    recipients = wait_for(
        lambda: set(Notification.objects.filter(event_id=event_id).values_list("recipient__username", flat=True))
        if Notification.objects.filter(event_id=event_id).count() == 3
        else set()
    )
    assert recipients == {"bob", "carol", "dave"}


def test_a_third_party_method_added_in_settings_delivers(users, stack, settings):
    record = stack.env["NOTIFLOW_TEST_RECORD"]
    Path(record).write_text("")
    event_id = emit_event(event_type="test.recorded", audience=[users["bob"].pk], data={"text": "ping"})

    lines = wait_for(lambda: Path(record).read_text().splitlines())
    assert len(lines) == 1
    message = json.loads(lines[0])
    assert message["recipient"]["username"] == "bob"
    assert message["event_type"] == "test.recorded"
    assert message["context"]["event_id"] == str(event_id)
    delivery = wait_for(lambda: Delivery.objects.filter(method="recording", status="sent").first())
    assert delivery.notification.event_id == event_id
