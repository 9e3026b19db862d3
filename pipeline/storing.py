"""Storing one batch of the hot path: each recipient's inbox advanced, the notifications and their deliveries
inserted, in the caller's transaction (:func:`batch_store`).

On PostgreSQL that is **one statement**: data-modifying ``WITH`` queries (an
``INSERT ... ON CONFLICT DO UPDATE`` of the inboxes, the notifications, the
deliveries), the rows one ``json`` parameter read by ``json_to_recordset``, so
that the statement's text is the same whatever the batch holds and the
connection prepares it (``DATABASE_PREPARE_THRESHOLD``); it finds no row by
key but the inboxes' (``ON CONFLICT`` always uses the primary key), so its
plan does not depend on the tables' sizes. The three statements it replaces
cost a batch of one to three events a round trip each and the client's work
per statement (bench/README.md, "Ninth pass"). Notification ids come from
their sequence inside the statement (``nextval``), so the deliveries name
their notification without joining the inserted rows back; each recipient's
first new cursor and push position are read from the inbox rows the statement
returns, by position in an array (recipients sorted by id), not by a join.
Bound as arrays, one per column, psycopg spent more adapting two dozen lists
per batch (a sixth of a one-event batch in the client, py-spy) than the server
spent storing the rows.

Elsewhere (SQLite) it is :func:`_positions_take`'s ``UPDATE ... RETURNING``
of the inboxes, then :func:`pipeline.bulk.rows_insert` of the notifications
and of the deliveries.

Both lock each recipient's inbox row until the transaction ends, which keeps
cursors in commit order per recipient (see :class:`pipeline.models.Inbox`).

**The batch's events and the previous batch's send records ride along.**
The events are marked done (or in progress: :class:`EventMark`), and what
the drain's last pushes did (:class:`SendRecord`: ``sent``, or ``skipped``
for want of a socket) is written, in the same transaction: on PostgreSQL as
two more data-modifying ``WITH`` queries of the same statement, which find
each row by the address (``ctid``) that the statement that read it (the
take, which locked the events) or created it returned, so the prepared plan
is a TID scan whatever the tables' sizes (found by id, a plan made while a
table was small scans it whole, 1.5 ms a batch at half load). A record's
delivery updated meanwhile has moved and is left as it is (the recovery
sweep sends it again; a socket drops what it has); an event not where its
take read it raises. Elsewhere, and when no batch follows,
:func:`events_mark` and :func:`records_write` write them by id.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections

from pipeline.bulk import insert_constants, rows_fetch, rows_insert, rows_update
from pipeline.models import Delivery, Event, Inbox, Notification

_IN_LIST = 500  # ids per statement, well inside SQLite's limit on bound parameters


@dataclass(frozen=True, slots=True)
class NewNotification:
    """One notification to store, in emit order within its recipient's.

    ``event_type``, ``category``, ``data`` and ``occurred_at`` are its
    event's (the same for every notification of one ``event_id``);
    ``streamed``: it takes the recipient's next push position; ``deliveries``:
    ``(method, status, reason, digest)`` of each delivery to create for it.
    """

    event_id: Any
    recipient_id: int
    event_type: str
    category: str
    title: str
    body: str
    data: Any
    occurred_at: Any
    streamed: bool
    deliveries: tuple[tuple[str, str, str, str], ...]


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored notification: its id, its cursor and its push position (``None``: not streamed)."""

    pk: int
    cursor: int
    push_seq: int | None


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """A created delivery: its id, the index of its notification in :func:`batch_store`'s ``notifications``,
    and its method, status and digest."""

    pk: int
    index: int
    method: str
    status: str
    digest: str
    #: The row's address when created (PostgreSQL's ``ctid`` as text, ``"(page,item)"``); ``None`` elsewhere.
    tid: str | None = None


