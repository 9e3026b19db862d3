"""Sending a batch: successes recorded in groups, failures at once, a slow provider per message, a lost claim."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery.base import DeliveryResult
from pipeline import sending, services
from pipeline.conf import notiflow_settings
from pipeline.models import DeadLetter, Delivery, Event, Notification
from tests.support.methods import ScriptedMethod

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def scripted():
    ScriptedMethod.script, ScriptedMethod.delay, ScriptedMethod.sent, ScriptedMethod.before = [], 0.0, [], None
    yield ScriptedMethod
    ScriptedMethod.script, ScriptedMethod.delay, ScriptedMethod.sent, ScriptedMethod.before = [], 0.0, [], None


def queued(users, count):
    """``count`` queued deliveries of the scripted method, one per notification, oldest first."""
    ids = []
    for n in range(count):
        event = Event.objects.create(
            event_type="critique.created",
            audience={"kind": "users", "user_ids": [users["bob"].pk]},
            occurred_at=timezone.now(),
        )
        notification = Notification.objects.create(
            event=event,
            recipient=users["bob"],
            event_type=event.event_type,
            category="critiques",
            title="t",
            cursor=n + 1,
            occurred_at=event.occurred_at,
        )
        ids.append(
            Delivery.objects.create(notification=notification, method="scripted", next_attempt_at=timezone.now()).pk
        )
    return ids


def records(queries):
    """The UPDATEs that recorded an outcome (not the claim, which sets claimed_until)."""
    updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "pipeline_delivery"')]
    return [sql for sql in updates if '"status" =' in sql.split(" WHERE ")[0]]


def test_fast_successes_are_recorded_together_with_one_update(users, settings):
    # A group lasts DELIVERY_RECORD_INTERVAL; 30 fast sends take about 10 ms, but a loaded machine can stall
    # a process for longer than the default 50 ms, so this test gives the group 5 s.
    settings.NOTIFLOW = {**settings.NOTIFLOW, "DELIVERY_RECORD_INTERVAL": 5.0}
    ids = queued(users, 30)
    with CaptureQueriesContext(connection) as queries:
        report = sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)

    assert report.counts == {"sent": 30, "skipped": 0, "retrying": 0, "failed": 0, "dead": 0}
    assert len(records(queries.captured_queries)) == 1  # one write for 30 messages, not 30
    rows = Delivery.objects.filter(pk__in=ids)
    assert set(rows.values_list("status", "attempts", "claimed_by")) == {("sent", 1, "")}
    assert ScriptedMethod.sent == ids


def test_a_failure_is_recorded_at_once_and_the_successes_before_it_too(users):
    ids = queued(users, 4)
    ScriptedMethod.script = [DeliveryResult.sent(), DeliveryResult.sent(), DeliveryResult.failed("SMTP 550: no")]

    report = sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)

    assert report.counts == {"sent": 3, "skipped": 0, "retrying": 0, "failed": 1, "dead": 0}
    statuses = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[i] for i in ids] == ["sent", "sent", "failed", "sent"]
    assert DeadLetter.objects.get().delivery_id == ids[2]


def test_a_transient_failure_is_left_for_a_retry(users):
    ids = queued(users, 2)
    ScriptedMethod.script = [DeliveryResult.retry("SMTP 451: later")]

    report = sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)

    assert report.to_retry == [ids[0]] and report.countdown >= 0
    assert Delivery.objects.get(pk=ids[0]).status == "retrying"
    assert Delivery.objects.get(pk=ids[1]).status == "sent"


def test_a_slow_provider_has_each_message_recorded_as_soon_as_it_is_sent(users, settings):
    ids = queued(users, 4)
    ScriptedMethod.delay = 0.06  # longer than DELIVERY_RECORD_INTERVAL (0.05 s)
    with CaptureQueriesContext(connection) as queries:
        sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)
    assert len(records(queries.captured_queries)) == 4


def test_a_lost_claim_stops_the_batch_and_records_nothing_for_the_new_owner(users):
    ids = queued(users, 5)

    def take_over(delivery_id):
        if delivery_id == ids[2]:  # while the third is sent, another sender takes the last two over
            Delivery.objects.filter(pk__in=ids[3:]).update(claimed_by="task-2")

    ScriptedMethod.before = take_over
    ScriptedMethod.delay = 0.03  # two messages per group: the take-over lands inside a group

    report = sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)

    assert ids[4] not in ScriptedMethod.sent  # stopped: never sent the other owner's deliveries twice over
    rows = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "claimed_by"))
    assert rows[ids[3]] == "task-2" and rows[ids[4]] == "task-2"  # left to the new owner, unrecorded
    assert report.counts["sent"] <= 3


def test_a_renewal_that_finds_the_claim_lost_stops_before_the_next_message_and_frees_the_rest(users, settings):
    """One send outlasted the rest of the lease and the recovery sweep gave two deliveries to another sender:
    the renewal before the next message finds them gone and the batch stops there, instead of sending one of
    them twice and learning it only when recording; what it still held is released for the sweep."""
    settings.NOTIFLOW = {**settings.NOTIFLOW, "DELIVERY_LEASE": 0.3}  # renewed every 0.1 s of sending
    ids = queued(users, 5)

    def take_over(delivery_id):
        if delivery_id == ids[1]:
            Delivery.objects.filter(pk__in=ids[2:4]).update(claimed_by="task-2")

    ScriptedMethod.before = take_over
    ScriptedMethod.delay = 0.12  # one message per group, and a renewal due before each

    report = sending.deliveries_send(method="scripted", delivery_ids=ids, claimer="task-1", attempt=1)

    assert ScriptedMethod.sent == ids[:2]
    assert report.counts["sent"] == 2
    rows = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "claimed_by"))
    assert rows[ids[2]] == rows[ids[3]] == "task-2"
    assert rows[ids[4]] == ""  # released, not held until the lease lapses
    assert Delivery.objects.get(pk=ids[4]).status == Delivery.Status.QUEUED


@pytest.mark.parametrize("skew_minutes", [10, -10])
def test_a_claim_is_judged_by_the_database_clock_not_the_claimers(users, monkeypatch, skew_minutes):
    """A host whose clock runs ten minutes ahead must not see another sender's live claim (``DELIVERY_LEASE``) as
    lapsed; one whose clock runs behind must not make a claim that outlives its lease on everyone else's."""
    ids = queued(users, 2)
    skewed = timezone.now() + timedelta(minutes=skew_minutes)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: skewed)  # every timezone.now() of this process

    assert len(services.deliveries_claim(method="scripted", delivery_ids=ids, claimer="task-1")) == 2
    assert services.deliveries_claim(method="scripted", delivery_ids=ids, claimer="task-2") == []

    monkeypatch.setattr(timezone, "now", real_now)
    assert set(Delivery.objects.filter(pk__in=ids).values_list("claimed_by", flat=True)) == {"task-1"}
    until = Delivery.objects.filter(pk=ids[0]).values_list("claimed_until", flat=True).get()
    lease = float(notiflow_settings.DELIVERY_LEASE)
    assert abs((until - real_now()).total_seconds() - lease) < 5  # the lease, on the database's clock


