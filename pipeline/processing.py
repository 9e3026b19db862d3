"""The hot path: many events per transaction, decided, stored and pushed.

:func:`events_process` takes the oldest events not yet processed, in the
order they were emitted, and in **one transaction** expands their audiences,
resolves every recipient's preferences (read with the recipients: one query for the
whole batch),
renders the notifications, hands out each recipient's cursors, stores the
notifications and deliveries, and marks the events done. Taking the events
and storing their notifications commit together, so an event is processed
exactly once: a worker that dies mid-batch commits nothing and the next drain
takes the same events again. Writers are serialised (SQLite's single writer;
a transaction-level advisory lock on PostgreSQL), so cursors follow the
order in which events were emitted, per recipient, across batches and workers.

After the commit, :func:`inline_send` sends the deliveries of methods cheap
enough to send from here (``send_inline``: the WebSocket push), and the caller
queues the rest (email batches on their method's queue, digest appends).

An audience larger than ``NOTIFLOW["AUDIENCE_CHUNK_SIZE"]`` recipients is
stored in chunks of that size, one transaction each, in user id order
(``Event.progress_user_id`` says how far it got); events after it wait for
its last chunk, so that per-recipient order holds.

An event whose notification cannot be rendered (a missing template, a bug in
a template filter) is a poison event: it is dead-lettered (a ``step`` dead
letter of ``notiflow.events_drain`` naming the event) and left out, and the
rest of the batch goes on. A replay makes it pending again.
"""

from __future__ import annotations

import logging
import operator
import traceback
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from delivery.base import DeliveryResult, Message, Outcome
from delivery.registry import methods
from pipeline.audiences import Audience
from pipeline.bulk import instances_select, select_in
from pipeline.catalogue import EventType, catalogue
from pipeline.conf import notiflow_settings
from pipeline.deadletters import DRAIN_TASK, dead_letter_record
from pipeline.models import DeadLetter, Delivery, Event, Notification
from pipeline.preferences import (
    PREFERENCES_ANNOTATION,
    Decision,
    PreferenceRows,
    preferences_annotate,
    preferences_gathered,
    preferences_resolve,
)
from pipeline.services import (
    NotificationFields,
    ReadWatch,
    delivery_record,
    event_context,
    message_of,
    recipient_of,
    text_render,
)
from pipeline.storing import (
    EventMark,
    NewNotification,
    SendRecord,
    Stored,
    StoredDelivery,
    batch_store,
    records_write,
)

logger = logging.getLogger(__name__)

#: The PostgreSQL advisory lock that serialises the writers of cursors (``pg_advisory_xact_lock``).
CURSOR_LOCK = zlib.crc32(b"notiflow.cursors")


@dataclass
class Batch:
    """What one call of :func:`events_process` did, and what is left to send after its commit.

    ``inline``: ``{method: [InlineDelivery]}`` for :func:`inline_send`; ``queued``:
    ``{method: [delivery id]}`` for the methods' queues; ``digest``: delivery
    ids to append to digest windows; ``dead_lettered``: ids of poison events.
    """

    events: int = 0
    notifications: int = 0
    #: More events may be pending behind this batch (it was full, or stopped at a large audience).
    more: bool = False
    inline: dict[str, list[InlineDelivery]] = field(default_factory=dict)
    queued: dict[str, list[int]] = field(default_factory=dict)
    digest: list[int] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events)


def events_pending() -> QuerySet[Event]:
    """Events not yet fully processed and not dead-lettered, oldest (first emitted) first."""
    poisoned = DeadLetter.objects.filter(event=OuterRef("pk"), status=DeadLetter.Status.DEAD, kind=DeadLetter.Kind.STEP)
    return Event.objects.filter(completed_at__isnull=True).filter(~Exists(poisoned)).order_by("created_at", "pk")