@dataclass(frozen=True, slots=True)
class SendRecord:
    """The outcome of one delivery sent from the drain, to record if the delivery is still ``queued``; raises
    ``ValueError`` for another status.

    ``status``: ``sent`` (``sent_at`` becomes ``at``) or ``skipped``
    (``reason`` is set); ``attempts`` grows by one and ``updated_at``
    becomes ``at`` (an aware datetime). ``tid``: the delivery's
    :attr:`StoredDelivery.tid`, ``None`` if unknown.
    """

    delivery_id: int
    tid: str | None
    status: str
    reason: str
    at: Any

    def __post_init__(self) -> None:
        if self.status not in (Delivery.Status.SENT, Delivery.Status.SKIPPED):
            raise ValueError(f"a send record is 'sent' or 'skipped', not {self.status!r}")


@dataclass(frozen=True, slots=True)
class EventMark:
    """How far a batch took one of its events: done (``progress_user_id`` ``None``), or stored up to that
    recipient id (an audience stored in chunks). ``tid``: the event row's address as the batch's take read
    it (PostgreSQL's ``ctid`` as text; the take locked the row, so it stays there until the transaction
    ends), ``None`` elsewhere."""

    event_id: Any
    tid: str | None
    progress_user_id: int | None = None


def events_mark(marks: Sequence[EventMark], now: Any, *, using: str = "default") -> None:
    """Mark the events of ``marks`` by id: done at ``now``, or their ``progress_user_id`` recorded;
    ``published_at`` becomes ``now`` where unset. One ``UPDATE`` for the events done, one per event in
    progress, each planned each time (:func:`pipeline.bulk.rows_update`)."""
    done = [m.event_id for m in marks if m.progress_user_id is None]
    rows_update(Event, pks=done, values={"completed_at": now, "published_at": now}, keep=("published_at",), using=using)
    for mark in marks:
        if mark.progress_user_id is not None:
            rows_update(
                Event,
                pks=[mark.event_id],
                values={"progress_user_id": mark.progress_user_id, "published_at": now},
                keep=("published_at",),
                using=using,
            )


def records_write(records: Sequence[SendRecord], *, unflushed: bool = False, using: str = "default") -> int:
    """Write ``records`` by delivery id (one ``UPDATE`` per status, reason and time, each only where the
    delivery is still ``queued``); return how many deliveries were updated.

    In the caller's transaction, or autocommit; ``unflushed``: each
    statement's commit does not wait for the WAL flush on PostgreSQL (see
    :func:`pipeline.bulk.rows_update`). Raises what the database raises.
    """
    groups: dict[tuple[str, str, Any], list[int]] = defaultdict(list)
    for record in records:
        groups[(record.status, record.reason, record.at)].append(record.delivery_id)
    updated = 0
    for (status, reason, at), ids in groups.items():
        values: dict[str, Any] = {"status": status, "updated_at": at}
        values.update({"sent_at": at} if status == Delivery.Status.SENT else {"reason": reason[:255]})
        updated += rows_update(
            Delivery,
            pks=ids,
            values=values,
            add_one=("attempts",),
            where={"status": Delivery.Status.QUEUED},
            unflushed=unflushed,
            using=using,
        )
    return updated


def batch_store(
    notifications: Sequence[NewNotification],
    *,
    now: Any,
    records: Sequence[SendRecord] = (),
    marks: Sequence[EventMark] = (),
    using: str = "default",
) -> tuple[list[Stored], list[StoredDelivery]]:
    """Store ``notifications`` with their deliveries, created at ``now``, in the caller's transaction, which
    must hold the cursor lock (:func:`pipeline.processing.events_process` takes it); write ``records`` (an
    earlier batch's sends) and mark the batch's events (``marks``, see :func:`events_mark`) in the same
    transaction.

    Each recipient's notifications take the cursors after its inbox's last, in
    the order given, and those ``streamed`` its next push positions; an inbox
    that does not exist yet is created. Returns one :class:`Stored` per
    notification, in the order given, and the deliveries created, in no
    promised order. Raises ``django.db.IntegrityError`` for a notification
    already stored (the same event and recipient), ``django.db.DatabaseError``
    if an event of ``marks`` was not where its ``tid`` said (PostgreSQL), and
    what the database raises.
    """
    if connections[using].vendor == "postgresql":
        return _store_postgres(notifications, now, using, records, marks)
    records_write(records, using=using)
    events_mark(marks, now, using=using)
    return _store_rows(notifications, now, using)


