"""The hot path's storing step in-process: texts rendered once per event unless they read the recipient,
multi-row inserts (pipeline.bulk), and inline sends built and sent only for reachable recipients."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from pipeline import Audience, bulk, emit_event, processing, sending, storing
from pipeline.bulk import rows_insert
from pipeline.models import DeadLetter, Delivery, Event, Inbox, Notification, Preference
from tests.support.methods import ReachableMethod

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def reach():
    ReachableMethod.online, ReachableMethod.sent = None, []
    yield ReachableMethod
    ReachableMethod.online, ReachableMethod.sent = None, []


@pytest.fixture
def renders(monkeypatch):
    """The template names the pipeline renders, in order."""
    names: list[str] = []
    real = processing.text_render

    def counting(name, context):
        names.append(name)
        return real(name, context)

    monkeypatch.setattr(processing, "text_render", counting)
    return names


def test_texts_that_do_not_read_the_recipient_are_rendered_once_per_event(users, renders):
    everyone = Audience.everyone()
    emit_event(event_type="announcement.posted", audience=everyone, actor=users["alice"], data={"text": "hi"})

    batch = processing.events_process()

    assert batch.notifications == 3  # bob, carol, dave: the actor is left out
    assert set(Notification.objects.values_list("title", "body")) == {("Announcement from alice", "hi")}
    assert len(renders) == 2  # one title, one body, for three recipients


def test_texts_that_read_the_recipient_are_rendered_for_each_recipient(users, renders):
    emit_event(event_type="test.personal", audience=[users[n].pk for n in ("bob", "carol", "dave")], data={"text": "x"})

    processing.events_process()

    titles = dict(Notification.objects.values_list("recipient__username", "title"))
    assert titles == {"bob": "For bob: x", "carol": "For carol: x", "dave": "For dave: x"}
    assert len(renders) == 6


def test_a_batch_split_over_many_statements_stores_every_row_in_emit_order(users, monkeypatch):
    # 40 bound parameters per statement: 3 notification rows (13 columns) or 4 delivery rows per INSERT.
    monkeypatch.setattr(bulk, "_max_params", lambda connection: 40)
    bob, carol = users["bob"].pk, users["carol"].pk
    for i in range(5):
        emit_event(event_type="test.personal", audience=[bob, carol], data={"text": str(i), "n": i})

    batch = processing.events_process()

    assert (batch.events, batch.notifications) == (5, 10)
    for uid in (bob, carol):
        rows = list(Notification.objects.filter(recipient_id=uid).order_by("cursor"))
        assert [n.cursor for n in rows] == [1, 2, 3, 4, 5]
        assert [n.data for n in rows] == [{"text": str(i), "n": i} for i in range(5)]
        assert all(n.state == Notification.State.UNSEEN and n.created_at is not None for n in rows)
        assert Inbox.objects.get(user_id=uid).last_cursor == 5
    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == 10
    assert {(d.method, d.status, d.attempts, d.last_error, d.claimed_by) for d in deliveries} == {
        ("reachable", Delivery.Status.QUEUED, 0, "", "")
    }
    assert {d.delivery_id for d in batch.inline["reachable"]} == {d.pk for d in deliveries}


def test_a_batch_continues_each_inbox_in_emit_order_with_a_delivery_per_method_and_its_decision(users):
    """Cursors and push positions continue each recipient's inbox (created when missing) in emit order, push
    positions only for what goes to sockets now, one delivery per method with its decision, the events done,
    and the batch's sends naming the stored deliveries in emit order."""
    bob, carol, dave = (users[n] for n in ("bob", "carol", "dave"))
    Inbox.objects.create(user=bob, last_cursor=7, last_push_seq=3)  # carol's and dave's do not exist yet
    Preference.objects.create(user=carol, method="websocket", setting="off", category="critiques")
    Preference.objects.create(user=dave, method="email", setting="daily", category="critiques")
    first = emit_event(event_type="critique.created", audience=[bob, carol, dave], data={"artwork_title": "a"})
    second = emit_event(event_type="test.personal", audience=[bob, dave], data={"text": "b"})
    third = emit_event(event_type="critique.created", audience=[bob], data={"artwork_title": "c"})

    batch = processing.events_process()

    assert (batch.events, batch.notifications) == (3, 6)
    stored = {(n.event_id, n.recipient_id): (n.cursor, n.push_seq) for n in Notification.objects.all()}
    assert stored == {
        (first, bob.pk): (8, 4),
        (second, bob.pk): (9, None),  # "reachable" is not a streamed method
        (third, bob.pk): (10, 5),
        (first, carol.pk): (1, None),  # her push is off
        (first, dave.pk): (1, 1),
        (second, dave.pk): (2, None),
    }
    assert {i.user_id: (i.last_cursor, i.last_push_seq) for i in Inbox.objects.all()} == {
        bob.pk: (10, 5),
        carol.pk: (1, 0),
        dave.pk: (2, 1),
    }
    deliveries = {
        (d.notification.event_id, d.notification.recipient_id, d.method): (d.status, d.digest)
        for d in Delivery.objects.select_related("notification")
    }
    queued, skipped = Delivery.Status.QUEUED, Delivery.Status.SKIPPED
    assert deliveries == {
        (first, bob.pk, "websocket"): (queued, ""),
        (first, bob.pk, "email"): (queued, ""),
        (second, bob.pk, "reachable"): (queued, ""),
        (third, bob.pk, "websocket"): (queued, ""),
        (third, bob.pk, "email"): (queued, ""),
        (first, carol.pk, "websocket"): (skipped, ""),
        (first, carol.pk, "email"): (queued, ""),
        (first, dave.pk, "websocket"): (queued, ""),
        (first, dave.pk, "email"): (queued, "daily"),
        (second, dave.pk, "reachable"): (queued, ""),
    }
    by_id = {d.pk: d for d in Delivery.objects.select_related("notification")}
    pushes = [by_id[p.delivery_id].notification for p in batch.inline["websocket"]]
    assert [(n.recipient_id, n.cursor) for n in pushes] == [(bob.pk, 8), (dave.pk, 1), (bob.pk, 10)]  # emit order
    assert [by_id[i].notification.recipient_id for i in batch.queued["email"]] == [bob.pk, carol.pk, bob.pk]
    assert [by_id[i].digest for i in batch.digest] == ["daily"]
    assert not Event.objects.filter(completed_at__isnull=True).exists()
    assert not Event.objects.filter(published_at__isnull=True).exists()