def _candidates(event: Event, audience: Audience, room: int) -> tuple[list[int], int, bool]:
    """Up to ``room`` recipient ids of ``event`` after its progress, ascending; the last id looked at; whether more
    may follow. Explicit audiences are filtered for active users later, with the rest of the batch."""
    exclude = None if event.include_actor else event.actor_id
    after = event.progress_user_id
    if audience.kind == "users":
        ids = sorted(uid for uid in set(audience.user_ids) if uid > after and uid != exclude)
    else:
        ids = audience.recipient_ids(after=after, limit=room + 1, exclude=exclude)
    more = len(ids) > room
    ids = ids[:room]
    return ids, (ids[-1] if ids else after), more


@dataclass
class _Planned:
    event: Event
    spec: EventType
    user_ids: list[int]
    last_user_id: int
    more: bool


def _plan(events: Sequence[Event], chunk: int) -> list[_Planned]:
    """The recipients each event contributes to this transaction, at most ``chunk`` in all; stops at an event
    that does not fit whole (events after it wait, to keep each recipient's order)."""
    planned: list[_Planned] = []
    used = 0
    for event in events:
        room = chunk - used
        if room <= 0:
            break
        ids, last, more = _candidates(event, Audience.from_json(event.audience), room)
        planned.append(_Planned(event, catalogue.get(event.event_type), ids, last, more))
        used += len(ids)
        if more:
            break
    return planned


def _users() -> QuerySet[Any]:
    """Users with the fields the pipeline reads (the username, the email address, ``is_active``): fewer columns
    to read and to set on 1,000 instances per batch."""
    model = get_user_model()
    return model.objects.only(model.USERNAME_FIELD, model.get_email_field_name(), "is_active")


def _users_load(ids: list[int], methods_used: list[str]) -> tuple[dict[int, Any], PreferenceRows]:
    """``{id: user}`` of the users among ``ids`` (distinct), with :func:`_users`' fields, and their preferences
    for ``methods_used``, in one query (:func:`pipeline.preferences.preferences_annotate`); SQL compiled once
    per number of ids and methods."""
    query = select_in(
        "processing.users",
        lambda pks, aliases: preferences_annotate(_users().filter(pk__in=pks), aliases),
        ids,
        methods_used or [""],
    )
    if query is None:
        return {}, {}
    users = instances_select(get_user_model(), *query, extra=(PREFERENCES_ANNOTATION,))
    return {user.pk: user for user in users}, preferences_gathered(users)


def _render_all(plan: _Planned, users: dict[int, Any]) -> list[tuple[int, str, str]]:
    """``[(user id, title, body)]`` of one event for its active recipients; raises what the templates raise.

    The first recipient's texts are rendered with the recipient in a
    :class:`~pipeline.services.ReadWatch`: if neither template read it (an
    announcement), every other recipient gets the same texts without a render.
    """
    rendered: list[tuple[int, str, str]] = []
    same: tuple[str, str] | None = None
    for uid in plan.user_ids:
        user = users.get(uid)
        if user is None:
            continue  # inactive, or deleted since the event
        if same is not None:
            rendered.append((uid, *same))
            continue
        context = event_context(event=plan.event, recipient=user)
        watch = context["recipient"] = ReadWatch(context["recipient"])
        title = text_render(plan.spec.template_name("title.txt"), context)[:255]
        body = text_render(plan.spec.template_name("body.txt"), context)
        rendered.append((uid, title, body))
        if not watch.was_read:
            same = (title, body)
    return rendered