def _offsets(
    notifications: Sequence[NewNotification],
) -> tuple[dict[int, tuple[int, int]], list[tuple[int, int | None]]]:
    """``{recipient id: (notifications, of them streamed)}``, and each notification's cursor and push position
    as offsets from its recipient's inbox once advanced by those counts (``(0, 0)``: the inbox's new last;
    ``None``: not streamed), in the order given."""
    gained: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for n in notifications:
        counts = gained[n.recipient_id]
        counts[0] += 1
        counts[1] += n.streamed
    seen: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    offsets: list[tuple[int, int | None]] = []
    for n in notifications:
        count, pushed = gained[n.recipient_id]
        ordinal = seen[n.recipient_id]
        ordinal[0] += 1
        ordinal[1] += n.streamed
        # The first of k new cursors is last - k + 1.
        offsets.append((ordinal[0] - count, ordinal[1] - pushed if n.streamed else None))
    return {uid: (count, pushed) for uid, (count, pushed) in gained.items()}, offsets


_NOTIFICATION_COLUMNS = (
    "event_id",
    "recipient_id",
    "event_type",
    "category",
    "title",
    "body",
    "data",
    "cursor",
    "push_seq",
    "occurred_at",
)
_DELIVERY_COLUMNS = ("notification_id", "method", "status", "reason", "digest")
_DELIVERY_TIMES = ("next_attempt_at", "created_at", "updated_at")


def _store_rows(
    notifications: Sequence[NewNotification], now: Any, using: str
) -> tuple[list[Stored], list[StoredDelivery]]:
    """:func:`batch_store` as separate statements (any database)."""
    gained, offsets = _offsets(notifications)
    after = _positions_take(gained, using)
    rows: list[tuple[Any, ...]] = []
    for n, (cursor_offset, seq_offset) in zip(notifications, offsets, strict=True):
        last_cursor, last_seq = after[n.recipient_id]
        seq = None if seq_offset is None else last_seq + seq_offset
        rows.append(
            (
                *(n.event_id, n.recipient_id, n.event_type, n.category, n.title, n.body, n.data),
                *(last_cursor + cursor_offset, seq, n.occurred_at),
            )
        )
    # (recipient, cursor) is unique: it maps each returned id to its row, whatever order RETURNING keeps.
    ids = {
        (int(uid), int(cursor)): int(pk)
        for pk, uid, cursor in rows_insert(
            Notification,
            columns=_NOTIFICATION_COLUMNS,
            rows=rows,
            shared={"created_at": now},
            returning=("pk", "recipient_id", "cursor"),
            using=using,
        )
    }
    stored = [Stored(ids[(int(row[1]), int(row[7]))], int(row[7]), row[8]) for row in rows]
    index = {s.pk: i for i, s in enumerate(stored)}
    delivery_rows = [
        (stored[i].pk, method, status, reason, digest)
        for i, n in enumerate(notifications)
        for method, status, reason, digest in n.deliveries
    ]
    deliveries = [
        StoredDelivery(int(pk), index[int(nid)], method, status, digest)
        for pk, nid, method, status, digest in rows_insert(
            Delivery,
            columns=_DELIVERY_COLUMNS,
            rows=delivery_rows,
            shared=dict.fromkeys(_DELIVERY_TIMES, now),
            returning=("pk", "notification_id", "method", "status", "digest"),
            using=using,
        )
    ]
    return stored, deliveries


