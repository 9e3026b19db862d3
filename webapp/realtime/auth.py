"""Authentication of WebSocket handshakes, and the origin check.

Credential sources, in the order they are tried (the first one present is
the one used; if it is invalid the socket is refused even when a later
source would have worked):

1. a **one-time ticket** (:mod:`webapp.realtime.tickets`), offered as the
   subprotocol ``ticket.<ticket>`` or as ``?ticket=``: the recommended way
   for browsers;
2. a JWT in the ``Sec-WebSocket-Protocol`` header: the client offers
   ``["notiflow", "jwt.<token>"]`` and the server answers ``notiflow``;
3. ``Authorization: Bearer <token>``, for clients that are not browsers;
4. ``?token=<token>``, kept for compatibility: the URL, token included, ends
   up in proxy and server access logs;
5. the Django session cookie, for pages served by the same site
   (``SessionMiddleware`` + ``AuthMiddleware`` from Channels).

The middleware sets ``scope["user"]`` (``AnonymousUser`` when no source
authenticates), ``scope["roles"]`` (the user's Django group names, plus the
token's ``ROLES_CLAIM``), ``scope["auth_source"]`` (``"ticket"``,
``"subprotocol"``, ``"header"``, ``"query"``, ``"session"`` or ``None``),
``scope["auth_expires_at"]`` (epoch seconds, or ``None``: the socket is closed
with 4401 then), ``scope["auth_session_key"]`` (the Django session the socket
stands for, by its cookie or a ticket issued to it, or ``None``; the relay
closes the socket with 4401 when it signs out) and ``scope["auth_error"]``
(why a credential was refused).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from redis.exceptions import RedisError

from pipeline.conf import notiflow_settings
from webapp.realtime.tickets import ticket_redeem
from webapp.tokens import Identity, InvalidToken, token_verify

SUBPROTOCOL = "notiflow"
TOKEN_PREFIX = "jwt."  # noqa: S105 - a prefix, not a secret
TICKET_PREFIX = "ticket."


def credential_from_scope(scope: dict[str, Any]) -> tuple[str, str, str] | None:
    """The first credential the handshake offers: ``(kind, source, value)``, ``kind`` ``"ticket"`` or ``"jwt"``."""
    protocols = [str(p) for p in scope.get("subprotocols", [])]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for proto in protocols:
        if proto.startswith(TICKET_PREFIX):
            return "ticket", "ticket", proto[len(TICKET_PREFIX) :]
    if query.get("ticket"):
        return "ticket", "ticket", query["ticket"][0]
    for proto in protocols:
        if proto.startswith(TOKEN_PREFIX):
            return "jwt", "subprotocol", proto[len(TOKEN_PREFIX) :]
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return "jwt", "header", token.strip()
    if query.get("token"):
        return "jwt", "query", query["token"][0]
    return None


def _user_and_roles(user_id: int) -> tuple[Any, list[str]]:
    """The active user and their Django group names, or ``(AnonymousUser(), [])``."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).prefetch_related("groups").first()
    if user is None:
        return AnonymousUser(), []
    return user, sorted(g.name for g in user.groups.all())


# Token verification may fetch the JWKS over HTTP and a ticket is redeemed in Redis: both run in threads of the
# default pool (thread_sensitive=False), not on the one thread that serves every database_sync_to_async call of
# the process, where one slow identity provider would hold up every handshake and consumer behind it.
_token_verify = sync_to_async(token_verify, thread_sensitive=False)
_ticket_redeem = sync_to_async(ticket_redeem, thread_sensitive=False)
_user_and_roles_read = database_sync_to_async(_user_and_roles)


async def authenticate(scope: dict[str, Any]) -> dict[str, Any]:
    """The ``user``, ``roles``, ``auth_source``, ``auth_expires_at``, ``auth_session_key`` and ``auth_error`` of a
    handshake.

    A ticket is redeemed in Redis and a token verified (a JWKS may be
    fetched) in a thread of the default pool; the user is read from the
    database through ``database_sync_to_async``.
    """
    found: dict[str, Any] = {
        "user": AnonymousUser(),
        "roles": [],
        "auth_source": None,
        "auth_expires_at": None,
        "auth_session_key": None,
        "auth_error": None,
    }
    credential = credential_from_scope(scope)
    identity: Identity | None = None
    if credential is not None:
        kind, source, value = credential
        found["auth_source"] = source
        try:
            if kind == "ticket":
                identity = await _ticket_redeem(value)
                if identity is None:
                    found["auth_error"] = "unknown, expired or already used ticket"
            else:
                identity = await _token_verify(value)
        except InvalidToken as exc:
            found["auth_error"] = f"invalid token: {exc}"
        except RedisError as exc:
            found["auth_error"] = f"tickets unavailable: {type(exc).__name__}"
    else:
        session_user = scope.get("user")  # resolved by Channels' AuthMiddleware already: no query here
        if session_user is not None and session_user.is_authenticated:
            identity = Identity(user_id=int(session_user.pk), session_key=scope["session"].session_key)
            found["auth_source"] = "session"
    if identity is None:
        return found
    user, groups = await _user_and_roles_read(identity.user_id)
    if not user.is_authenticated:
        found["auth_error"] = "the user does not exist or is inactive"
        return found
    found.update(
        user=user,
        roles=sorted(set(groups) | set(identity.roles)),
        auth_expires_at=identity.expires_at,
        auth_session_key=identity.session_key,
    )
    return found


class NotiflowAuthMiddleware(BaseMiddleware):
    """Authenticate the handshake (see the module docstring); runs inside Channels' ``AuthMiddlewareStack``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        if scope.get("type") == "websocket":
            scope.update(await authenticate(scope))
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Channels' :class:`OriginValidator`, except that a handshake with no ``Origin`` header is let through.

    Browsers always send ``Origin`` on a WebSocket handshake, and the check
    exists for them (cross-site WebSocket hijacking rides on the victim's
    cookies); a client with no ``Origin`` is not a browser and must still
    authenticate. A foreign ``Origin`` is refused before the handshake
    completes: HTTP 403.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(super().valid_origin(parsed_origin))


def allowed_origins() -> list[str]:
    """``WEBSOCKET["ALLOWED_ORIGINS"]``, or else ``ALLOWED_HOSTS``: to Channels' :class:`OriginValidator` a bare
    host (``.example.com`` included) matches any scheme and port, and ``*`` matches anything."""
    configured = notiflow_settings.WEBSOCKET["ALLOWED_ORIGINS"]
    return list(configured if configured is not None else settings.ALLOWED_HOSTS)


def websocket_stack(inner: Any) -> Any:
    """The WebSocket middleware around the router: origin check, session, then tokens and tickets."""
    return BrowserOriginValidator(AuthMiddlewareStack(NotiflowAuthMiddleware(inner)), allowed_origins())