def test_a_role_is_stored_in_chunks_of_active_members_once_even_when_a_chunk_is_taken_again(users):
    """A role's members are read a chunk at a time from the membership table (``Audience.recipient_ids``):
    every active member but the actor gets one notification, an inactive or non-member none, and a chunk
    taken again (its event's progress set back, as by a worker that died after storing it) stores nothing
    twice and skips no cursor."""
    User = get_user_model()
    editors = Group.objects.create(name="editors")
    members = [users[n] for n in ("alice", "bob", "carol", "dave")]
    members += [User.objects.create_user(username=f"e{i}", password="pw") for i in range(5)]
    members[3].is_active = False  # dave
    members[3].save(update_fields=["is_active"])
    editors.user_set.add(*members)
    User.objects.create_user(username="outsider", password="pw")
    expected = {u.pk for u in members} - {users["alice"].pk, users["dave"].pk}
    event_id = emit_event(
        event_type="announcement.posted", audience=Audience.role("editors"), actor=users["alice"], data={"text": "hi"}
    )

    first = processing.events_process(chunk=3)  # alice (the actor) is left out of the ids read: bob, carol, dave
    assert (first.events, first.more) == (1, True)
    assert set(Notification.objects.values_list("recipient_id", flat=True)) == {users["bob"].pk, users["carol"].pk}

    Event.objects.filter(pk=event_id).update(progress_user_id=0)  # the stored chunk is taken again
    while processing.events_process(chunk=3).events:
        pass

    stored = list(Notification.objects.filter(event_id=event_id).values_list("recipient_id", "cursor"))
    assert sorted(uid for uid, _ in stored) == sorted(expected)
    assert {cursor for _, cursor in stored} == {1}
    assert set(Inbox.objects.filter(user_id__in=expected).values_list("last_cursor", flat=True)) == {1}
    assert Event.objects.get(pk=event_id).completed_at is not None


