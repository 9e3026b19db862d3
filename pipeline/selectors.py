"""Reads: a user's notifications and unread count, for the REST API and the relay."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from pipeline.models import Notification

UNREAD = (Notification.State.UNSEEN, Notification.State.SEEN)


def notifications_for_user(*, user_id: int) -> QuerySet[Notification]:
    """Every notification of ``user_id``, newest (highest cursor) first."""
    return Notification.objects.filter(recipient_id=user_id).order_by("-cursor")


def notifications_unread_count(*, user_id: int) -> int:
    return Notification.objects.filter(recipient_id=user_id, state__in=UNREAD).count()


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


def notifications_recent_unread(*, user_id: int, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` most recent unread notifications of ``user_id`` as payloads, newest first."""
    rows = notifications_for_user(user_id=user_id).filter(state__in=UNREAD)[:limit]
    return [notification_payload(n) for n in rows]
