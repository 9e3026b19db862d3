"""pipeline.storing: a batch's inboxes, notifications and deliveries, stored by each of its implementations the
database can run (on PostgreSQL both the single statement and the separate statements; elsewhere the latter),
and bulk.insert_constants, which the single statement's defaults come from."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from pipeline import storing
from pipeline.bulk import insert_constants
from pipeline.models import Delivery, Event, Inbox, Notification
from pipeline.storing import NewNotification

pytestmark = pytest.mark.django_db

IMPLEMENTATIONS = ["rows", "postgres"] if connection.vendor == "postgresql" else ["rows"]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request):
    """``store(notifications, now)``: one of batch_store's implementations."""
    if request.param == "postgres":
        return lambda notifications, now: storing._store_postgres(notifications, now, "default")
    return lambda notifications, now: storing._store_rows(notifications, now, "default")


def _event(text: str) -> Event:
    return Event.objects.create(
        event_type="test.personal",
        audience={"kind": "users", "user_ids": []},
        data={"text": text},
        occurred_at=timezone.now(),
    )


def _new(event: Event, uid: int, title: str, *, streamed: bool, deliveries=()) -> NewNotification:
    return NewNotification(
        event.pk,
        uid,
        "test.personal",
        "tests",
        title,
        f"body of {title}",
        event.data,
        event.occurred_at,
        streamed,
        tuple(deliveries),
    )


def test_a_batch_continues_each_inbox_in_order_and_returns_its_rows_where_they_were_given(users, store):
    """Cursors continue each recipient's inbox (created when missing), push positions count the streamed only,
    each returned row and delivery names what was given in that place, and texts come back exactly."""
    bob, carol = users["bob"].pk, users["carol"].pk
    Inbox.objects.create(user_id=bob, last_cursor=7, last_push_seq=3)
    first, second = _event("a"), _event("b")
    second.data = {"text": 'ü "q" \\ \n', "nested": {"n": [1, 2.5, None, True]}}
    queued, skipped = Delivery.Status.QUEUED, Delivery.Status.SKIPPED
    given = [
        _new(
            first, bob, "to bob 1", streamed=True, deliveries=[("websocket", queued, "", ""), ("email", queued, "", "")]
        ),
        _new(first, carol, "to carol 1", streamed=False, deliveries=[("websocket", skipped, "off", "")]),
        _new(second, bob, "to bob 2 — ü 'q'", streamed=False, deliveries=[("email", queued, "", "daily")]),
        _new(second, carol, "to carol 2", streamed=True, deliveries=[]),
    ]
    now = timezone.now()

    stored, deliveries = store(given, now)

    assert [(s.cursor, s.push_seq) for s in stored] == [(8, 4), (1, None), (9, None), (2, 1)]
    rows = {n.pk: n for n in Notification.objects.all()}
    assert [(rows[s.pk].event_id, rows[s.pk].recipient_id, rows[s.pk].title) for s in stored] == [
        (n.event_id, n.recipient_id, n.title) for n in given
    ]
    assert [(rows[s.pk].cursor, rows[s.pk].push_seq) for s in stored] == [(s.cursor, s.push_seq) for s in stored]
    assert rows[stored[2].pk].data == second.data and rows[stored[2].pk].body == "body of to bob 2 — ü 'q'"
    assert {(rows[s.pk].state, rows[s.pk].created_at, rows[s.pk].occurred_at) for s in stored} == {
        (Notification.State.UNSEEN, now, first.occurred_at)
    } | {(Notification.State.UNSEEN, now, second.occurred_at)}
    assert sorted((d.index, d.method, d.status, d.digest) for d in deliveries) == [
        (0, "email", queued, ""),
        (0, "websocket", queued, ""),
        (1, "websocket", skipped, ""),
        (2, "email", queued, "daily"),
    ]
    by_pk = {d.pk: d for d in Delivery.objects.all()}
    assert {(by_pk[d.pk].notification_id, by_pk[d.pk].method) for d in deliveries} == {
        (stored[d.index].pk, d.method) for d in deliveries
    }
    assert {(d.attempts, d.last_error, d.claimed_by, d.created_at, d.next_attempt_at) for d in by_pk.values()} == {
        (0, "", "", now, now)
    }
    assert by_pk[next(d.pk for d in deliveries if d.status == skipped)].reason == "off"
    assert {i.user_id: (i.last_cursor, i.last_push_seq) for i in Inbox.objects.all()} == {bob: (9, 4), carol: (2, 1)}


def test_a_notification_stored_twice_raises_and_stores_nothing_of_the_batch(users, store):
    bob, carol = users["bob"].pk, users["carol"].pk
    event = _event("a")
    store([_new(event, bob, "once", streamed=True)], timezone.now())

    with pytest.raises(IntegrityError), transaction.atomic():
        store([_new(event, carol, "new", streamed=True), _new(event, bob, "again", streamed=True)], timezone.now())

    assert list(Notification.objects.values_list("recipient_id", "title")) == [(bob, "once")]
    assert {i.user_id: i.last_cursor for i in Inbox.objects.all()} == {bob: 1}


def test_an_empty_batch_stores_nothing(users, store):
    assert store([], timezone.now()) == ([], [])
    assert not Notification.objects.exists() and not Inbox.objects.exists()


def test_insert_constants_gives_the_left_out_columns_defaults_and_refuses_a_value_that_changes():
    found = insert_constants(Notification, columns=("id", *storing._NOTIFICATION_COLUMNS), shared=("created_at",))
    assert {name: value for name, (_, _, value) in found.items()} == {
        "state": Notification.State.UNSEEN,
        "seen_at": None,
        "read_at": None,
    }
    assert found["state"][0] == connection.ops.quote_name("state")
    with pytest.raises(TypeError, match="created_at"):  # auto_now_add: a time, not a constant
        insert_constants(Notification, columns=("id", *storing._NOTIFICATION_COLUMNS))
    with pytest.raises(TypeError, match="no column"):
        insert_constants(Notification, columns=("nope",))