def test_events_taken_but_not_stored_stay_pending_and_unpublished_until_a_batch_stores_them(users):
    """A batch takes events it does not finish: a large audience's event (one chunk stored: published, not
    done), the events after it (they wait for its last chunk), a poison event (dead-lettered). Each stays
    pending (and unpublished, but for the chunked one), so that the next batches take it again and nothing is
    lost."""
    bob, carol, dave = (users[n].pk for n in ("bob", "carol", "dave"))
    large = emit_event(event_type="test.personal", audience=[bob, carol, dave], data={"text": "a"})
    after = emit_event(event_type="test.personal", audience=[bob], data={"text": "b"})

    first = processing.events_process(chunk=2)

    assert (first.events, first.notifications, first.more) == (1, 2, True)
    rows = {e.pk: e for e in Event.objects.all()}
    assert (rows[large].completed_at, rows[large].progress_user_id) == (None, carol)
    assert rows[large].published_at is not None
    assert (rows[after].completed_at, rows[after].published_at) == (None, None)
    published = rows[large].published_at

    poison = Event.objects.create(
        event_type="test.fault",
        audience={"kind": "users", "user_ids": [bob]},
        data={"run": "r", "seq": 1, "poison": True},
        occurred_at=timezone.now(),
    )
    while processing.events_process(chunk=2).events:
        pass

    rows = {e.pk: e for e in Event.objects.all()}
    assert rows[large].completed_at is not None and rows[large].published_at == published  # kept
    assert rows[after].completed_at is not None and rows[after].published_at is not None
    assert (rows[poison.pk].completed_at, rows[poison.pk].published_at) == (None, None)
    assert DeadLetter.objects.filter(event_id=poison.pk, kind=DeadLetter.Kind.STEP).count() == 1
    assert sorted(Notification.objects.values_list("event_id", "recipient_id")) == sorted(
        [(large, bob), (large, carol), (large, dave), (after, bob)]
    )
    assert list(processing.events_pending()) == []  # the poison event is dead-lettered, not pending


def test_inline_send_builds_and_sends_only_for_reachable_recipients(users):
    ReachableMethod.online = {users["bob"].pk}
    emit_event(event_type="test.personal", audience=[users[n].pk for n in ("bob", "carol", "dave")], data={"text": "x"})
    batch = processing.events_process()

    retry = processing.inline_send(batch=batch)

    assert retry == {}
    [message] = ReachableMethod.sent
    notification = Notification.objects.get(recipient=users["bob"])
    assert (message.recipient.username, message.title) == ("bob", "For bob: x")
    assert (message.payload["id"], message.payload["cursor"]) == (notification.pk, 1)
    assert message.payload["created_at"] == notification.created_at.isoformat()
    outcome = {d.notification.recipient.username: (d.status, d.reason) for d in Delivery.objects.select_related()}
    assert outcome == {
        "bob": (Delivery.Status.SENT, ""),
        "carol": (Delivery.Status.SKIPPED, "offline (test)"),
        "dave": (Delivery.Status.SKIPPED, "offline (test)"),
    }