def events_process(*, limit: int | None = None, chunk: int | None = None, records: Sequence[SendRecord] = ()) -> Batch:
    """Process the next events (at most ``limit``, at most ``chunk`` recipients) in one transaction.

    ``limit`` defaults to ``NOTIFLOW["EVENT_BATCH_SIZE"]`` and ``chunk`` to
    ``NOTIFLOW["AUDIENCE_CHUNK_SIZE"]``. ``records``: an earlier batch's
    send records (:func:`inline_send`'s), written in the same transaction,
    also when no event is pending. Returns the :class:`Batch`, empty
    when no event is pending. Raises ``django.db.DatabaseError`` (the
    transaction rolled back; nothing was taken, nothing recorded) and, for an
    error outside rendering, whatever raised: :func:`events_process_isolating`
    then finds the event that causes it.
    """
    limit = limit or int(notiflow_settings.EVENT_BATCH_SIZE)
    chunk = chunk or int(notiflow_settings.AUDIENCE_CHUNK_SIZE)
    batch = Batch()
    now = timezone.now()
    with transaction.atomic():
        events = _events_take(limit)
        if not events:
            records_write(records)
            return batch
        plans = _plan(events, chunk)
        batch.events = len(plans)
        batch.more = len(events) == limit or len(plans) < len(events) or any(p.more for p in plans)
        actors = {p.event.actor_id for p in plans if p.event.actor_id is not None}
        methods_used = sorted({m for p in plans for m in p.spec.methods})
        found, preferences = _users_load(sorted({uid for p in plans for uid in p.user_ids} | actors), methods_used)
        for plan in plans:
            if plan.event.actor_id is not None:
                plan.event.actor = found.get(plan.event.actor_id)
        users = {uid: user for uid, user in found.items() if user.is_active}

        renders: list[tuple[_Planned, list[tuple[int, str, str]]]] = []
        for plan in plans:
            try:
                renders.append((plan, _render_all(plan, users)))
            except DatabaseError:
                raise
            except Exception as exc:  # noqa: BLE001 - a poison event: dead-lettered, the batch goes on
                dead_letter_record(
                    kind=DeadLetter.Kind.STEP,
                    task=DRAIN_TASK,
                    args=[str(plan.event.pk)],
                    exception=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                    event_id=plan.event.pk,
                )
                batch.dead_lettered.append(str(plan.event.pk))

        earlier = _already_stored(renders)
        kept = [(plan, [r for r in rendered if (plan.event.pk, r[0]) not in earlier]) for plan, rendered in renders]
        decisions = {
            id(plan): preferences_resolve(event_type=plan.spec, user_ids=plan.user_ids, rows=preferences)
            for plan in plans
        }
        pending: list[NewNotification] = []
        plan_of: list[_Planned] = []
        for plan, rendered in kept:
            event, spec = plan.event, plan.spec
            for uid, title, body in rendered:
                decided = decisions[id(plan)][uid]
                outcomes = tuple(
                    (
                        method,
                        Delivery.Status.SKIPPED if d.action == "skip" else Delivery.Status.QUEUED,
                        d.reason,
                        d.digest,
                    )
                    for method, d in decided.items()
                )
                pending.append(
                    NewNotification(
                        event.pk,
                        uid,
                        spec.name,
                        spec.category,
                        title,
                        body,
                        event.data,
                        event.occurred_at,
                        _streamed(decided),
                        outcomes,
                    )
                )
                plan_of.append(plan)
        # Each recipient's cursors and push positions are handed out in emit order: the last ones are what the
        # inbox now holds.
        stored, created = batch_store(pending, now=now, records=records, marks=_marks(renders))
        notifications = [_Stored(n, s, plan) for s, n, plan in zip(stored, pending, plan_of, strict=True)]
        created.sort(key=lambda d: d.index)  # in emit order (RETURNING promises none)
        batch.notifications = len(pending)

    _sort(batch, created, notifications, users, now)
    return batch


def _already_stored(renders: Sequence[tuple[_Planned, list[tuple[int, str, str]]]]) -> set[tuple[Any, int]]:
    """``(event id, recipient id)`` of the notifications the rendered recipients already have (a replay, a chunk
    stored before a crash). Only an event taken before can have any; each is read by the ``(event, recipient)``
    index over the recipients' id range (by ``event_id`` and a list of ids, PostgreSQL read every notification
    of the event so far for each chunk of it: storing a large audience grew with its square)."""
    ranges = [
        Q(event_id=plan.event.pk, recipient_id__gte=rows[0][0], recipient_id__lte=rows[-1][0])
        for plan, rows in renders
        if plan.event.published_at is not None and rows
    ]
    if not ranges:
        return set()
    found = Notification.objects.filter(reduce(operator.or_, ranges)).order_by().values_list("event_id", "recipient_id")
    return {(event_id, int(uid)) for event_id, uid in found}


