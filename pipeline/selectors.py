"""Reads: a user's notifications and unread count, for the REST API and the relay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet

from pipeline.models import Inbox, Notification

UNREAD = (Notification.State.UNSEEN, Notification.State.SEEN)


def notifications_for_user(*, user_id: int) -> QuerySet[Notification]:
    """Every notification of ``user_id``, newest (highest cursor) first."""
    return Notification.objects.filter(recipient_id=user_id).order_by("-cursor")


def notifications_unread_count(*, user_id: int, up_to: int | None = None) -> int:
    """How many of ``user_id``'s notifications are unread (unseen or seen), those up to cursor ``up_to`` if given."""
    rows = Notification.objects.filter(recipient_id=user_id, state__in=UNREAD)
    return (rows if up_to is None else rows.filter(cursor__lte=up_to)).count()


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The JSON shape of a notification, shared by the REST API and WebSocket pushes."""
    return {
        "id": notification.pk,
        "event_id": str(notification.event_id),
        "cursor": notification.cursor,
        "event_type": notification.event_type,
        "category": notification.category,
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
        "state": notification.state,
        "occurred_at": notification.occurred_at.isoformat(),
        "created_at": notification.created_at.isoformat(),
    }


def notifications_recent_unread(*, user_id: int, limit: int, up_to: int | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recent unread notifications of ``user_id`` (up to cursor ``up_to``), newest first."""
    rows = notifications_for_user(user_id=user_id).filter(state__in=UNREAD)
    if up_to is not None:
        rows = rows.filter(cursor__lte=up_to)
    return [notification_payload(n) for n in rows[:limit]]


def inbox_cursor(*, user_id: int) -> int:
    """The cursor of ``user_id``'s newest notification (0 when there is none)."""
    return inbox_position(user_id=user_id)[0]


def inbox_position(*, user_id: int) -> tuple[int, int]:
    """``(last_cursor, last_push_seq)`` of ``user_id``: the newest notification's cursor and how many were pushed
    to sockets (``(0, 0)`` when there is none). Both advance in one statement, so they always agree."""
    row = Inbox.objects.filter(user_id=user_id).values_list("last_cursor", "last_push_seq").first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def inboxes_push_seq(*, user_ids: Sequence[int]) -> dict[int, int]:
    """``{user_id: last_push_seq}`` of those of ``user_ids`` that have an inbox (one query)."""
    rows = Inbox.objects.filter(user_id__in=list(user_ids)).values_list("user_id", "last_push_seq")
    return {int(uid): int(seq) for uid, seq in rows}


def notifications_streamed_after(
    *, user_id: int, cursor: int, limit: int, below: int | None = None, numbers: Sequence[int] | None = None
) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """``user_id``'s notifications pushed to sockets (``push_seq`` set) with a cursor above ``cursor`` (and below
    ``below``, with a ``push_seq`` among ``numbers``, if given), oldest first, as ``(push_seq, payload)``; and
    whether that is all (``False`` when more than ``limit``). One query on the ``(recipient, cursor)`` index."""
    rows = Notification.objects.filter(recipient_id=user_id, cursor__gt=cursor, push_seq__isnull=False)
    if below is not None:
        rows = rows.filter(cursor__lt=below)
    if numbers is not None:
        rows = rows.filter(push_seq__in=list(numbers))
    found = list(rows.order_by("cursor")[: limit + 1])
    return [(int(n.push_seq or 0), notification_payload(n)) for n in found[:limit]], len(found) <= limit


def notifications_after(
    *, user_id: int, cursor: int, limit: int, up_to: int | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """``user_id``'s notifications with a cursor above ``cursor`` (and at most ``up_to``, if given), oldest first,
    as payloads; and whether that is all.

    Returns ``(payloads, complete)``: at most ``limit`` payloads, and
    ``complete`` false when more than ``limit`` were missed (the client must
    then refetch through the REST API). Cursors are per recipient and
    assigned under the recipient's inbox row lock, in the transaction that
    inserts the notification: a cursor is visible only once every lower one
    is, so "above ``cursor``" never skips one that commits late.
    """
    rows = Notification.objects.filter(recipient_id=user_id, cursor__gt=cursor)
    if up_to is not None:
        rows = rows.filter(cursor__lte=up_to)
    found = list(rows.order_by("cursor")[: limit + 1])
    return [notification_payload(n) for n in found[:limit]], len(found) <= limit