@pytest.mark.parametrize("next_batch_has_events", [True, False], ids=["with-the-next-batch", "no-event-pending"])
def test_inline_send_hands_its_records_to_the_next_batch_which_writes_them(users, next_batch_has_events):
    """Given a list, inline_send writes nothing (the deliveries stay queued) and appends one record per
    outcome; events_process writes them in its transaction, also when it finds no event."""
    ReachableMethod.online = {users["bob"].pk}
    emit_event(event_type="test.personal", audience=[users[n].pk for n in ("bob", "carol")], data={"text": "x"})
    batch = processing.events_process()
    records: list = []

    assert processing.inline_send(batch=batch, records=records) == {}

    assert len(ReachableMethod.sent) == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.QUEUED}
    assert sorted((r.status, r.reason) for r in records) == [
        (Delivery.Status.SENT, ""),
        (Delivery.Status.SKIPPED, "offline (test)"),
    ]
    if next_batch_has_events:
        emit_event(event_type="test.personal", audience=[users["dave"].pk], data={"text": "y"})
    assert processing.events_process(records=records).events == int(next_batch_has_events)
    outcome = {d.notification.recipient.username: (d.status, d.attempts) for d in Delivery.objects.select_related()}
    assert outcome["bob"] == (Delivery.Status.SENT, 1) and outcome["carol"] == (Delivery.Status.SKIPPED, 1)


@pytest.mark.parametrize("unnest_from", [1, 10**6], ids=["arrays", "values"])
def test_rows_insert_stores_shared_varying_and_null_values_of_every_row(users, monkeypatch, unnest_from):
    """Rows mixing values every row shares (the same objects: bound once on PostgreSQL), values that vary
    (JSON, text, ints), NULLs and the model's defaults come back as given, on either database, and on
    PostgreSQL in both of its forms (arrays from ``_UNNEST_MIN_ROWS`` rows, ``VALUES`` below)."""
    monkeypatch.setattr(bulk, "_UNNEST_MIN_ROWS", unnest_from)
    event = Event.objects.create(
        event_type="test.personal", audience={"kind": "users", "user_ids": []}, occurred_at=timezone.now()
    )
    title, now = "same for all", timezone.now()
    people = [users[n].pk for n in ("bob", "carol", "dave")]
    rows = [
        (event.pk, uid, "test.personal", "c", title, f"body {i} & 'q'", {"n": i, "s": "é"}, i + 1, seq, now)
        for i, (uid, seq) in enumerate(zip(people, [None, 5, None], strict=True))
    ]

    returned = rows_insert(Notification, columns=storing._NOTIFICATION_COLUMNS, rows=rows, returning=("pk", "cursor"))

    assert sorted(cursor for _, cursor in returned) == [1, 2, 3]
    stored = Notification.objects.filter(event=event).order_by("cursor")
    assert [(n.recipient_id, n.title, n.body, n.data, n.push_seq) for n in stored] == [
        (uid, title, f"body {i} & 'q'", {"n": i, "s": "é"}, seq)
        for i, (uid, seq) in enumerate(zip(people, [None, 5, None], strict=True))
    ]
    assert {(n.occurred_at, n.state) for n in stored} == {(now, Notification.State.UNSEEN)}


def test_rows_insert_leaves_out_conflicting_rows_only_when_asked(users):
    bob, carol = users["bob"].pk, users["carol"].pk
    assert rows_insert(Inbox, columns=("user_id",), rows=[(bob,)], returning=("user_id", "last_cursor")) == [(bob, 0)]

    both = [(bob,), (carol,)]
    again = rows_insert(Inbox, columns=("user_id",), rows=both, returning=("user_id",), ignore_conflicts=True)

    assert again == [(carol,)]
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(Inbox, columns=("user_id",), rows=[(bob,)])


