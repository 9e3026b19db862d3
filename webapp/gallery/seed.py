"""Demo users, roles, artworks and preferences (idempotent)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from pipeline.models import Preference
from webapp.gallery.models import Artwork

USERNAMES = ("alice", "bob", "carol", "dave", "erin", "frank")
MODERATORS = "moderators"


def demo_seed(*, password: str = "demo") -> dict[str, Any]:  # noqa: S107 - demo accounts on a dev machine
    """Create the demo world; returns ``{"users": {name: user}, "artworks": {owner name: artwork}}``.

    carol is a moderator; bob gets likes by email in an hourly digest; dave
    has turned email off for critiques.
    """
    User = get_user_model()
    users = {}
    for name in USERNAMES:
        user, created = User.objects.get_or_create(username=name, defaults={"email": f"{name}@example.com"})
        if created:
            user.set_password(password)
            user.save()
        users[name] = user
    admin, created = User.objects.get_or_create(
        username="admin", defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
    )
    if created:
        admin.set_password("admin")
        admin.save()
    users["admin"] = admin
    moderators, _ = Group.objects.get_or_create(name=MODERATORS)
    users["carol"].groups.add(moderators)
    artworks = {
        "bob": Artwork.objects.get_or_create(owner=users["bob"], title="Blue Heron at Dusk")[0],
        "dave": Artwork.objects.get_or_create(owner=users["dave"], title="Night Market")[0],
    }
    Preference.objects.update_or_create(
        user=users["bob"], category="likes", event_type="", method="email", defaults={"setting": "hourly"}
    )
    Preference.objects.update_or_create(
        user=users["dave"], category="critiques", event_type="", method="email", defaults={"setting": "off"}
    )
    return {"users": users, "artworks": artworks}
