"""The demo app's writes. Each one saves its row and emits its event in one transaction."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from pipeline import Audience, emit_event
from webapp.gallery.models import Artwork, Critique, Like


def critique_create(*, author: Any, artwork: Artwork, text: str) -> tuple[Critique, uuid.UUID]:
    """Post a critique; the artwork's owner is notified (``critique.created``)."""
    with transaction.atomic():
        critique = Critique.objects.create(artwork=artwork, author=author, text=text)
        event_id = emit_event(
            event_type="critique.created",
            actor=author,
            audience=Audience.users(artwork.owner_id),
            target=critique,
            data={"artwork_id": artwork.pk, "artwork_title": artwork.title, "excerpt": text[:140]},
        )
    return critique, event_id


def critique_mark_helpful(*, critique: Critique, by: Any) -> uuid.UUID:
    """Mark a critique helpful; its author is notified (``critique.helpful``)."""
    with transaction.atomic():
        critique.helpful_by = by
        critique.save(update_fields=["helpful_by"])
        return emit_event(
            event_type="critique.helpful",
            actor=by,
            audience=Audience.users(critique.author_id),
            target=critique,
            data={"artwork_title": critique.artwork.title},
        )


def like_create(*, user: Any, artwork: Artwork) -> tuple[Like, uuid.UUID]:
    """Like an artwork; its owner is notified (``like.created``)."""
    with transaction.atomic():
        like = Like.objects.create(artwork=artwork, user=user)
        event_id = emit_event(
            event_type="like.created",
            actor=user,
            audience=Audience.users(artwork.owner_id),
            target=artwork,
            data={"artwork_id": artwork.pk, "artwork_title": artwork.title},
            idempotency_key=f"like:{like.pk}",
        )
    return like, event_id


def announcement_publish(*, author: Any, text: str, role: str | None = None) -> uuid.UUID:
    """Announce to the members of ``role``, or to everyone when ``role`` is ``None``."""
    return emit_event(
        event_type="announcement.posted",
        actor=author,
        audience=Audience.role(role) if role else Audience.everyone(),
        data={"text": text, "audience": role or "everyone"},
    )
