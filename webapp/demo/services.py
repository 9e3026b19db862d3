"""Writes of the demo inbox page: demo events that notify the signed-in user, and a critique they post.

Each goes through :mod:`webapp.gallery.services`, so it is the same path the
gallery app takes: a row and its event in one transaction, published after
commit. The demo needs other users to act: the gallery seed's
(:data:`webapp.gallery.seed.USERNAMES`, ``python manage.py gallery_seed``).
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.demo.selectors import demo_users
from webapp.gallery.models import Artwork
from webapp.gallery.services import announcement_publish, critique_create, like_create

DemoEventKind = Literal["critique", "like", "announcement"]
DEMO_EVENT_KINDS: tuple[DemoEventKind, ...] = ("critique", "like", "announcement")

CRITIQUES = (
    "The light on the water carries the whole piece.",
    "I would crop the left third: the eye wanders off the frame.",
    "Lovely palette; the shadows could be cooler.",
    "The composition is bold. The horizon sits a little too central for me.",
)
ANNOUNCEMENTS = (
    "The gallery closes for maintenance tonight at 22:00 UTC.",
    "New this week: critiques can be marked helpful.",
    "The spring open call is now accepting submissions.",
)


def _others(user: Any) -> list[Any]:
    """The active demo users other than ``user``, by name."""
    return list(demo_users().exclude(pk=user.pk))


def _own_artwork(user: Any) -> Artwork:
    """``user``'s first artwork, created ("<name>'s sketchbook") when they have none."""
    artwork = Artwork.objects.filter(owner=user).order_by("pk").first()
    return artwork or Artwork.objects.create(owner=user, title=f"{user.get_username()}'s sketchbook")


def demo_event_trigger(*, user: Any, kind: str) -> uuid.UUID:
    """Make something happen that notifies ``user``; return the event id.

    ``critique``: another demo user critiques one of ``user``'s artworks.
    ``like``: another demo user, who has not yet, likes one of them (a new
    artwork is started when every other user has liked them all).
    ``announcement``: ``admin`` (else another demo user) announces to everyone.

    Raises ``ValidationError`` for an unknown ``kind``, or when there is no
    other demo user to act (the gallery seed has not run).
    """
    if kind not in DEMO_EVENT_KINDS:
        raise ValidationError(f"Unknown demo event {kind!r}; expected one of {', '.join(DEMO_EVENT_KINDS)}.")
    others = _others(user)
    if not others:
        raise ValidationError("No other demo users: run `python manage.py gallery_seed`.")
    if kind == "announcement":
        author = get_user_model().objects.filter(username="admin").first() or random.choice(others)  # noqa: S311
        return announcement_publish(author=author, text=random.choice(ANNOUNCEMENTS))  # noqa: S311
    with transaction.atomic():
        if kind == "critique":
            _, event_id = critique_create(
                author=random.choice(others),  # noqa: S311 - a demo's variety, not a secret
                artwork=_own_artwork(user),
                text=random.choice(CRITIQUES),  # noqa: S311
            )
            return event_id
        for artwork in Artwork.objects.filter(owner=user).order_by("pk"):
            likers = set(artwork.likes.values_list("user_id", flat=True))
            liker = next((other for other in others if other.pk not in likers), None)
            if liker is not None:
                return like_create(user=liker, artwork=artwork)[1]
        count = Artwork.objects.filter(owner=user).count()
        artwork = Artwork.objects.create(owner=user, title=f"Study No. {count + 1}")
        return like_create(user=others[0], artwork=artwork)[1]


def demo_critique_post(*, author: Any, artwork_id: int, text: str) -> uuid.UUID:
    """``author`` critiques someone else's artwork; its owner is notified. Returns the event id.

    Raises ``ValidationError`` when the artwork does not exist, is ``author``'s
    own (nobody would be notified), or ``text`` is empty or over 2,000 characters.
    """
    text = text.strip()
    if not text or len(text) > 2000:
        raise ValidationError("A critique needs 1 to 2,000 characters of text.")
    artwork = Artwork.objects.filter(pk=artwork_id).exclude(owner=author).first()
    if artwork is None:
        raise ValidationError("No such artwork by another user.")
    _, event_id = critique_create(author=author, artwork=artwork, text=text)
    return event_id
