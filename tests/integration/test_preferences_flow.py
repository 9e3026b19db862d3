"""Preferences through the real pipeline: a muted method is skipped, a digest batches."""

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.websocket import NO_SOCKET
from pipeline import Audience, emit_event
from pipeline.models import Delivery, DigestEntry, DigestWindow, Preference
from pipeline.tasks import digests_flush_due
from webapp.stack import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def critique(users, recipient):
    return emit_event(
        event_type="critique.created",
        actor=users["alice"],
        audience=Audience.users(recipient),
        data={"artwork_title": "Night Market", "excerpt": "Great light"},
    )


def test_a_muted_method_is_skipped_with_its_reason(users, clean_mail):
    stack = clean_mail
    Preference.objects.create(user=users["dave"], category="critiques", method="email", setting="off")
    muted = critique(users, users["dave"])
    control = critique(users, users["bob"])

    wait_for(lambda: Delivery.objects.filter(notification__event_id=control, method="email", status="sent").exists())
    email = Delivery.objects.get(notification__event_id=muted, method="email")
    assert email.status == "skipped"
    assert email.reason == "preference: email off for category critiques"
    assert email.attempts == 0
    # dave has no socket open: his push is skipped, and his client reads the notification when it connects.
    websocket = wait_for(
        lambda: Delivery.objects.filter(notification__event_id=muted, method="websocket", status="skipped").first()
    )
    assert websocket is not None and websocket.reason == NO_SOCKET
    assert [m["To"] for m in stack.emails()] == ["bob@example.com"]


def test_a_digest_preference_sends_one_digest_after_the_window_closes(users, clean_mail):
    stack = clean_mail
    bob = users["bob"]
    Preference.objects.create(user=bob, category="likes", method="email", setting="hourly")
    events = [
        emit_event(
            event_type="like.created",
            actor=users[name],
            audience=Audience.users(bob),
            data={"artwork_id": 1, "artwork_title": "Blue Heron"},
        )
        for name in ("alice", "carol", "dave")
    ]

    assert wait_for(lambda: DigestEntry.objects.filter(delivery__notification__event_id__in=events).count() == 3)
    assert wait_for(lambda: Delivery.objects.filter(method="websocket", status="skipped").count() == 3)  # offline
    assert stack.emails() == []  # no immediate like emails
    window = DigestWindow.objects.get(user=bob)
    assert window.status == "open"
    assert window.closes_at > timezone.now()

    as_of = (window.closes_at + timedelta(seconds=1)).isoformat()
    digests_flush_due.delay(as_of=as_of)
    emails = wait_for(stack.emails)
    digests_flush_due.delay(as_of=as_of)  # closing again sends nothing more
    assert wait_for(lambda: DigestWindow.objects.get(pk=window.pk).status == "sent")

    assert len(emails) == 1
    assert emails[0]["To"] == "bob@example.com"
    assert emails[0]["Subject"] == "Your hourly digest: 3 new notifications"
    text = emails[0].get_body(preferencelist=("plain",)).get_content()
    email_deliveries = Delivery.objects.filter(notification__event_id__in=events, method="email")
    # One line per like, in the order the deliveries were stored: the three chains run
    # concurrently, so that is commit order, not emit order.
    likers = [d.notification.event.actor.username for d in email_deliveries.order_by("pk")]
    assert sorted(likers) == ["alice", "carol", "dave"]
    assert [line for line in text.splitlines() if line.startswith("- ")] == [
        f"- {name} liked “Blue Heron”" for name in likers
    ]
    assert sorted(email_deliveries.values_list("status", flat=True)) == ["sent", "sent", "sent"]
    wait_for(lambda: len(stack.emails()) > 1, timeout=2)
    assert len(stack.emails()) == 1
