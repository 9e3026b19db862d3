import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connections
from django.db.models.signals import pre_save
from django.utils import timezone

from pipeline.digests import digest_entries_append, digest_window_claim, digests_claim_due, window_closes_at
from pipeline.models import Delivery, DigestEntry, DigestWindow, Event, Notification


def test_hourly_window_closes_on_the_next_hour():
    now = datetime(2026, 11, 21, 14, 37, 5, tzinfo=UTC)
    assert window_closes_at(frequency="hourly", now=now) == datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def test_daily_window_closes_at_midnight_utc():
    now = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
    assert window_closes_at(frequency="daily", now=now) == datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def test_weekly_window_closes_at_monday_midnight():
    saturday = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert window_closes_at(frequency="weekly", now=saturday) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


def test_exactly_on_the_boundary_opens_the_next_window():
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    assert window_closes_at(frequency="hourly", now=now) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)


# -- the append / claim race (issue 10) -----------------------------------------------------------------------


def queued_digest_delivery(user: Any) -> Delivery:
    """A queued email delivery of a new notification to ``user``, batched into a daily digest.

    The event is made processed already (its notification is written here): a pending one, committed by a
    ``transaction=True`` test, is taken by the drain of the session's stack when one runs (celery beat rings
    for events left pending), which then stores a notification for it too; on PostgreSQL the two inserts
    deadlocked once (2026-12-08)."""
    now = timezone.now()
    event = Event.objects.create(
        event_type="critique.created",
        audience={"kind": "users", "user_ids": [user.pk]},
        occurred_at=now,
        published_at=now,
        completed_at=now,
    )
    cursor = Notification.objects.filter(recipient=user).count() + 1
    notification = Notification.objects.create(
        event=event,
        recipient=user,
        event_type="critique.created",
        category="critiques",
        title=f"n{cursor}",
        cursor=cursor,
        occurred_at=now,
    )
    return Delivery.objects.create(notification=notification, method="email", digest="daily")


@pytest.mark.django_db(transaction=True)
def test_an_entry_appended_while_its_window_is_claimed_is_sent_with_it_or_goes_to_the_next_window(users):
    """Forced interleaving: the append stops between choosing the window and inserting the entry (a
    ``pre_save`` receiver holds it) while another connection claims the window and reads its entries. Before
    the fix (PostgreSQL, READ COMMITTED) the claim read one entry, the held one was inserted after into the
    window being sent, and never sent."""
    bob = users["bob"]
    first, second = queued_digest_delivery(bob), queued_digest_delivery(bob)
    assert digest_entries_append(delivery_ids=[first.pk]) == 1
    window = DigestWindow.objects.get(user=bob)
    reached, go = threading.Event(), threading.Event()

    def hold(sender: Any, instance: DigestEntry, **kwargs: Any) -> None:
        if instance.delivery_id == second.pk:
            reached.set()
            go.wait(10)

    def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
        out: list[Any] = []

        def run() -> None:
            try:
                out.append(work())
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread, out

    def claim() -> list[int]:
        assert digests_claim_due(as_of=window.closes_at + timedelta(seconds=1)) == [window.pk]
        claimed = digest_window_claim(window_id=window.pk, claimer="test")
        assert claimed is not None
        return sorted(d.pk for d in claimed[1])

    pre_save.connect(hold, sender=DigestEntry)
    try:
        appender, _ = in_thread(lambda: digest_entries_append(delivery_ids=[second.pk]))
        assert reached.wait(10)
        claimer, claimed = in_thread(claim)
        claimer.join(1.0)  # the claim runs now, or waits for the append's transaction
        go.set()
        appender.join(10)
        claimer.join(10)
    finally:
        pre_save.disconnect(hold, sender=DigestEntry)
        go.set()

    entry = DigestEntry.objects.select_related("window").get(delivery_id=second.pk)
    if entry.window_id == window.pk:
        assert claimed == [[first.pk, second.pk]]  # in the window being sent: sent with it
    else:
        assert claimed == [[first.pk]]
        assert entry.window.status == DigestWindow.Status.OPEN  # or in the next window, still to be sent