def _positions_take(gained: dict[int, tuple[int, int]], using: str = "default") -> dict[int, tuple[int, int]]:
    """Advance each recipient's inbox by ``gained[user_id] = (notifications, of them streamed)``; return each
    one's new ``(last_cursor, last_push_seq)``.

    One ``UPDATE ... SET last_cursor = last_cursor + k, last_push_seq =
    last_push_seq + j ... RETURNING`` per distinct ``(k, j)`` (nearly always
    one: a recipient gets one notification per event): it locks the rows and
    reads the new values in one statement (SQLite 3.35+, PostgreSQL).
    Inboxes that do not exist yet are created, then advanced. Runs inside the
    batch's transaction.
    """
    connection = connections[using]
    table = connection.ops.quote_name(Inbox._meta.db_table)
    user_column = connection.ops.quote_name(Inbox._meta.get_field("user").column)
    cursor_column = connection.ops.quote_name(Inbox._meta.get_field("last_cursor").column)
    seq_column = connection.ops.quote_name(Inbox._meta.get_field("last_push_seq").column)
    by_count: dict[tuple[int, int], list[int]] = defaultdict(list)
    for uid, counts in gained.items():
        by_count[counts].append(uid)
    found: dict[int, tuple[int, int]] = {}
    for (count, pushed), uids in by_count.items():
        for start in range(0, len(uids), _IN_LIST):
            part = uids[start : start + _IN_LIST]
            returned = rows_fetch(
                f"UPDATE {table} SET {cursor_column} = {cursor_column} + %s, "  # noqa: S608 - names from _meta
                f"{seq_column} = {seq_column} + %s "
                f"WHERE {user_column} IN ({', '.join(['%s'] * len(part))}) "
                f"RETURNING {user_column}, {cursor_column}, {seq_column}",
                [count, pushed, *part],
                using=using,
            )
            found.update((int(uid), (int(last), int(seq))) for uid, last, seq in returned)
    missing = {uid: counts for uid, counts in gained.items() if uid not in found}
    if missing:
        rows_insert(Inbox, columns=("user_id",), rows=[(uid,) for uid in missing], ignore_conflicts=True, using=using)
        found.update(_positions_take(missing, using))
    return found


