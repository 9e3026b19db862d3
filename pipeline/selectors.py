"""Reads: a user's notifications and unread count, for the REST API and the relay."""

from __future__ import annotations

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
    return int(Inbox.objects.filter(user_id=user_id).values_list("last_cursor", flat=True).first() or 0)


def notifications_after(*, user_id: int, cursor: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """``user_id``'s notifications with a cursor above ``cursor``, oldest first, as payloads; and whether that is all.

    Returns ``(payloads, complete)``: at most ``limit`` payloads, and
    ``complete`` false when more than ``limit`` were missed (the client must
    then refetch through the REST API). Cursors are per recipient and
    assigned under the recipient's inbox row lock, in the transaction that
    inserts the notification: a cursor is visible only once every lower one
    is, so "above ``cursor``" never skips one that commits late.
    """
    rows = list(Notification.objects.filter(recipient_id=user_id, cursor__gt=cursor).order_by("cursor")[: limit + 1])
    return [notification_payload(n) for n in rows[:limit]], len(rows) <= limit
