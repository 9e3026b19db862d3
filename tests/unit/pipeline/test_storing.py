"""pipeline.storing: a batch's inboxes, notifications and deliveries, stored by each of its implementations the
database can run (on PostgreSQL both the single statement and the separate statements; elsewhere the latter),
and bulk.insert_constants, which the single statement's defaults come from."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from pipeline import storing
from pipeline.bulk import _numbered, insert_constants
from pipeline.models import Delivery, Event, Inbox, Notification
from pipeline.storing import EventMark, NewNotification, SendRecord

pytestmark = pytest.mark.django_db

IMPLEMENTATIONS = ["rows", "postgres"] if connection.vendor == "postgresql" else ["rows"]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request):
    """``store(notifications, now, records=())``: one of batch_store's implementations (with the records as
    batch_store has that implementation write them)."""

    def postgres(notifications, now, records=()):
        return storing._store_postgres(notifications, now, "default", records)

    def rows(notifications, now, records=()):
        storing.records_write(records)
        return storing._store_rows(notifications, now, "default")

    return postgres if request.param == "postgres" else rows


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


def test_the_last_batch_s_send_records_are_written_with_the_next_batch_only_on_queued_deliveries(users, store):
    """Sent: ``sent`` at the record's time; skipped: ``skipped`` with its reason; each one attempt more. A
    delivery no longer ``queued`` is left alone, and a record without a row address is written by id."""
    bob, carol, dave = users["bob"].pk, users["carol"].pk, users["dave"].pk
    queued = Delivery.Status.QUEUED
    first = _event("a")
    methods = [("websocket", queued, "", ""), ("email", queued, "", "")]
    _, created = store(
        [_new(first, uid, f"to {uid}", streamed=True, deliveries=methods) for uid in (bob, carol, dave)], timezone.now()
    )
    by = {
        (Notification.objects.get(pk=Delivery.objects.get(pk=d.pk).notification_id).recipient_id, d.method): d
        for d in created
    }
    Delivery.objects.filter(pk=by[(carol, "websocket")].pk).update(status=Delivery.Status.RETRYING)
    at = timezone.now()
    sent, skipped = Delivery.Status.SENT, Delivery.Status.SKIPPED
    records = [
        SendRecord(by[(bob, "websocket")].pk, by[(bob, "websocket")].tid, sent, "", at),
        SendRecord(by[(dave, "websocket")].pk, by[(dave, "websocket")].tid, skipped, "no open socket", at),
        SendRecord(by[(carol, "websocket")].pk, by[(carol, "websocket")].tid, sent, "", at),  # retrying now
        SendRecord(by[(bob, "email")].pk, None, sent, "", at),  # no row address: by id
    ]

    stored, _ = store([_new(_event("b"), bob, "next", streamed=True)], timezone.now(), records)

    assert len(stored) == 1
    rows = {d.pk: d for d in Delivery.objects.all()}
    got = {key: rows[d.pk] for key, d in by.items()}
    assert (got[(bob, "websocket")].status, got[(bob, "websocket")].sent_at) == (sent, at)
    assert (got[(dave, "websocket")].status, got[(dave, "websocket")].reason) == (skipped, "no open socket")
    assert got[(dave, "websocket")].sent_at is None
    assert got[(carol, "websocket")].status == Delivery.Status.RETRYING and got[(carol, "websocket")].attempts == 0
    assert (got[(bob, "email")].status, got[(bob, "email")].sent_at) == (sent, at)
    assert {key: (row.attempts, row.updated_at == at) for key, row in got.items() if key != (carol, "websocket")} == {
        (bob, "websocket"): (1, True),
        (dave, "websocket"): (1, True),
        (bob, "email"): (1, True),
        (carol, "email"): (0, False),
        (dave, "email"): (0, False),
    }
    # Row addresses come from the single statement (PostgreSQL's ctid) only.
    assert [bool(d.tid) for d in created] == [store.__name__ == "postgres"] * len(created)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row addresses are PostgreSQL's")
def test_a_record_whose_row_moved_or_whose_address_names_another_delivery_changes_nothing(users):
    """A delivery updated since it was created has a new row address: its record finds nothing (it stays as the
    update left it; the recovery sweep sends it again). An address now holding another delivery's row is not
    that delivery's record: the ids must match too."""
    bob, carol = users["bob"].pk, users["carol"].pk
    queued = Delivery.Status.QUEUED
    _, created = storing._store_postgres(
        [
            _new(_event("a"), uid, "t", streamed=True, deliveries=[("websocket", queued, "", "")])
            for uid in (bob, carol)
        ],
        timezone.now(),
        "default",
    )
    moved, other = created
    Delivery.objects.filter(pk=moved.pk).update(reason="touched")  # a new row version, still queued
    at = timezone.now()
    records = [
        SendRecord(moved.pk, moved.tid, Delivery.Status.SENT, "", at),
        SendRecord(moved.pk, other.tid, Delivery.Status.SENT, "", at),  # the other delivery's address
    ]

    storing._store_postgres([], timezone.now(), "default", records)

    assert set(Delivery.objects.values_list("status", "attempts")) == {(queued, 0)}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_the_store_statement_s_generic_plan_finds_the_records_by_row_address_on_a_small_table(users):
    """Prepared, the statement keeps its generic plan (made while the tables were small) as they grow: the
    send records and the batch's events must be found by TID scans, never by reading their tables."""
    sql, constants = storing._postgres_statement("default")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE notiflow_store_test AS {_numbered(sql)}")
        try:
            placeholders = ", ".join(["%s"] * (2 + len(constants)))
            cursor.execute(
                f"EXPLAIN EXECUTE notiflow_store_test({placeholders})",
                ['{"g": [], "e": [], "r": [], "m": [], "d": [], "s": [], "f": []}', timezone.now(), *constants],
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE notiflow_store_test")
    for table in (Delivery._meta.db_table, Event._meta.db_table):
        assert f"Tid Scan on {table}" in plan, plan
        assert f"Seq Scan on {table}" not in plan and f"Index Scan using {table}" not in plan, plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row addresses are PostgreSQL's")
def test_the_batch_s_events_are_marked_by_the_address_its_take_read_and_a_wrong_one_raises(users):
    """Done: completed and published now; in progress: its last recipient recorded, published kept if set. An
    address that does not hold the event raises DatabaseError, and nothing of the batch is stored."""
    bob = users["bob"].pk
    done, chunked, wrong = _event("a"), _event("b"), _event("c")
    published = timezone.now() - timedelta(minutes=1)
    Event.objects.filter(pk=chunked.pk).update(published_at=published)
    addresses = dict(Event.objects.extra(select={"address": "CAST(ctid AS text)"}).values_list("pk", "address"))
    now = timezone.now()

    storing._store_postgres(
        [_new(done, bob, "t", streamed=True)],
        now,
        "default",
        marks=[EventMark(done.pk, addresses[done.pk]), EventMark(chunked.pk, addresses[chunked.pk], bob)],
    )

    rows = {e.pk: e for e in Event.objects.all()}
    assert (rows[done.pk].completed_at, rows[done.pk].published_at) == (now, now)
    assert (rows[chunked.pk].completed_at, rows[chunked.pk].published_at) == (None, published)
    assert rows[chunked.pk].progress_user_id == bob
    with pytest.raises(DatabaseError, match="1 of the batch's 1 events"), transaction.atomic():
        storing._store_postgres(
            [_new(wrong, bob, "w", streamed=True)], now, "default", marks=[EventMark(wrong.pk, addresses[done.pk])]
        )
    assert not Notification.objects.filter(event_id=wrong.pk).exists()
    assert Event.objects.get(pk=wrong.pk).completed_at is None
