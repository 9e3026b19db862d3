"""emit_event(): validation, transactions and publishing, against the real broker."""

import uuid
from datetime import UTC, datetime, timedelta
from datetime import timezone as fixed_offset

import pytest
from django.db import transaction
from django.utils import timezone

from pipeline import Audience, emit_event, publishing
from pipeline.events import MAX_DATA_DEPTH, IdempotencyConflict
from pipeline.exceptions import (
    EventError,
    InvalidActor,
    InvalidAudience,
    InvalidEventData,
    InvalidIdempotencyKey,
    InvalidOccurredAt,
    InvalidTarget,
    UnknownEventType,
)
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
        assert publishing.doorbell_wait(0.5) is True  # the nudge that wakes the drain if it is lingering
    finally:
        publishing.doorbell_release()
    assert publishing.events_ring() is True  # what the drain's last look stands for here
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert [p["task"] for p in published] == [DRAIN]
    assert processed(event_id) is not None


def test_a_ring_takes_a_free_doorbell_without_a_nudge_and_nudges_a_held_one(users, published, monkeypatch):
    """One script, either way: a free doorbell is taken and a drain queued, and no nudge is left to wake that
    drain for nothing; a held one queues nothing and leaves one nudge for the drain that holds it."""
    prefix = f"notiflow:test:{uuid.uuid4().hex}"
    doorbell, nudge = f"{prefix}:doorbell", f"{prefix}:nudge"
    monkeypatch.setattr(publishing, "DOORBELL_KEY", doorbell)
    monkeypatch.setattr(publishing, "NUDGE_KEY", nudge)
    client = publishing._redis()
    try:
        assert publishing.events_ring() is True
        assert [p["task"] for p in published] == [DRAIN]
        assert (client.exists(doorbell), client.llen(nudge)) == (1, 0)

        assert publishing.events_ring() is True
        assert publishing.events_ring() is True
        assert len(published) == 1  # held: no message per ring
        assert client.llen(nudge) == 1  # one nudge, however many rings
        assert 0 < client.pttl(nudge) <= publishing._ttl_ms()
    finally:
        client.delete(doorbell, nudge)


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
        ({"actor": -1}, InvalidActor, "actor must be"),
        ({"data": ["not", "a", "dict"]}, InvalidEventData, "JSON object"),
        ({"data": {"when": object()}}, InvalidEventData, "not JSON-serialisable"),
        ({"data": {"x": float("nan")}}, InvalidEventData, "not JSON-serialisable"),
        ({"data": {"blob": "x" * (64 * 1024)}}, InvalidEventData, "limit is 65536 bytes"),
        ({"idempotency_key": ""}, InvalidIdempotencyKey, "idempotency_key"),
    ],
)
def test_bad_input_raises_and_queues_nothing(users, published, overrides, error, message):
    with pytest.raises(error, match=message):
        emit_event(**valid(users, **overrides))
    assert Event.objects.count() == 0  # nothing in the outbox
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert published == []  # nothing sent to the broker


def nested(depth):
    """A JSON object ``depth`` levels deep (the object itself is level 1)."""
    inner = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"deep": inner}


