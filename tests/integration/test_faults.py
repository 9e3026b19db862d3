"""Fault injection on the real processes: nothing lost, nothing doubled (issue 3's six scenarios).

Each test kills, stops or replaces one process of the session's stack and
puts it back before it ends (webapp/faults.py does the work; bench/faults.py
runs the same drills and prints their figures).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from pipeline.models import DeadLetter, Delivery, Notification
from webapp import faults
from webapp.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@pytest.fixture
def recipients(db: Any) -> list[int]:
    User = get_user_model()
    return [User.objects.create_user(username=f"r{i}", email=f"r{i}@example.com").pk for i in range(10)]


@pytest.fixture
def faulty(stack: Stack) -> Iterator[Stack]:
    """The stack; after the test, every process that a drill stopped is started again."""
    yield stack
    missing = [name for name in stack.processes if name not in stack._honchos]
    if missing:
        stack.restart(*missing)


def assert_everything_delivered_once(report: faults.DrillReport, size: int) -> None:
    """``size`` notifications stored and ``size`` emails received, each exactly once, and no stray email."""
    assert report.notifications == size
    assert report.emails == size
    assert report.duplicates == 0
    assert report.lost == 0
    assert report.notes["emails_of_no_delivery"] == 0


def test_1_worker_killed_with_sigkill_while_1000_events_are_in_flight(faulty, recipients):
    report = faults.drill_worker_killed(faulty, recipients, size=1000)

    assert report.in_flight > 0, "the worker was killed after everything was already sent"
    assert report.events == 1000
    assert_everything_delivered_once(report, 1000)
    assert report.dead_letters == 0
    statuses = set(Delivery.objects.filter(notification__recipient_id__in=recipients).values_list("status", flat=True))
    assert statuses == {"sent"}


def test_2_redis_restarted_in_the_middle_of_a_run(faulty, recipients):
    # 1,000 as for the SIGKILL: the drill strikes once it sees a tenth of the emails sent (it looks every
    # 0.25 s), and 300 events were all sent by then once email got faster (in flight 0, 2026-12-07).
    report = faults.drill_redis_restarted(faulty, recipients, size=1000)

    assert report.in_flight > 0
    assert_everything_delivered_once(report, 1000)
    assert report.dead_letters == 0


def test_3_broker_down_for_30_seconds_while_the_application_emits(faulty, recipients):
    # drill_broker_down calls emit_event() throughout the outage: one exception would fail the test.
    report = faults.drill_broker_down(faulty, recipients, size=100, outage=30.0)

    assert report.in_flight == 100, "something was delivered while the broker was down"
    assert_everything_delivered_once(report, 100)
    assert report.dead_letters == 0
    # The circuit breaker: a call waits for the broker (about a second) at most once per 5 s pause.
    assert report.notes["emits_over_half_a_second"] <= 30 / 5 + 1
    assert report.notes["slowest_emit_seconds"] < 5.0


def test_4a_smtp_down_for_60_seconds_retries_and_delivers_without_dead_letters(faulty, recipients):
    report = faults.drill_smtp_down(faulty, recipients, size=100, outage=60.0)

    assert report.in_flight == 100
    assert_everything_delivered_once(report, 100)
    assert report.dead_letters == 0
    attempts = list(
        Delivery.objects.filter(notification__recipient_id__in=recipients).values_list("attempts", flat=True)
    )
    assert min(attempts) >= 2, "some email went out at the first attempt although the server was down"


def test_4b_smtp_rejecting_permanently_dead_letters_and_replay_delivers_each_once(faulty, recipients):
    report = faults.drill_smtp_rejects(faulty, recipients, size=50)

    assert report.notes["dead_before_replay"] == 50
    assert_everything_delivered_once(report, 50)
    letters = DeadLetter.objects.filter(delivery__notification__recipient_id__in=recipients)
    assert letters.count() == 50
    assert set(letters.values_list("status", "kind", "attempts")) == {("replayed", "delivery", 1)}
    assert all("550" in e for e in letters.values_list("exception", flat=True))


def test_4c_a_slow_provider_whose_batches_outlast_the_lease_sends_every_email_once(faulty, recipients):
    """Issue 10: SMTP at 2-5 s a message, email batches that take longer than DELIVERY_LEASE (30 s here) while
    the recovery sweep runs every 2 s: the sender renews its claim, so nothing is taken over and sent twice."""
    report = faults.drill_slow_provider(faulty, recipients, size=24)

    assert report.notes["longest_claim_seconds"] > report.notes["lease_seconds"], report.notes
    assert_everything_delivered_once(report, 24)
    assert report.dead_letters == 0


def test_5_a_poison_event_is_dead_lettered_while_the_events_around_it_are_delivered(faulty, recipients):
    report = faults.drill_poison(faulty, recipients, size=41)

    assert_everything_delivered_once(report, 40)  # one of the 41 is the poison event: no notification
    assert report.events == 41
    (letter,) = DeadLetter.objects.filter(kind="step")
    assert letter.task == "notiflow.events_drain"
    assert letter.args == [str(letter.event_id)]
    assert letter.event is not None and letter.event.data["poison"] is True
    assert "TemplateDoesNotExist" in letter.exception
    assert "Traceback" in letter.traceback
    assert not Notification.objects.filter(event=letter.event).exists()
    # Announced on the dead_letter queue and consumed there by the worker.
    assert wait_for(lambda: DeadLetter.objects.filter(pk=letter.pk, announced_at__isnull=False).exists())


def test_5b_a_replayed_step_that_fails_again_returns_to_the_dead_letters_once_without_looping(faulty, recipients):
    faults.drill_poison(faulty, recipients, size=3)
    (first,) = DeadLetter.objects.filter(kind="step")

    faulty.manage("deadletters", "replay", str(first.pk))
    again = wait_for(lambda: DeadLetter.objects.filter(kind="step").exclude(pk=first.pk).first())

    assert again is not None, "the replay did not make the event pending again"
    assert (again.task, again.event_id, again.replay_of_id) == (first.task, first.event_id, first.pk)
    assert again.args == first.args
    first.refresh_from_db()
    assert first.status == "replayed"
    time.sleep(15)  # longer than RECOVER_AFTER plus a sweep: the sweep leaves a dead-lettered event alone
    assert DeadLetter.objects.filter(kind="step").count() == 2


def test_6_bad_input_raises_the_documented_error_and_queues_nothing(faulty, recipients):
    report = faults.drill_bad_input(faulty, recipients)

    assert report.notes["errors"] == {
        "unknown event type": "UnknownEventType",
        "audience of the wrong type": "InvalidAudience",
        "data not a dict": "InvalidEventData",
        "data not serialisable": "InvalidEventData",
        "data oversized": "InvalidEventData",
        "empty audience": "InvalidAudience",
        "unknown user ids": "InvalidAudience",
        "actor of the wrong type": "InvalidActor",
    }
    assert report.notes["outbox_rows_added"] == 0
    assert report.notes["broker_messages_added"] == 0