def _store_postgres(
    notifications: Sequence[NewNotification],
    now: Any,
    using: str,
    records: Sequence[SendRecord] = (),
    marks: Sequence[EventMark] = (),
) -> tuple[list[Stored], list[StoredDelivery]]:
    """:func:`batch_store` in one statement (PostgreSQL); see the module's docstring."""
    sql, constants = _postgres_statement(using)
    gained, offsets = _offsets(notifications)
    uids = sorted(gained)
    position = {uid: i for i, uid in enumerate(uids, start=1)}
    events: dict[Any, int] = {}
    event_rows: list[dict[str, Any]] = []
    outcomes: dict[tuple[str, str, str, str], int] = {}
    rows: list[dict[str, Any]] = []
    deliveries_given: list[tuple[int, int]] = []
    addressed = [m for m in marks if m.tid is not None]
    for i, (n, (cursor_offset, seq_offset)) in enumerate(zip(notifications, offsets, strict=True), start=1):
        uid = n.recipient_id
        ex = events.get(n.event_id)
        if ex is None:
            ex = events[n.event_id] = len(events) + 1
            event_rows.append(
                {
                    "ix": ex,
                    "id": str(n.event_id),
                    "event_type": n.event_type,
                    "category": n.category,
                    "data": n.data,
                    "occurred_at": n.occurred_at.isoformat(),
                }
            )
        rows.append(
            {
                "ix": i,
                "uid": uid,
                "user_ix": position[uid],
                "event_ix": ex,
                "cursor_offset": cursor_offset,
                "seq_offset": seq_offset,
                "title": n.title,
                "body": n.body,
            }
        )
        for outcome in n.deliveries:
            mx = outcomes.get(outcome)
            if mx is None:
                mx = outcomes[outcome] = len(outcomes) + 1
            deliveries_given.append((i, mx))
    document = {
        "g": [{"uid": uid, "gained": gained[uid][0], "pushed": gained[uid][1]} for uid in uids],
        "e": event_rows,
        "r": rows,
        "m": [
            {"ix": ix, **dict(zip(("method", "status", "reason", "digest"), outcome, strict=True))}
            for outcome, ix in outcomes.items()
        ],
        "d": [{"row_ix": row, "outcome_ix": outcome} for row, outcome in deliveries_given],
        # s: the records; those without a row address are written by id first.
        "s": [
            {
                "tid": r.tid,
                "id": r.delivery_id,
                "status": r.status,
                "reason": r.reason[:255],
                "at": r.at.isoformat(),
            }
            for r in records
            if r.tid is not None
        ],
        # f: the batch's events marked; those without a row address by id first.
        "f": [
            {
                "tid": m.tid,
                "id": str(m.event_id),
                "kind": "done" if m.progress_user_id is None else "progress",
                "progress": m.progress_user_id,
            }
            for m in addressed
        ],
    }
    events_mark([m for m in marks if m.tid is None], now, using=using)
    records_write([r for r in records if r.tid is None], using=using)
    params = [json.dumps(document, ensure_ascii=False), now, *constants]
    by_index: dict[int, Stored] = {}
    index: dict[int, int] = {}
    created: list[tuple[Any, ...]] = []
    marked = 0
    for kind, ix, pk, cursor, seq, method, status, digest, tid in rows_fetch(sql, params, using=using):
        if kind == 2:
            marked += 1
        elif kind == 0:
            by_index[int(ix) - 1] = Stored(int(pk), int(cursor), None if seq is None else int(seq))
            index[int(pk)] = int(ix) - 1
        else:
            created.append((int(pk), int(ix), method, status, digest, tid))
    if marked != len(addressed):
        raise DatabaseError(f"{len(addressed) - marked} of the batch's {len(addressed)} events were not where read")
    deliveries = [
        StoredDelivery(pk, index[nid], method, status, digest, tid) for pk, nid, method, status, digest, tid in created
    ]
    return [by_index[i] for i in range(len(notifications))], deliveries