def _events_take(limit: int) -> list[Event]:
    """The first ``limit`` pending events (see :func:`events_pending`), this transaction made the only writer
    of cursors until it ends if there are any.

    SQLite has one writer anyway. On PostgreSQL the same statement takes the
    transaction-level advisory lock :data:`CURSOR_LOCK` (a sub-select run
    once, before the first event is read) and locks the
    events it returns (``FOR UPDATE``): a statement reads the table as it was
    when it began, so events another writer marked done while this one waited
    for the lock would otherwise come back; locking a row re-reads its newest
    version and drops it if it is no longer pending. One round trip, where the
    lock and the read were two. Each event there carries its row's address
    (``row_address``, the ``ctid`` as text), by which the batch's statement
    marks it (:func:`_marks`): locked, the row stays where it is until the
    transaction ends. Its SQL is the ORM's own, compiled once per
    database and limit: building this query (an ``EXISTS`` subquery) took
    about 2 ms of the worker's time per batch, five times what running it
    takes.
    """
    key = (connection.alias, connection.vendor, limit)
    if key not in _PENDING_SQL:
        query = events_pending()
        extra: tuple[str, ...] = ()
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(Event._meta.db_table)
            address = RawSQL(f"CAST({table}.ctid AS text)", ())  # noqa: S611 - the name from _meta, quoted
            query = query.annotate(row_address=address)
            extra = ("row_address",)
            # A sub-select the planner runs once, before the scan (an InitPlan gating it); not EXISTS, whose
            # select list PostgreSQL drops unrun.
            lock = RawSQL(
                "(SELECT CAST(pg_advisory_xact_lock(%s) AS text)) IS NOT NULL",
                (CURSOR_LOCK,),
                output_field=BooleanField(),
            )
            query = query.filter(lock).select_for_update(of=("self",))
        _PENDING_SQL[key] = (*query[:limit].query.sql_with_params(), extra)
    sql, params, extra = _PENDING_SQL[key]
    return instances_select(Event, sql, params, extra=extra)


def _marks(renders: Sequence[tuple[_Planned, Any]]) -> list[EventMark]:
    """How far the batch took each event it stored: done, or (an audience stored in chunks) done up to its last
    recipient; events taken but not stored (after a large audience; poison events, which are not in
    ``renders``) stay pending. On PostgreSQL each carries the address its take read, and the statement that
    stores the batch marks them (:mod:`pipeline.storing`): found by id in a statement of its own, planned each
    time, they cost a round trip; by id inside the prepared statement, a plan made while the events table was
    small hashed the whole table on every batch (1.5 ms a call at half load)."""
    return [
        EventMark(plan.event.pk, getattr(plan.event, "row_address", None), plan.last_user_id if plan.more else None)
        for plan, _ in renders
    ]


_PENDING_SQL: dict[tuple[str, str, int], tuple[str, tuple[Any, ...], tuple[str, ...]]] = {}


def _streamed(decisions: dict[str, Decision]) -> bool:
    """Whether a recipient's notification goes to their sockets: a ``streamed`` method (the WebSocket push) is to
    send it now (not skipped by a preference, not digested)."""
    return any(d.action == "now" and methods.get(method).streamed for method, d in decisions.items())


