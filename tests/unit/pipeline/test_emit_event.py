"""emit_event(): validation, transactions and publishing, against the real broker."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from pipeline import Audience, emit_event, publishing
from pipeline.events import IdempotencyConflict
from pipeline.exceptions import EventError, InvalidActor, InvalidAudience, InvalidEventData, UnknownEventType
from pipeline.models import Event
from webapp.stack import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
DRAIN = "notiflow.events_drain"


@pytest.fixture(autouse=True)
def _broker(stack):
    """The real broker and worker, with no drain due or running: the next emit rings the doorbell."""
    assert wait_for(lambda: not publishing._redis().exists(publishing.DOORBELL_KEY), timeout=30)
    return stack


def processed(event_id):
    """Wait until the worker's drain has stored the event's notifications; its row."""
    return wait_for(lambda: Event.objects.filter(pk=event_id, completed_at__isnull=False).first())


def valid(users, **overrides):
    kwargs = {
        "event_type": "critique.created",
        "actor": users["alice"],
        "audience": Audience.users(users["bob"]),
        "data": {"artwork_title": "Heron", "excerpt": "Nice"},
    }
    return {**kwargs, **overrides}


def test_a_valid_event_is_stored_and_rings_one_drain(users, published):
    event_id = emit_event(**valid(users))
    event = Event.objects.get(pk=event_id)
    assert event.audience == {"kind": "users", "user_ids": [users["bob"].pk]}
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert [p["task"] for p in published] == [DRAIN]
    event = processed(event_id)
    assert event is not None, "the drain did not process the event"
    assert event.notifications.get().recipient == users["bob"]


def test_a_held_doorbell_publishes_nothing_and_the_running_drain_takes_the_event(users, published):
    publishing._redis().set(publishing.DOORBELL_KEY, b"1", px=60_000)  # as a drain that is running holds it
    try:
        event_id = emit_event(**valid(users))
        publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
        assert published == []  # no message per event while a drain is due
    finally:
        publishing.doorbell_release()
    assert publishing.events_ring() is True  # what the drain's last look stands for here
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert [p["task"] for p in published] == [DRAIN]
    assert processed(event_id) is not None


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"event_type": "critique.creatd"}, UnknownEventType, "Did you mean 'critique.created'"),
        ({"audience": []}, InvalidAudience, "empty"),
        ({"audience": [999999]}, InvalidAudience, "unknown user id"),
        ({"audience": ["bob"]}, InvalidAudience, "user ids or users"),
        ({"audience": Audience.role("no-such-role")}, InvalidAudience, "not a group"),
        ({"audience": "bob"}, InvalidAudience, "Audience or a list"),
        ({"actor": "alice"}, InvalidActor, "actor must be"),
        ({"actor": 999999}, InvalidActor, "not a user"),
        ({"data": ["not", "a", "dict"]}, InvalidEventData, "JSON object"),
        ({"data": {"when": object()}}, InvalidEventData, "not JSON-serialisable"),
        ({"data": {"x": float("nan")}}, InvalidEventData, "not JSON-serialisable"),
        ({"data": {"blob": "x" * (64 * 1024)}}, InvalidEventData, "limit is 65536 bytes"),
        ({"idempotency_key": ""}, EventError, "idempotency_key"),
    ],
)
def test_bad_input_raises_and_queues_nothing(users, published, overrides, error, message):
    with pytest.raises(error, match=message):
        emit_event(**valid(users, **overrides))
    assert Event.objects.count() == 0  # nothing in the outbox
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert published == []  # nothing sent to the broker


def test_every_error_is_an_event_error_and_a_value_error():
    for error in (UnknownEventType, InvalidAudience, InvalidActor, InvalidEventData, IdempotencyConflict):
        assert issubclass(error, EventError)
        assert issubclass(error, ValueError)


def test_inside_a_transaction_it_publishes_only_after_commit(users, published):
    with transaction.atomic():
        event_id = emit_event(**valid(users))
        publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
        assert published == []
    publishing.ringer.flush()
    assert [p["task"] for p in published] == [DRAIN]
    assert processed(event_id) is not None


def test_a_rolled_back_transaction_notifies_no_one(users, published):
    with pytest.raises(RuntimeError), transaction.atomic():
        emit_event(**valid(users))
        raise RuntimeError("the caller's own failure")
    assert Event.objects.count() == 0
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert published == []


def test_the_same_idempotency_key_returns_the_first_event(users, published):
    first = emit_event(**valid(users, idempotency_key="k1"))
    again = emit_event(**valid(users, idempotency_key="k1"))
    assert again == first
    assert Event.objects.count() == 1
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert len(published) == 1


def test_the_same_key_with_different_content_is_refused(users, published):
    emit_event(**valid(users, idempotency_key="k2"))
    with pytest.raises(IdempotencyConflict, match="k2"):
        emit_event(**valid(users, idempotency_key="k2", data={"artwork_title": "Other", "excerpt": "x"}))
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert len(published) == 1


def test_a_key_older_than_the_idempotency_window_starts_a_new_event(users, published, settings):
    settings.NOTIFLOW = {**settings.NOTIFLOW, "IDEMPOTENCY_WINDOW": 3600}
    first = emit_event(**valid(users, idempotency_key="k3"))
    Event.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(seconds=3599))
    assert emit_event(**valid(users, idempotency_key="k3")) == first  # still inside the hour

    Event.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(seconds=3601))
    second = emit_event(**valid(users, idempotency_key="k3"))
    assert second != first
    assert Event.objects.get(pk=second).idempotency_key == "k3"
    assert Event.objects.get(pk=first).idempotency_key is None  # released
    # The second emit rings only if the first event's drain has let go of the doorbell by then.
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert {p["task"] for p in published} == {DRAIN} and 1 <= len(published) <= 2
    assert processed(first) is not None and processed(second) is not None


def test_the_default_idempotency_window_is_24_hours():
    from pipeline.conf import notiflow_settings

    assert notiflow_settings.IDEMPOTENCY_WINDOW == 24 * 3600