# Bad input the property test (test_emit_event_properties.py) found getting past emit_event() before issue 10:
# each id names what happened then. Overrides are built inside the test (Audience.role() raises by itself now).
@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        pytest.param(
            lambda u: {"event_type": {"critique.created"}},
            UnknownEventType,
            "must be a string",
            id="event_type-unhashable-TypeError",
        ),
        pytest.param(
            lambda u: {"event_type": 0.0},
            UnknownEventType,
            "must be a string",
            id="event_type-not-text-TypeError-in-difflib",
        ),
        pytest.param(
            lambda u: {"actor": 2**63},
            InvalidActor,
            "actor must be",
            id="actor-past-bigint-OverflowError-or-PostgreSQL-DataError",
        ),
        pytest.param(
            lambda u: {"actor": 2**31},
            InvalidActor,
            "actor must be",
            id="actor-past-the-user-key-PostgreSQL-DataError-integer-out-of-range",
        ),
        pytest.param(
            lambda u: {"audience": [u["bob"].pk, 2**31]},
            InvalidAudience,
            "user ids or users",
            id="audience-id-past-the-user-key-PostgreSQL-DataError-integer-out-of-range",
        ),
        pytest.param(
            lambda u: {"actor": -(2**63) - 1},
            InvalidActor,
            "actor must be",
            id="actor-below-bigint-OverflowError-or-PostgreSQL-DataError",
        ),
        pytest.param(
            lambda u: {"audience": [u["bob"].pk, 2**64]},
            InvalidAudience,
            "user ids or users",
            id="audience-id-past-bigint-SQLite-OverflowError",
        ),
        pytest.param(
            lambda u: {"audience": Audience(kind="users", user_ids=(u["bob"].pk, "x"))},  # type: ignore[arg-type]
            InvalidAudience,
            "user ids or users",
            id="audience-built-directly-with-text-id-TypeError",
        ),
        pytest.param(
            lambda u: {"audience": Audience(kind="users", user_ids=(0.0, u["bob"].pk))},  # type: ignore[arg-type]
            InvalidAudience,
            "user ids or users",
            id="audience-built-directly-with-float-id-ValueError-if-first-to-compile",
        ),
        pytest.param(
            lambda u: {"audience": Audience(kind="users", user_ids=(b"",))},  # type: ignore[arg-type]
            InvalidAudience,
            "user ids or users",
            id="audience-built-directly-with-bytes-TypeError",
        ),
        pytest.param(
            lambda u: {"audience": Audience.role("staff\x00")},
            InvalidAudience,
            "group name",
            id="role-name-with-NUL-PostgreSQL-DataError",
        ),
        pytest.param(
            lambda u: {"audience": Audience.role("\ud800")},
            InvalidAudience,
            "group name",
            id="role-name-lone-surrogate-UnicodeEncodeError",
        ),
        pytest.param(
            lambda u: {"include_actor": "yes"},
            InvalidAudience,
            "include_actor",
            id="include_actor-text-ValidationError",
        ),
        pytest.param(
            lambda u: {"include_actor": 0.0},
            InvalidAudience,
            "include_actor",
            id="include_actor-falsy-float-stored-as-false",
        ),
        pytest.param(
            lambda u: {"occurred_at": "garbage"},
            InvalidOccurredAt,
            "aware datetime",
            id="occurred_at-text-ValidationError",
        ),
        pytest.param(
            lambda u: {"occurred_at": 1.0}, InvalidOccurredAt, "aware datetime", id="occurred_at-float-TypeError"
        ),
        pytest.param(
            lambda u: {"occurred_at": 0.0}, InvalidOccurredAt, "aware datetime", id="occurred_at-falsy-replaced-by-now"
        ),
        pytest.param(
            lambda u: {"occurred_at": datetime(2026, 1, 1, 12)},
            InvalidOccurredAt,
            "aware datetime",
            id="occurred_at-naive-stored-as-if-UTC",
        ),
        pytest.param(
            lambda u: {"occurred_at": datetime(1, 1, 1, tzinfo=fixed_offset(timedelta(hours=5)))},
            InvalidOccurredAt,
            "out of range",
            id="occurred_at-before-year-1-in-UTC-SQLite-OverflowError",
        ),
        pytest.param(
            lambda u: {"data": nested(3000)}, InvalidEventData, "deeper than", id="data-nested-3000-RecursionError"
        ),
        pytest.param(
            lambda u: {"data": {"text": "a\x00b"}},
            InvalidEventData,
            "NUL",
            id="data-NUL-PostgreSQL-DataError-SQLite-stored",
        ),
        pytest.param(
            lambda u: {"data": {"text": "\ud800"}},
            InvalidEventData,
            "lone surrogate",
            id="data-lone-surrogate-UnicodeEncodeError",
        ),
        pytest.param(
            lambda u: {"data": {1: "one", "1": "uno"}},
            InvalidEventData,
            "keys must be strings",
            id="data-int-key-stored-as-text-one-value-lost",
        ),
        pytest.param(
            lambda u: {"target": ("artwork", 10**5000)},
            InvalidTarget,
            "target's id",
            id="target-id-of-5000-digits-ValueError",
        ),
        pytest.param(
            lambda u: {"target": type(u["bob"])(username="ghost")},
            InvalidTarget,
            "not saved",
            id="target-unsaved-instance-stored-as-None",
        ),
        pytest.param(
            lambda u: {"target": ("a" * 101, 1)},
            InvalidTarget,
            "target's type",
            id="target-type-too-long-PostgreSQL-DataError-SQLite-stored",
        ),
        pytest.param(
            lambda u: {"target": ("artwork", "7\x00")},
            InvalidTarget,
            "target's id",
            id="target-id-NUL-PostgreSQL-DataError-SQLite-stored",
        ),
        pytest.param(
            lambda u: {"target": ("artwork", True)}, InvalidTarget, "target's id", id="target-bool-id-stored-as-True"
        ),
        pytest.param(
            lambda u: {"idempotency_key": "k\x00"},
            InvalidIdempotencyKey,
            "idempotency_key",
            id="idempotency_key-NUL-PostgreSQL-DataError-SQLite-stored",
        ),
        pytest.param(
            lambda u: {"idempotency_key": "k\ud800"},
            InvalidIdempotencyKey,
            "idempotency_key",
            id="idempotency_key-lone-surrogate-UnicodeEncodeError",
        ),
    ],
)
def test_bad_input_that_got_past_before_raises_an_event_error_and_queues_nothing(
    users, published, overrides, error, message
):
    with pytest.raises(error, match=message):
        emit_event(**valid(users, **overrides(users)))
    assert Event.objects.count() == 0  # nothing in the outbox
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert published == []  # nothing sent to the broker


def test_data_may_nest_max_data_depth_levels_and_no_more(users):
    event_id = emit_event(**valid(users, data=nested(MAX_DATA_DEPTH)))
    assert Event.objects.get(pk=event_id).data == nested(MAX_DATA_DEPTH)
    with pytest.raises(InvalidEventData, match=f"deeper than {MAX_DATA_DEPTH} levels"):
        emit_event(**valid(users, data=nested(MAX_DATA_DEPTH + 1)))
    assert Event.objects.count() == 1


def test_text_that_only_looks_like_nul_or_nesting_is_stored(users):
    """A backslash before "u0000" is not a NUL, and brackets in strings do not nest."""
    data = {"path": "C:\\u0000", "brackets": "[" * 150 + "{" * 150, "list": [[1, "]]"], {"k": "}"}]}
    event_id = emit_event(**valid(users, data=data))
    assert Event.objects.get(pk=event_id).data == data


def test_an_aware_occurred_at_is_stored_as_that_instant(users):
    at = datetime(2026, 3, 1, 9, 30, tzinfo=fixed_offset(timedelta(hours=-5)))
    event_id = emit_event(**valid(users, occurred_at=at))
    assert Event.objects.get(pk=event_id).occurred_at == datetime(2026, 3, 1, 14, 30, tzinfo=UTC)


def test_every_error_is_an_event_error_and_a_value_error():
    for error in (
        UnknownEventType,
        InvalidAudience,
        InvalidActor,
        InvalidTarget,
        InvalidEventData,
        InvalidIdempotencyKey,
        InvalidOccurredAt,
        IdempotencyConflict,
    ):
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
