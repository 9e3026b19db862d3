"""One-time tickets: the recommended way for a browser to authenticate its WebSocket.

An authenticated ``POST /api/ws-ticket/`` returns a random ticket (32 bytes,
URL-safe base64) that is valid for ``NOTIFLOW["WEBSOCKET"]["TICKET_TTL"]``
seconds and for one handshake only. The browser offers it as the
subprotocol ``ticket.<ticket>`` (or ``?ticket=``); the relay redeems it with
Redis ``GETDEL``, so a ticket copied from an access log or replayed is
already spent. Only the ticket's SHA-256 is stored, under
``notiflow:ticket:<hex>``, with the user id, the user's token roles, the
expiry of the credential it was issued against (a socket opened with a
ticket closes when the JWT behind it would have expired) and, for a ticket
issued to a signed-in session, that session's key (the socket closes when
the session signs out).

Browsers cannot set an ``Authorization`` header on a WebSocket; a
short-lived, single-use credential is the usual answer (Slack's
``rtm.connect`` hands out a socket URL valid for 30 seconds, the figure
behind our default).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from functools import cache

import redis
from django.conf import settings

from pipeline.conf import notiflow_settings
from webapp.tokens import Identity

KEY_PREFIX = "notiflow:ticket:"


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def _key(ticket: str) -> str:
    return KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def ticket_issue(*, identity: Identity) -> tuple[str, int]:
    """Store a new single-use ticket for ``identity``; return ``(ticket, ttl_seconds)``.

    Raises :class:`redis.RedisError` if Redis cannot be reached.
    """
    ttl = int(notiflow_settings.WEBSOCKET["TICKET_TTL"])
    ticket = secrets.token_urlsafe(32)
    value = {
        "user_id": identity.user_id,
        "roles": list(identity.roles),
        "expires_at": identity.expires_at,
        "session_key": identity.session_key,
    }
    _redis().set(_key(ticket), json.dumps(value), ex=ttl)
    return ticket, ttl


def ticket_redeem(ticket: str) -> Identity | None:
    """The identity a ticket was issued for, spending it; ``None`` if unknown, expired or spent.

    Atomic (``GETDEL``): of two handshakes with one ticket, one gets it.
    Raises :class:`redis.RedisError` if Redis cannot be reached.
    """
    if not ticket or len(ticket) > 256:
        return None
    raw: bytes | None = _redis().getdel(_key(ticket))  # type: ignore[assignment]  # the sync client's result
    if raw is None:
        return None
    value = json.loads(raw)
    return Identity(
        user_id=int(value["user_id"]),
        roles=tuple(value["roles"]),
        expires_at=value["expires_at"],
        session_key=value.get("session_key"),
    )