def test_rows_insert_when_inserts_only_if_its_condition_holds(users):
    bob, carol, dave = users["bob"].pk, users["carol"].pk, users["dave"].pk
    returning = ("user_id",)

    # The condition's parameters follow the row's; an escaped percent sign is a literal one.
    refused = rows_insert(Inbox, columns=("user_id",), rows=[(bob,)], returning=returning, when=("%s = %s", [1, 2]))
    taken = rows_insert(Inbox, columns=("user_id",), rows=[(carol,)], returning=returning, when=("%s = %s", [3, 3]))
    percent = rows_insert(
        Inbox, columns=("user_id",), rows=[(dave,)], returning=returning, when=("%s = '50%%'", ["50%"])
    )

    assert (refused, taken, percent) == ([], [(carol,)], [(dave,)])
    assert set(Inbox.objects.values_list("user_id", flat=True)) == {carol, dave}
    with pytest.raises(TypeError, match="one row"):
        rows_insert(Inbox, columns=("user_id",), rows=[(bob,), (dave,)], when=("1 = 1", []))


def test_rows_insert_rejects_a_column_the_model_does_not_have():
    with pytest.raises(TypeError, match="recipient"):
        rows_insert(Notification, columns=("recipient",), rows=[(1,)])


def test_rows_insert_gives_each_call_its_own_time_stamps_and_callable_defaults(users):
    """What a call works out once per shape (the constant defaults) is reused; what changes per call is not:
    ``auto_now_add`` is each call's time, and a callable default (``Event.data``: ``dict``) is called anew."""
    columns = ("id", "event_type", "audience", "occurred_at")
    first, second = uuid.uuid4(), uuid.uuid4()
    audience = {"kind": "users", "user_ids": [users["bob"].pk]}
    rows_insert(Event, columns=columns, rows=[(first, "test.personal", audience, timezone.now())])
    rows_insert(Event, columns=columns, rows=[(second, "test.personal", audience, timezone.now())])

    one, two = Event.objects.get(pk=first), Event.objects.get(pk=second)
    assert one.created_at < two.created_at
    assert (one.data, two.data, one.target_type, two.progress_user_id, two.completed_at) == ({}, {}, "", 0, None)


def test_instances_select_builds_instances_as_the_orm_does(users):
    """Converted values (a UUID, JSON, a datetime), deferred columns left out of the SQL, and every row."""
    emit_event(event_type="test.personal", audience=[users["bob"].pk], actor=users["alice"], data={"n": [1, "é"]})
    emit_event(event_type="test.personal", audience=[users["carol"].pk], data={"n": 2})
    sql, params = Event.objects.order_by("created_at").query.sql_with_params()

    built = bulk.instances_select(Event, sql, params)

    assert [(e.pk, e.data, e.actor_id, e.audience, e.occurred_at) for e in built] == [
        (e.pk, e.data, e.actor_id, e.audience, e.occurred_at) for e in Event.objects.order_by("created_at")
    ]
    assert isinstance(built[0].pk, uuid.UUID) and built[0].data == {"n": [1, "é"]}
    user_sql, user_params = get_user_model().objects.only("username").filter(pk=users["bob"].pk).query.sql_with_params()
    (bob,) = bulk.instances_select(get_user_model(), user_sql, user_params)
    assert bob.username == "bob" and bob.get_deferred_fields() >= {"email", "password"}
    assert bob.email == "bob@example.com"  # loaded on access, as with only()
    with pytest.raises(TypeError, match="no column"):
        bulk.instances_select(Event, "SELECT 1 AS no_such_field", [])


def test_a_queued_send_skips_the_recipients_its_method_cannot_reach(users):
    # The path of a retried or re-queued delivery (notiflow.deliveries_send): reachability is asked there too.
    emit_event(event_type="test.personal", audience=[users["bob"].pk, users["carol"].pk], data={"text": "x"})
    processing.events_process()
    ReachableMethod.online = {users["carol"].pk}

    report = sending.deliveries_send(
        method="reachable", delivery_ids=list(Delivery.objects.values_list("pk", flat=True)), claimer="t", attempt=1
    )

    assert [m.recipient.username for m in ReachableMethod.sent] == ["carol"]
    assert (report.counts["sent"], report.counts["skipped"]) == (1, 1)
    outcome = {d.notification.recipient.username: (d.status, d.reason) for d in Delivery.objects.select_related()}
    assert outcome == {"bob": (Delivery.Status.SKIPPED, "offline (test)"), "carol": (Delivery.Status.SENT, "")}


