"""Whether the credentials open sockets were authenticated with still hold.

A socket is authenticated once, at its handshake; the user may be
deactivated later, or sign out of the session the socket was opened with
(through its cookie, or through a ticket issued to that session). The relay
asks :func:`sockets_revoked` every ``WEBSOCKET["REVALIDATE"]`` seconds about
all its sockets at once and closes those it names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user, get_user_model

#: User ids per ``IN (...)`` query.
_CHUNK = 1000


@dataclass(frozen=True)
class Revoked:
    """Why a socket must close: the WebSocket close ``code``, an ``error`` code and a ``detail`` for the client."""

    code: int
    error: str
    detail: str


INACTIVE = Revoked(4403, "account_inactive", "This account has been deactivated.")
SIGNED_OUT = Revoked(4401, "signed_out", "The session this socket was opened with has signed out; sign in again.")


def _session_user_id(session_key: str) -> int | None:
    """The user a session is signed in as now, by Django's own rules (the session exists, names a user of an
    authentication backend, that user can authenticate, and the session's auth hash still matches: a
    password change signs other sessions out); ``None`` if it is signed out."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]  # get_user reads .session only
    return int(user.pk) if user.is_authenticated else None


def sockets_revoked(sockets: Iterable[tuple[int, str | None]]) -> dict[tuple[int, str | None], Revoked]:
    """Of ``(user_id, session_key or None)`` pairs, those whose credentials no longer hold, and why.

    A user who is gone or inactive: :data:`INACTIVE`; a session key whose
    session no longer signs in that user: :data:`SIGNED_OUT`. One query per
    1,000 users, and one session load per distinct session key. Blocking
    (database, session store): call it from a thread in async code.
    """
    pairs = set(sockets)
    user_ids = sorted({user_id for user_id, _ in pairs})
    active: set[int] = set()
    users = get_user_model()._default_manager
    for start in range(0, len(user_ids), _CHUNK):
        chunk = user_ids[start : start + _CHUNK]
        active.update(users.filter(pk__in=chunk, is_active=True).values_list("pk", flat=True))
    sessions = {key: _session_user_id(key) for key in {key for user_id, key in pairs if key and user_id in active}}
    revoked: dict[tuple[int, str | None], Revoked] = {}
    for user_id, key in pairs:
        if user_id not in active:
            revoked[(user_id, key)] = INACTIVE
        elif key and sessions[key] != user_id:
            revoked[(user_id, key)] = SIGNED_OUT
    return revoked