@dataclass(frozen=True, slots=True)
class _Stored:
    """A notification as stored: what was stored (:class:`pipeline.storing.NewNotification`), its id, cursor
    and push position (:class:`pipeline.storing.Stored`), and its event's plan."""

    new: NewNotification
    stored: Stored
    plan: _Planned

    def fields(self, created_at: Any) -> NotificationFields:
        """What a message reads of the notification, built only when a message needs it (a push to a connected
        recipient)."""
        new = self.new
        return NotificationFields(
            pk=self.stored.pk,
            event_id=self.plan.event.pk,
            event_type=new.event_type,
            category=new.category,
            title=new.title,
            body=new.body,
            data=new.data,
            cursor=self.stored.cursor,
            push_seq=self.stored.push_seq,
            state=Notification.State.UNSEEN,  # as stored
            occurred_at=new.occurred_at,
            created_at=created_at,
        )


@dataclass(frozen=True, slots=True)
class InlineDelivery:
    """A delivery :func:`inline_send` sends after the batch's commit. Its message is built (``build()``) only
    if the method can reach the recipient (:meth:`delivery.base.DeliveryMethod.reachable`): an announcement to
    10,000 users with 1,000 connected builds 1,000 messages, not 10,000."""

    delivery_id: int
    recipient_id: int
    build: Callable[[], Message]
    #: The delivery row's address when created (:attr:`pipeline.storing.StoredDelivery.tid`).
    tid: str | None = None


def _sort(
    batch: Batch, deliveries: list[StoredDelivery], notifications: list[_Stored], users: dict[int, Any], now: Any
) -> None:
    """Sort the stored deliveries (of ``notifications``, by index) into what :func:`inline_send` sends, what is
    queued and what is digested."""
    inline: dict[str, list[InlineDelivery]] = defaultdict(list)
    queued: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        if delivery.status != Delivery.Status.QUEUED:
            continue
        if delivery.digest:
            batch.digest.append(delivery.pk)
        elif methods.get(delivery.method).send_inline:
            notification = notifications[delivery.index]
            uid = notification.new.recipient_id
            build = partial(_message, delivery.pk, notification, users[uid], now)
            inline[delivery.method].append(InlineDelivery(delivery.pk, uid, build, delivery.tid))
        else:
            queued[delivery.method].append(delivery.pk)
    batch.inline, batch.queued = dict(inline), dict(queued)


def _message(delivery_id: int, stored: _Stored, recipient: Any, created_at: Any) -> Message:
    return message_of(
        delivery_id=delivery_id,
        notification=stored.fields(created_at),
        recipient=recipient_of(recipient),
        context=event_context(event=stored.plan.event, recipient=recipient),
    )


def events_process_isolating(
    *, limit: int | None = None, chunk: int | None = None, records: Sequence[SendRecord] = ()
) -> Batch:
    """:func:`events_process`, but an error that is not the database's dead-letters the event that causes it.

    When a batch raises, ``records`` are written on their own, and the events
    are taken again one at a time: those
    before the culprit are processed, the culprit is dead-lettered with the
    error and its traceback, and the returned batch is that of the events
    processed. ``DatabaseError`` propagates (the task retries it).
    """
    try:
        return events_process(limit=limit, chunk=chunk, records=records)
    except DatabaseError:
        raise
    except Exception:
        logger.exception("A batch of events failed; retrying them one at a time to find the cause")
    records_write(records)
    merged = Batch()
    for _ in range(limit or int(notiflow_settings.EVENT_BATCH_SIZE)):
        try:
            one = events_process(limit=1, chunk=chunk)
        except DatabaseError:
            raise
        except Exception as exc:
            culprit = events_pending().values_list("pk", flat=True).first()
            if culprit is None:
                raise
            with transaction.atomic():
                dead_letter_record(
                    kind=DeadLetter.Kind.STEP,
                    task=DRAIN_TASK,
                    args=[str(culprit)],
                    exception=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                    event_id=culprit,
                )
            merged.dead_lettered.append(str(culprit))
            merged.more = True  # the events after the culprit wait for the next batch
            break
        if not one:
            break
        _merge(merged, one)
    return merged