def test_a_claim_reads_each_delivery_and_its_message_from_one_select_as_from_the_model_instances(users):
    """The claim reads plain values, not model instances: the same deliveries and messages, with and without an
    actor and a target, in ``pk`` order."""
    ids = queued(users, 2)
    with_actor = Event.objects.get(notifications__deliveries__pk=ids[1])
    with_actor.actor, with_actor.target_type, with_actor.target_id = users["alice"], "artwork", "7"
    with_actor.data = {"artwork_title": "Blue Heron"}
    with_actor.save()
    Notification.objects.filter(deliveries__pk=ids[1]).update(push_seq=3, body="b")

    with CaptureQueriesContext(connection) as queries:
        claimed = services.deliveries_claim(method="scripted", delivery_ids=ids[::-1], claimer="task-1")

    assert [q["sql"].split()[0] for q in queries] == ["UPDATE", "SELECT"]
    relations = ("notification__recipient", "notification__event__actor")
    expected = Delivery.objects.filter(pk__in=ids).select_related(*relations).order_by("pk")
    assert [delivery.pk for delivery, _ in claimed] == ids
    for (delivery, message), full in zip(claimed, expected, strict=True):
        assert {k: v for k, v in delivery.__dict__.items() if k != "_state"} == {
            k: v for k, v in full.__dict__.items() if k not in ("_state", "_notification_cache")
        } | {"claimed_by": "task-1", "claimed_until": delivery.claimed_until}
        recipient = full.notification.recipient
        assert message == services.message_of(
            delivery_id=full.pk,
            notification=full.notification,
            recipient=services.recipient_of(recipient),
            context=services.event_context(event=full.notification.event, recipient=recipient),
        )
    assert claimed[1][1].context["actor"] == {"id": users["alice"].pk, "username": "alice"}
    assert claimed[1][1].context["target"] == {"type": "artwork", "id": "7"} and claimed[0][1].context["target"] is None
