"""The recovery sweep: which lost work it queues again, and when it leaves work alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from celeryconfig import visibility_timeout_check
from pipeline.deadletters import dead_letter_record
from pipeline.models import Delivery, DigestWindow, Event, Notification
from pipeline.recovery import stale_work_claim

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=1)


def idle(queue: str) -> bool:
    return True


def busy(queue: str) -> bool:
    return False


@pytest.fixture
def event(users):
    return Event.objects.create(
        event_type="critique.created",
        audience={"kind": "users", "user_ids": [users["bob"].pk]},
        occurred_at=timezone.now(),
        published_at=timezone.now() - LONG_AGO,
        progress_user_id=7,
    )


@pytest.fixture
def delivery(event, users):
    notification = Notification.objects.create(
        event=event,
        recipient=users["bob"],
        event_type=event.event_type,
        category="critiques",
        title="t",
        cursor=1,
        occurred_at=event.occurred_at,
    )
    return Delivery.objects.create(
        notification=notification, method="email", next_attempt_at=timezone.now() - LONG_AGO, status="retrying"
    )


def test_an_event_left_waiting_gets_a_drain_and_a_recent_one_does_not(event):
    now = timezone.now()
    assert stale_work_claim(now=now, idle=idle).events == []  # emitted just now: its drain may be on the way
    Event.objects.filter(pk=event.pk).update(created_at=now - LONG_AGO)
    assert stale_work_claim(now=now, idle=idle).events == [str(event.pk)]


def test_a_completed_or_recent_or_dead_lettered_event_is_left_alone(event, users):
    Event.objects.filter(pk=event.pk).update(completed_at=timezone.now(), created_at=timezone.now() - LONG_AGO)
    recent = Event.objects.create(event_type="critique.created", audience={}, occurred_at=timezone.now())
    poison = Event.objects.create(event_type="critique.created", audience={}, occurred_at=timezone.now())
    Event.objects.filter(pk=poison.pk).update(created_at=timezone.now() - LONG_AGO)
    dead_letter_record(kind="step", task="notiflow.events_drain", exception="x", event_id=poison.pk)
    assert recent.pk and stale_work_claim(now=timezone.now(), idle=idle).events == []


def test_nothing_is_queued_again_while_its_queue_has_a_backlog(event, delivery):
    assert stale_work_claim(now=timezone.now(), idle=busy).counts() == {
        "events": 0,
        "deliveries": 0,
        "digest_appends": 0,
        "windows": 0,
    }


def test_an_overdue_unclaimed_delivery_is_queued_again(delivery):
    now = timezone.now()
    assert stale_work_claim(now=now, idle=idle).deliveries == {"email": [delivery.pk]}
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == now
    assert stale_work_claim(now=now, idle=idle).deliveries == {}


def test_a_delivery_claimed_by_a_live_task_or_not_yet_due_is_left_alone(delivery):
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(claimed_by="t", claimed_until=now + timedelta(seconds=60))
    assert stale_work_claim(now=now, idle=idle).deliveries == {}
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=None, next_attempt_at=now - timedelta(seconds=5))
    assert stale_work_claim(now=now, idle=idle).deliveries == {}  # due 5 s ago: within RECOVER_AFTER
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=now - LONG_AGO, status="sent")
    assert stale_work_claim(now=now, idle=idle).deliveries == {}


def test_a_digest_delivery_outside_any_window_and_a_stuck_window_are_queued_again(delivery, users):
    Delivery.objects.filter(pk=delivery.pk).update(digest="daily", status="queued")
    window = DigestWindow.objects.create(
        user=users["bob"],
        frequency="hourly",
        closes_at=timezone.now() - LONG_AGO,
        status="sending",
        next_attempt_at=timezone.now() - LONG_AGO,
    )
    found = stale_work_claim(now=timezone.now(), idle=idle)
    assert found.digest_appends == [delivery.pk]
    assert found.windows == [window.pk]
    assert found.deliveries == {}


def test_a_visibility_timeout_not_longer_than_the_retry_cap_is_refused():
    visibility_timeout_check(visibility_timeout=3600, policies=[{"BACKOFF_CAP": 600}])
    with pytest.raises(ImproperlyConfigured, match="must exceed the longest retry countdown"):
        visibility_timeout_check(visibility_timeout=600, policies=[{"BACKOFF_CAP": 60}, {"BACKOFF_CAP": 600}])
