"""Writes: persisting notifications and deliveries, recording delivery
results, and read state. Celery tasks and views call these; they hold the logic.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from delivery.base import DeliveryResult, Message, Outcome, Recipient
from delivery.templates import text_render as delivery_text_render
from delivery.websocket import read_state_push
from pipeline.catalogue import catalogue
from pipeline.conf import notiflow_settings
from pipeline.deadletters import dead_letter_record
from pipeline.exceptions import ClaimLost
from pipeline.models import DeadLetter, Delivery, Event, Notification
from pipeline.selectors import UNREAD, notification_payload, notifications_unread_count


def event_context(*, event: Event, recipient: Any) -> dict[str, Any]:
    """The JSON-safe template context of one event for one recipient (a user)."""
    actor = event.actor
    return _context(
        event_id=event.id,
        event_type=event.event_type,
        data=event.data,
        actor=(actor.pk, actor.get_username()) if actor else None,
        recipient=(recipient.pk, recipient.get_username()),
        target=(event.target_type, event.target_id),
    )


def _context(
    *,
    event_id: Any,
    event_type: str,
    data: Any,
    actor: tuple[int, str] | None,
    recipient: tuple[int, str],
    target: tuple[str, str],
) -> dict[str, Any]:
    """:func:`event_context` from plain values: ``actor`` and ``recipient`` as ``(id, username)``, ``target``
    as ``(type, id)`` (no target when its type is empty)."""
    return {
        "event_id": str(event_id),
        "event_type": event_type,
        "data": data,
        "actor": {"id": actor[0], "username": actor[1]} if actor else None,
        "recipient": {"id": recipient[0], "username": recipient[1]},
        "target": {"type": target[0], "id": target[1]} if target[0] else None,
    }


class ReadWatch(dict[str, Any]):
    """A dict in a template context that notes whether the template read it (``was_read``).

    Any lookup, iteration, length, truth test, string conversion or method
    call counts as a read. The pipeline renders an event's texts with the
    recipient in one of these: if the template never read it, the texts are
    the same for every recipient of the event (the rest of the context is
    the event's), so they are rendered once, not once per recipient.
    """

    was_read = False

    def _read(self) -> None:
        dict.__setattr__(self, "was_read", True)

    def __getattribute__(self, name: str) -> Any:
        if name not in ("_read", "was_read", "__class__", "__dict__"):
            object.__getattribute__(self, "_read")()
        return super().__getattribute__(name)

    def __getitem__(self, key: str) -> Any:
        self._read()
        return super().__getitem__(key)

    def __iter__(self) -> Any:
        self._read()
        return super().__iter__()

    def __len__(self) -> int:
        self._read()
        return super().__len__()

    def __contains__(self, key: object) -> bool:
        self._read()
        return super().__contains__(key)

    def __str__(self) -> str:
        self._read()
        return super().__str__()

    def __repr__(self) -> str:
        self._read()
        return super().__repr__()

    def __eq__(self, other: object) -> bool:
        self._read()
        return super().__eq__(other)

    __hash__ = None


def text_render(template_name: str, context: Mapping[str, Any]) -> str:
    """Render a plain-text template (no HTML escaping) with ``context``, stripped; raises template errors."""
    return delivery_text_render(template_name, context).strip()


def recipient_of(user: Any) -> Recipient:
    """The :class:`~delivery.base.Recipient` of a user: id, username (``get_username()``), email (``""`` if none)."""
    return Recipient(id=user.pk, username=user.get_username(), email=user.email or "")


def message_of(*, delivery_id: int, notification: Any, recipient: Recipient, context: dict[str, Any]) -> Message:
    """The frozen message of one delivery of ``notification`` (a :class:`NotificationFields`, or a
    :class:`~pipeline.models.Notification`: what :func:`~pipeline.selectors.notification_payload` reads) to
    ``recipient``, with the template ``context`` (:func:`event_context`)."""
    spec = catalogue.get(notification.event_type)
    return Message(
        delivery_id=delivery_id,
        notification_id=notification.pk,
        event_type=notification.event_type,
        category=notification.category,
        recipient=recipient,
        title=notification.title,
        body=notification.body,
        template_dir=f"notiflow/events/{spec.template}",
        context=context,
        cursor=notification.cursor,
        payload=notification_payload(notification),
        key=f"delivery-{delivery_id}",
        push_seq=notification.push_seq,
    )


SENDABLE = (Delivery.Status.QUEUED, Delivery.Status.RETRYING)


class NotificationFields(NamedTuple):
    """The fields of a notification that its message reads, by the names
    :func:`~pipeline.selectors.notification_payload` reads: a model instance costs more to build (a tenth of the
    drain's Python time went into building ``Notification`` instances for its pushes, 2026-12-07)."""

    pk: int
    event_id: Any
    event_type: str
    category: str
    title: str
    body: str
    data: Any
    cursor: int
    push_seq: int | None
    state: str
    occurred_at: datetime
    created_at: datetime


#: The columns of :class:`NotificationFields`, from the delivery.
_NOTIFIED_COLUMNS = ["notification_id", *(f"notification__{name}" for name in NotificationFields._fields[1:])]


def _claimed_rows(rows: QuerySet[Delivery]) -> list[tuple[Delivery, Message]]:
    """Each delivery of ``rows`` in ``pk`` order with its message, read with one query of plain values.

    ``select_related`` of the notification, its recipient, its event and the
    event's actor built five model instances per delivery, most of the
    claim's cost: 0.068-0.101 ms per delivery against 0.022 for the values
    (100 email deliveries, best of five, 2026-12-07).
    """
    user = get_user_model()
    delivery_names = [f.attname for f in Delivery._meta.concrete_fields]
    person = ("notification__recipient_id", f"notification__recipient__{user.USERNAME_FIELD}")
    actor = ("notification__event__actor_id", f"notification__event__actor__{user.USERNAME_FIELD}")
    event = ("notification__event__event_type", "notification__event__data")
    target = ("notification__event__target_type", "notification__event__target_id")
    email = ("notification__recipient__email",)
    names = [*delivery_names, *_NOTIFIED_COLUMNS, *person, *actor, *event, *target, *email]
    n, m = len(delivery_names), len(_NOTIFIED_COLUMNS)
    claimed = []
    for row in rows.order_by("pk").values_list(*names):
        delivery = Delivery.from_db(rows.db, delivery_names, row[:n])
        notified = NotificationFields(*row[n : n + m])
        recipient_id, recipient_name, actor_id, actor_name, event_type, data, target_type, target_id, address = row[
            n + m :
        ]
        message = message_of(
            delivery_id=delivery.pk,
            notification=notified,
            recipient=Recipient(id=recipient_id, username=recipient_name, email=address or ""),
            context=_context(
                event_id=notified.event_id,
                event_type=event_type,
                data=data,
                actor=(actor_id, actor_name) if actor_id is not None else None,
                recipient=(recipient_id, recipient_name),
                target=(target_type, target_id),
            ),
        )
        claimed.append((delivery, message))
    return claimed


def _unsent(*, method: str, delivery_ids: Sequence[int]) -> QuerySet[Delivery]:
    """The status check before every send: a delivery already sent, skipped or failed is never sent again."""
    return Delivery.objects.filter(pk__in=delivery_ids, method=method, status__in=SENDABLE)


def claimable(*, claimer: str = "") -> Q:
    """Rows (deliveries, digest windows) with no live claim, or claimed by ``claimer`` already.

    The lease condition shared by every claim: ``claimed_until`` unset or
    past on the database's clock (see :func:`lease_until`).
    """
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=Now())
    return free | Q(claimed_by=claimer) if claimer else free


def lease_until(seconds: float) -> ExpressionWrapper:
    """The end of a claim made now for ``seconds``, on the database's clock (``STATEMENT_TIMESTAMP()`` on
    PostgreSQL, ``'now'`` on SQLite), for ``claimed_until``. Leases are set and compared by the one clock every
    worker, beat and sweep share: hosts whose clocks disagree by more than the slack of a lease never see a
    live claim as lapsed, nor a lapsed one as live."""
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def deliveries_pending(*, method: str, delivery_ids: Sequence[int]) -> list[Delivery]:
    """The deliveries among ``delivery_ids`` that still need sending by ``method``, oldest first."""
    # with the notification, which a digest lists and a dead letter names (its event and recipient)
    return list(_unsent(method=method, delivery_ids=delivery_ids).select_related("notification").order_by("pk"))


def deliveries_claim(
    *, method: str, delivery_ids: Sequence[int], claimer: str, lease_seconds: float | None = None
) -> list[tuple[Delivery, Message]]:
    """Claim the deliveries among ``delivery_ids`` that still need sending by ``method``; return each claimed
    delivery with its frozen message, in ``pk`` order (one ``UPDATE``, one ``SELECT``).

    The status check before every send, made atomic: one conditional UPDATE
    gives each unsent delivery to one claimer for ``lease_seconds``, so two
    copies of a task (a redelivery, a replay) never send the same delivery
    at once. A claim lapses after the lease, and the same ``claimer`` (a
    redelivered task keeps its id) may take its own claim back at once.
    ``lease_seconds`` defaults to ``NOTIFLOW["DELIVERY_LEASE"]``.
    """
    if lease_seconds is None:
        lease_seconds = float(notiflow_settings.DELIVERY_LEASE)
    unsent = _unsent(method=method, delivery_ids=delivery_ids)
    unsent.filter(claimable(claimer=claimer)).update(claimed_by=claimer, claimed_until=lease_until(lease_seconds))
    return _claimed_rows(unsent.filter(claimed_by=claimer))


def retry_countdown(*, attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): "full jitter" exponential backoff,
    ``uniform(0, min(cap, base * 2**attempt))``, as in AWS's "Exponential Backoff And Jitter" (2015)."""
    return random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - jitter, not cryptography


def deliveries_claim_renew(*, delivery_ids: Sequence[int], claimer: str, lease_seconds: float | None = None) -> int:
    """Extend ``claimer``'s claim on those of ``delivery_ids`` it still holds; return how many it holds.

    A send task renews its claim well before it lapses (every third of the
    lease), so a batch that outlasts ``DELIVERY_LEASE`` (a slow provider) is
    never taken over by the recovery sweep while it is being sent.
    """
    if lease_seconds is None:
        lease_seconds = float(notiflow_settings.DELIVERY_LEASE)
    return Delivery.objects.filter(pk__in=list(delivery_ids), claimed_by=claimer, status__in=SENDABLE).update(
        claimed_until=lease_until(lease_seconds)
    )


def deliveries_claim_release(*, delivery_ids: Sequence[int], claimer: str) -> int:
    """Give up ``claimer``'s claim on those of ``delivery_ids`` it still holds unsent (a batch that stopped
    early), so the recovery sweep can queue them again without waiting for the lease; return how many."""
    return Delivery.objects.filter(pk__in=list(delivery_ids), claimed_by=claimer, status__in=SENDABLE).update(
        claimed_by="", claimed_until=None
    )


def delivery_record(
    *, delivery: Delivery, result: DeliveryResult, final: bool, retry_in: float, task_id: str = "", traceback: str = ""
) -> bool:
    """Store the outcome of one attempt at ``delivery`` and release its claim; ``True`` if it is to be retried.

    Each attempt counts in ``attempts``. A skipped one (nothing to send)
    becomes ``skipped`` with the method's reason. A transient failure becomes
    ``retrying``, due ``retry_in`` seconds from now (``next_attempt_at``),
    unless ``final`` (the method's attempts are used up): then ``dead``. A
    permanent failure becomes ``failed``. Both get a
    :class:`~pipeline.models.DeadLetter` (``traceback`` if there was one).
    Called per message, as soon as its result is known: one ``UPDATE``
    (and a dead letter in the same transaction when there is one).

    The ``UPDATE`` holds only while the delivery is still claimed as it was
    loaded (``claimed_by``): raises :class:`~pipeline.exceptions.ClaimLost`,
    recording nothing, if another task took it over meanwhile.
    """
    now = timezone.now()
    held = delivery.claimed_by
    delivery.attempts += 1
    delivery.claimed_by, delivery.claimed_until, delivery.next_attempt_at = "", None, None
    retry = False
    if result.outcome is Outcome.SENT:
        delivery.status, delivery.sent_at, delivery.last_error = Delivery.Status.SENT, now, ""
    elif result.outcome is Outcome.SKIPPED:
        delivery.status, delivery.reason, delivery.last_error = Delivery.Status.SKIPPED, result.reason[:255], ""
    elif result.outcome is Outcome.RETRY and not final:
        delivery.status, delivery.last_error = Delivery.Status.RETRYING, result.reason
        delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        retry = True
    elif result.outcome is Outcome.RETRY:
        delivery.status, delivery.last_error = Delivery.Status.DEAD, result.reason
        delivery.reason = f"gave up after {delivery.attempts} attempts"
    else:
        delivery.status, delivery.last_error, delivery.reason = (
            Delivery.Status.FAILED,
            result.reason,
            "permanent failure",
        )
    delivery.updated_at = now
    names = ["attempts", "status", "sent_at", "last_error", "reason", "next_attempt_at", "claimed_by", "claimed_until"]
    fields = {name: getattr(delivery, name) for name in [*names, "updated_at"]}
    row = Delivery.objects.filter(pk=delivery.pk, claimed_by=held)
    if delivery.status not in Delivery.DEAD_LETTERED:
        if not row.update(**fields):
            raise ClaimLost(f"delivery {delivery.pk} is no longer claimed by {held!r}; its outcome is not recorded")
        return retry
    with transaction.atomic():
        if not row.update(**fields):
            raise ClaimLost(f"delivery {delivery.pk} is no longer claimed by {held!r}; its outcome is not recorded")
        dead_letter_record(
            kind=DeadLetter.Kind.DELIVERY,
            task="notiflow.deliveries_send",
            task_id=task_id,
            args=[delivery.method, [delivery.pk]],
            exception=f"{delivery.reason}: {result.reason}",
            traceback=traceback,
            attempts=delivery.attempts,
            event_id=delivery.notification.event_id,
            recipient_id=delivery.notification.recipient_id,
            method=delivery.method,
            delivery_id=delivery.pk,
        )
    return retry


@dataclass(frozen=True)
class ReadStateChange:
    """What one mark changed: ``ids`` (``None`` for "all"), the new ``state`` and the user's new ``unread_count``."""

    user_id: int
    ids: list[int] | None
    state: str
    changed: int
    unread_count: int

    def frame(self) -> dict[str, Any]:
        """The ``read_state`` frame every socket of the user receives."""
        return {
            "type": "read_state",
            "ids": self.ids,
            "all": self.ids is None,
            "state": self.state,
            "unread_count": self.unread_count,
        }


#: The states a notification may move from when marked (read or seen); never backwards.
_MARKABLE = {
    Notification.State.READ: UNREAD,
    Notification.State.SEEN: (Notification.State.UNSEEN,),
}


def notifications_mark(*, user_id: int, ids: Sequence[int] | None, state: str) -> ReadStateChange:
    """Mark ``user_id``'s notifications ``ids`` (all of them when ``None``) ``"read"`` or ``"seen"``.

    Only the user's own notifications change: another user's ids are
    ignored, whatever the caller sends. A notification never moves back
    (read stays read when marked seen). When anything changed, every socket
    of the user is sent a ``read_state`` frame after the commit (through
    :func:`delivery.websocket.read_state_push`), whichever tab, device or API
    call made the change. Raises :class:`ValueError` for another ``state``.
    """
    target = Notification.State(state)
    if target not in _MARKABLE:
        raise ValueError(f"a notification can be marked read or seen, not {state!r}")
    rows = Notification.objects.filter(recipient_id=user_id, state__in=_MARKABLE[target])
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    stamp = {"read_at": timezone.now()} if target is Notification.State.READ else {"seen_at": timezone.now()}
    with transaction.atomic():
        changed_ids = None if ids is None else list(rows.order_by("pk").values_list("pk", flat=True))
        changed = (rows.filter(pk__in=changed_ids) if changed_ids is not None else rows).update(state=target, **stamp)
        change = ReadStateChange(
            user_id=user_id,
            ids=changed_ids,
            state=target.value,
            changed=changed,
            unread_count=notifications_unread_count(user_id=user_id),
        )
        if changed:
            transaction.on_commit(lambda: read_state_push(user_id=user_id, frame=change.frame()))
    return change


def notification_mark_read(*, user_id: int, notification_id: int) -> bool:
    """Mark one of ``user_id``'s notifications read; ``False`` if it is not theirs or does not exist."""
    notifications_mark(user_id=user_id, ids=[notification_id], state=Notification.State.READ)
    return Notification.objects.filter(pk=notification_id, recipient_id=user_id).exists()


def notifications_mark_all_read(*, user_id: int) -> int:
    """Mark every unread notification of ``user_id`` read; return how many changed."""
    return notifications_mark(user_id=user_id, ids=None, state=Notification.State.READ).changed