@functools.lru_cache(maxsize=8)
def _postgres_statement(using: str) -> tuple[str, tuple[Any, ...]]:
    """The statement of :func:`_store_postgres` (``%s`` placeholders) and the values of its parameters after
    the first two (the batch as one JSON document, and its time): the other columns' constant defaults. Built
    once per database alias (the models' tables, columns and defaults, the notifications' id sequence).

    Its ``s`` query writes the records (:class:`SendRecord`) it is given: for each record, the row at its
    address (a TID scan, ``ctid = x.tid`` in a nested loop), if that row has the record's id and is still
    ``queued`` (``IS NOT DISTINCT FROM``, which no index serves: with ``=`` the planner may go through the
    status index). The records' ``status IN ('sent', 'skipped')`` is always true, but without statistics
    the planner takes it to keep 1 % of the 100 rows it assumes a ``json_to_recordset`` returns: with two
    records estimated, the nested loop of TID scans costs less than reading the deliveries table even when
    it is new (10 pages assumed), so the generic plan prepared then finds the records by address as the
    table grows (tests/unit/pipeline/test_storing.py checks the plan). Its ``f`` query marks the events
    (:class:`EventMark`) likewise (``kind IN ('done', 'progress')`` plays the same part), and returns a row
    each (kind 2), so that an event not found is seen."""
    connection = connections[using]
    quote = connection.ops.quote_name
    constants: list[Any] = []

    def column(model: type[Any], name: str) -> str:
        return str(quote(model._meta.get_field(name).column))

    def kind(model: type[Any], name: str) -> str:
        return str(model._meta.get_field(name).db_type(connection))

    def defaults(model: type[Any], given: Sequence[str], shared: Sequence[str]) -> tuple[str, str]:
        """The left-out columns' names and their values' placeholders (``, a, b``), and ``shared`` as the
        batch's time (``%s`` number 2)."""
        found = insert_constants(model, columns=given, shared=shared, using=using)
        constants.extend(value for _, _, value in found.values())
        names = "".join(f", {quoted}" for quoted, _, _ in found.values())
        names += "".join(f", {column(model, name)}" for name in shared)
        casts = "".join(f", CAST(%s AS {db_type})" for _, db_type, _ in found.values())
        casts += ", now.at" * len(shared)
        return names, casts

    sequence = str(
        rows_fetch(
            "SELECT pg_get_serial_sequence(%s, %s)",
            [Notification._meta.db_table, Notification._meta.get_field("id").column],
            using=using,
        )[0][0]
    ).replace("'", "''")
    user_type = kind(Inbox, "user")
    inbox_user, last, seq = column(Inbox, "user"), column(Inbox, "last_cursor"), column(Inbox, "last_push_seq")
    inbox_names, inbox_casts = defaults(Inbox, ("user_id", "last_cursor", "last_push_seq"), ())
    notification_names, notification_casts = defaults(Notification, ("id", *_NOTIFICATION_COLUMNS), ("created_at",))
    notification_columns = ", ".join(column(Notification, name) for name in ("id", *_NOTIFICATION_COLUMNS))
    delivery_names, delivery_casts = defaults(Delivery, _DELIVERY_COLUMNS, _DELIVERY_TIMES)
    delivery_columns = ", ".join(column(Delivery, name) for name in _DELIVERY_COLUMNS)
    delivery_returned = ", ".join(
        column(Delivery, name) for name in ("id", "notification", "method", "status", "digest")
    )
    time_type = kind(Notification, "created_at")
    delivery = quote(Delivery._meta.db_table)
    status, reason, attempts = (column(Delivery, name) for name in ("status", "reason", "attempts"))
    sent_at, updated_at, delivery_id = (column(Delivery, name) for name in ("sent_at", "updated_at", "id"))
    queued = str(Delivery.Status.QUEUED).replace("'", "''")
    sent = str(Delivery.Status.SENT).replace("'", "''")
    outcomes = ", ".join(f"'{value}'" for value in (Delivery.Status.SENT, Delivery.Status.SKIPPED))
    completed, published, progress = (
        column(Event, name) for name in ("completed_at", "published_at", "progress_user_id")
    )
    sql = (
        f"WITH doc AS (SELECT CAST(%s AS json) AS j), now AS (SELECT CAST(%s AS {time_type}) AS at), "  # noqa: S608
        # g: one row per recipient, sorted by id: how many notifications and pushes each gains.
        f"g AS (SELECT * FROM doc, json_to_recordset(doc.j -> 'g') AS g(uid {user_type}, gained bigint, "
        "pushed bigint)), "
        # i: each inbox advanced (created when missing); its row stays locked until the transaction ends.
        f"i AS (INSERT INTO {quote(Inbox._meta.db_table)} AS t ({inbox_user}, {last}, {seq}{inbox_names}) "
        f"SELECT uid, gained, pushed{inbox_casts} FROM g ORDER BY uid "
        f"ON CONFLICT ({inbox_user}) DO UPDATE SET {last} = t.{last} + EXCLUDED.{last}, "
        f"{seq} = t.{seq} + EXCLUDED.{seq} RETURNING {inbox_user} AS uid, {last} AS last, {seq} AS seq), "
        # a: the inboxes' new positions as arrays in recipient order (g's), read by position below.
        "a AS (SELECT array_agg(last ORDER BY uid) AS last, array_agg(seq ORDER BY uid) AS seq FROM i), "
        # e: the batch's events, once each.
        "e AS (SELECT e.* FROM doc, json_to_recordset(doc.j -> 'e') "
        f"AS e(ix integer, id {kind(Notification, 'event')}, "
        f"event_type text, category text, data jsonb, occurred_at {kind(Notification, 'occurred_at')})), "
        # r: one row per notification, its id drawn from the sequence here so that the deliveries can name it.
        f"r AS MATERIALIZED (SELECT nextval('{sequence}') AS id, r.*, a.last[r.user_ix] + r.cursor_offset "
        "AS cursor, a.seq[r.user_ix] + r.seq_offset AS push_seq FROM doc, json_to_recordset(doc.j -> 'r') "
        f"AS r(ix integer, uid {user_type}, user_ix integer, event_ix integer, cursor_offset bigint, "
        "seq_offset bigint, title text, body text), a), "
        f"n AS (INSERT INTO {quote(Notification._meta.db_table)} ({notification_columns}{notification_names}) "
        "SELECT r.id, e.id, r.uid, e.event_type, e.category, r.title, r.body, e.data, r.cursor, r.push_seq, "
        f"e.occurred_at{notification_casts} FROM r JOIN e ON e.ix = r.event_ix CROSS JOIN now), "
        # m: the distinct (method, status, reason, digest) of the batch's deliveries.
        "m AS (SELECT m.* FROM doc, json_to_recordset(doc.j -> 'm') "
        "AS m(ix integer, method text, status text, reason text, digest text)), "
        f"d AS (INSERT INTO {quote(Delivery._meta.db_table)} ({delivery_columns}{delivery_names}) "
        f"SELECT ids.id[x.row_ix], m.method, m.status, m.reason, m.digest{delivery_casts} "
        "FROM doc CROSS JOIN json_to_recordset(doc.j -> 'd') AS x(row_ix integer, outcome_ix integer) "
        "JOIN m ON m.ix = x.outcome_ix CROSS JOIN (SELECT array_agg(id ORDER BY ix) AS id FROM r) AS ids "
        f"CROSS JOIN now RETURNING {delivery_returned}, ctid), "
        # s: an earlier batch's send records, each delivery found by its row address (see above).
        f"s AS (UPDATE {delivery} AS t SET {status} = x.status, {reason} = CASE WHEN x.status = '{sent}' "
        f"THEN t.{reason} ELSE x.reason END, {sent_at} = CASE WHEN x.status = '{sent}' THEN x.at "
        f"ELSE t.{sent_at} END, "
        f"{attempts} = t.{attempts} + 1, {updated_at} = x.at "
        "FROM doc CROSS JOIN json_to_recordset(doc.j -> 's') "
        f"AS x(tid tid, id bigint, status text, reason text, at {time_type}) "
        f"WHERE x.status IN ({outcomes}) AND t.ctid = x.tid AND t.{delivery_id} = x.id "
        f"AND t.{status} IS NOT DISTINCT FROM '{queued}' "
        f"RETURNING t.{delivery_id}), "
        # f: the batch's events, done or in progress, each found by the address its take read (likewise).
        f"f AS (UPDATE {quote(Event._meta.db_table)} AS t SET {completed} = CASE WHEN x.progress IS NULL "
        f"THEN now.at ELSE t.{completed} END, {published} = COALESCE(t.{published}, now.at), "
        f"{progress} = COALESCE(x.progress, t.{progress}) "
        "FROM doc CROSS JOIN json_to_recordset(doc.j -> 'f') "
        f"AS x(tid tid, id {kind(Event, 'id')}, kind text, progress {kind(Event, 'progress_user_id')}) CROSS JOIN now "
        f"WHERE x.kind IN ('done', 'progress') AND t.ctid = x.tid AND t.{column(Event, 'id')} = x.id "
        f"RETURNING t.{column(Event, 'id')}) "
        # Each notification with its index (kind 0), each delivery with its notification's id (kind 1), and a
        # row per event marked (kind 2).
        "SELECT 0, r.ix, r.id, r.cursor, r.push_seq, NULL, NULL, NULL, NULL FROM r "
        f"UNION ALL SELECT 1, d.{column(Delivery, 'notification')}, d.id, NULL, NULL, d.method, d.status, d.digest, "
        "CAST(d.ctid AS text) FROM d UNION ALL SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM f"
    )
    return sql, tuple(constants)