def test_select_in_binds_new_values_into_sql_compiled_once(users):
    def build(ids, names):
        return get_user_model().objects.filter(pk__in=ids, username__in=names, is_active=True).values_list("username")

    def run(ids, names):
        sql, params = bulk.select_in("test.users", build, ids, names)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return sorted(row[0] for row in cursor.fetchall())

    bob, carol = users["bob"], users["carol"]
    assert run([bob.pk, carol.pk], ["bob"]) == ["bob"]
    compiled = len(bulk._SELECTS)
    assert run([carol.pk, bob.pk], ["carol"]) == ["carol"]  # same shape: same SQL, other values
    assert len(bulk._SELECTS) == compiled
    carol.is_active = False
    carol.save()
    assert run([carol.pk, bob.pk], ["carol"]) == []  # the constant (is_active = true) is kept
    assert bulk.select_in("test.users", build, [], ["bob"]) is None


def test_rows_update_sets_keeps_counts_and_checks(users):
    emit_event(event_type="test.personal", audience=[users["bob"].pk, users["carol"].pk], data={"text": "x"})
    processing.events_process()
    bob_d, carol_d = (Delivery.objects.get(notification__recipient=users[n]) for n in ("bob", "carol"))
    Delivery.objects.filter(pk=carol_d.pk).update(status=Delivery.Status.SENT, reason="already")

    updated = bulk.rows_update(
        Delivery,
        pks=[bob_d.pk, carol_d.pk],
        values={"status": Delivery.Status.SKIPPED, "reason": "r", "claimed_until": None},
        add_one=("attempts",),
        where={"status": Delivery.Status.QUEUED},
    )

    assert updated == 1
    bob_d.refresh_from_db()
    carol_d.refresh_from_db()
    assert (bob_d.status, bob_d.reason, bob_d.attempts) == (Delivery.Status.SKIPPED, "r", 1)
    assert (carol_d.status, carol_d.reason, carol_d.attempts) == (Delivery.Status.SENT, "already", 0)
    event = Notification.objects.get(recipient=users["bob"]).event
    first = event.published_at
    assert first is not None
    bulk.rows_update(type(event), pks=[event.pk], values={"published_at": timezone.now()}, keep=("published_at",))
    event.refresh_from_db()
    assert event.published_at == first  # COALESCE: an earlier value is kept


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer anyway")
@pytest.mark.django_db(transaction=True)
def test_a_take_waits_for_the_writer_under_way_and_skips_the_events_it_finished(users):
    """Two writers at once: the first take holds the cursor lock (an advisory lock, taken by the take itself)
    and its events until it commits; the second take, started meanwhile, waits, then returns none of the
    events the first marked done, though they were pending when its statement began."""
    for text in ("a", "b"):  # not emit_event(): its doorbell would ring the test stack's worker, if it runs
        Event.objects.create(
            event_type="test.personal",
            audience={"kind": "users", "user_ids": [users["bob"].pk]},
            data={"text": text},
            occurred_at=timezone.now(),
        )
    taken: dict[str, object] = {}
    first_holds, second_started = threading.Event(), threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                events = processing._events_take(50)
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                    )
                    taken["first_locks"] = cursor.fetchone()[0]
                first_holds.set()
                second_started.wait(10)
                time.sleep(0.3)  # the second take is waiting by now
                bulk.rows_update(Event, pks=[e.pk for e in events], values={"completed_at": timezone.now()})
                taken["first"] = [e.pk for e in events]
                taken["first_committed"] = time.monotonic()
        finally:
            connection.close()

    def second() -> None:
        try:
            first_holds.wait(10)
            with transaction.atomic():
                second_started.set()
                taken["second"] = [e.pk for e in processing._events_take(50)]
                taken["second_returned"] = time.monotonic()
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert len(taken["first"]) == 2 and taken["first_locks"] == 1
    assert taken["second"] == []
    assert taken["second_returned"] >= taken["first_committed"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="synchronous_commit is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_rows_update_unflushed_turns_synchronous_commit_off_for_its_own_statement_only(users):
    """A trigger records ``synchronous_commit`` as each UPDATE sees it: ``off`` in the unflushed statement's own
    transaction, ``on`` in the next statement, and ``on`` for the same call inside a caller's transaction."""
    emit_event(event_type="test.personal", audience=[users["bob"].pk], data={"text": "x"})
    processing.events_process()
    delivery = Delivery.objects.get(notification__recipient=users["bob"])
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE seen_commit (setting text)")
        cursor.execute(
            "CREATE FUNCTION seen_commit_record() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen_commit VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER seen_commit BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION seen_commit_record()"
        )
    try:
        bulk.rows_update(Delivery, pks=[delivery.pk], values={"reason": "a"}, unflushed=True)
        Delivery.objects.filter(pk=delivery.pk).update(reason="b")
        with transaction.atomic():
            bulk.rows_update(Delivery, pks=[delivery.pk], values={"reason": "c"}, unflushed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT setting FROM seen_commit")
            seen = [row[0] for row in cursor.fetchall()]
            cursor.execute("SHOW synchronous_commit")
            session = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER seen_commit ON {table}")
            cursor.execute("DROP FUNCTION seen_commit_record()")
            cursor.execute("DROP TABLE seen_commit")
    assert seen == ["off", "on", "on"]
    assert session == "on"
    assert Delivery.objects.get(pk=delivery.pk).reason == "c"


def test_rows_fetch_returns_a_statements_rows_or_none_and_binds_like_djangos_cursor(users):
    """``%s`` placeholders bound (a text with ``%`` in it too), ``%%`` a literal ``%``, and no rows for a
    statement that returns none."""
    table = get_user_model()._meta.db_table
    found = bulk.rows_fetch(
        f"SELECT username, %s, '100%%' FROM {table} WHERE username LIKE %s AND id > %s ORDER BY username",
        ["50%", "%o%", 0],
    )
    assert found == [("bob", "50%", "100%"), ("carol", "50%", "100%")]
    assert bulk.rows_fetch(f"UPDATE {table} SET first_name = %s WHERE username = %s", ["B", "bob"]) == []
    assert get_user_model().objects.get(username="bob").first_name == "B"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_a_batchs_statements_are_prepared_once_the_connection_has_run_them_a_few_times(users):
    """With ``DATABASE_PREPARE_THRESHOLD``'s default (5), by the sixth one-event batch PostgreSQL holds the
    batch's statements prepared for this connection: it neither parses nor plans them again. Updates of rows
    found by key (rows_update: the events done; sends recorded on their own) are planned each time: a plan kept from
    when the table was small would scan it whole as it grows."""
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 5
    for i in range(6):
        emit_event(event_type="test.personal", audience=[users["bob"].pk], data={"text": str(i)})
        assert processing.events_process().events == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [" ".join(row[0].split()) for row in cursor.fetchall()]
    for start in (
        'INSERT INTO "pipeline_event"',  # emit_event()
        'SELECT "pipeline_event"."id"',  # the batch taken, with the cursor lock
        'SELECT "auth_user"."id"',  # its recipients, with their preferences
        "WITH doc AS (SELECT CAST($1 AS json)",  # the batch stored (pipeline.storing)
    ):
        assert any(statement.startswith(start) for statement in prepared), (start, prepared)
    stored_at = Delivery.objects.filter(notification__recipient=users["bob"]).values_list("pk", flat=True)
    for _ in range(6):
        bulk.rows_update(Delivery, pks=list(stored_at), values={"reason": "r"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [" ".join(row[0].split()) for row in cursor.fetchall()]
    assert not [s for s in prepared if s.startswith("UPDATE")], prepared
