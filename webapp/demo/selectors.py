"""Reads of the demo inbox page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from pipeline.selectors import notification_payload, notifications_for_user, notifications_unread_count
from webapp.gallery.models import Artwork
from webapp.gallery.seed import USERNAMES


def demo_users() -> QuerySet[Any]:
    """The active demo users one may sign in as (the gallery seed's; never ``admin``), by name."""
    return get_user_model().objects.filter(username__in=USERNAMES, is_active=True).order_by("username")


def demo_artworks_to_critique(*, user: Any) -> QuerySet[Artwork]:
    """Artworks by other users, newest first, with their owners."""
    return Artwork.objects.exclude(owner=user).select_related("owner").order_by("-pk")


def demo_inbox(*, user_id: int, limit: int = 20) -> dict[str, Any]:
    """What the page renders and hands to the client: ``{"notifications", "unread_count", "cursor"}``.

    ``notifications``: the ``limit`` newest as API payloads, newest first;
    ``cursor``: the newest one's (0 without any), where the client resumes.
    """
    notifications = [notification_payload(n) for n in notifications_for_user(user_id=user_id)[:limit]]
    return {
        "notifications": notifications,
        "unread_count": notifications_unread_count(user_id=user_id),
        "cursor": notifications[0]["cursor"] if notifications else 0,
    }