def _merge(into: Batch, other: Batch) -> None:
    into.more = other.more
    into.events += other.events
    into.notifications += other.notifications
    for method, messages in other.inline.items():
        into.inline.setdefault(method, []).extend(messages)
    for method, ids in other.queued.items():
        into.queued.setdefault(method, []).extend(ids)
    into.digest.extend(other.digest)
    into.dead_lettered.extend(other.dead_lettered)


def inline_send(*, batch: Batch, task_id: str = "", records: list[SendRecord] | None = None) -> dict[str, list[int]]:
    """Send the batch's inline deliveries (the WebSocket pushes) right after its commit; record the results.

    Sent deliveries are recorded ``sent``, skipped ones (a push to a user
    with no open socket) ``skipped`` (:class:`pipeline.storing.SendRecord`).
    Given a ``records`` list, the records are appended to it, for the
    caller to write with its next batch (``events_process(records=...)``:
    no statement or commit of their own; the drain does this) or with
    :func:`pipeline.storing.records_write`. Otherwise they are written here,
    one ``UPDATE`` per outcome, each a statement of its own whose commit
    does not wait for the WAL flush on PostgreSQL (``unflushed``). Either
    way a record lost (a crash before it is written, a server crash before
    its flush) leaves its delivery ``queued``: the recovery sweep pushes it
    again, which a socket that already has that cursor drops. The batch's
    own commit (events taken, notifications stored) always waits for its
    flush; SQLite in WAL mode with ``synchronous=NORMAL`` does not flush at
    commit anyway. A
    failed one is recorded as :func:`pipeline.services.delivery_record`
    records any attempt (``retrying``, to be queued again by the caller, or
    dead-lettered), at once. Returns ``{method: [delivery id to queue for a retry]}``. Call it outside a
    transaction (as the drain does, after the batch's commit): inside one, its records wait for that
    transaction's commit.
    """
    retry: dict[str, list[int]] = {}
    now = timezone.now()
    recorded: list[SendRecord] = [] if records is None else records
    for method, pending in batch.inline.items():
        backend = methods.get(method)
        reachable = backend.reachable([p.recipient_id for p in pending])
        if reachable is not None:
            skip = Delivery.Status.SKIPPED
            reason = backend.unreachable_reason
            recorded += [
                SendRecord(p.delivery_id, p.tid, skip, reason, now) for p in pending if p.recipient_id not in reachable
            ]
            pending = [p for p in pending if p.recipient_id in reachable]
        messages = [p.build() for p in pending]
        try:
            results = list(backend.send(messages)) if messages else []
        except Exception:
            logger.exception("The %s method raised on a batch of %d; queueing it", method, len(messages))
            retry[method] = [m.delivery_id for m in messages if m.delivery_id is not None]
            continue
        missing = DeliveryResult.failed(f"the {method} method returned no result for this message")
        results += [missing] * (len(messages) - len(results))
        for p, r in zip(pending, results, strict=False):
            if r.outcome is Outcome.SENT:
                recorded.append(SendRecord(p.delivery_id, p.tid, Delivery.Status.SENT, "", now))
            elif r.outcome is Outcome.SKIPPED:
                recorded.append(SendRecord(p.delivery_id, p.tid, Delivery.Status.SKIPPED, r.reason, now))
        done = (Outcome.SENT, Outcome.SKIPPED)
        failed = {m.delivery_id: r for m, r in zip(messages, results, strict=False) if r.outcome not in done}
        if not failed:
            continue
        policy = methods.retry_policy(method)
        for delivery in Delivery.objects.select_related("notification").filter(pk__in=list(failed)):
            if delivery_record(
                delivery=delivery,
                result=failed[delivery.pk],
                final=False,
                retry_in=float(policy["BACKOFF_BASE"]),
                task_id=task_id,
            ):
                retry.setdefault(method, []).append(delivery.pk)
    if records is None:
        records_write(recorded, unflushed=True)
    return retry
