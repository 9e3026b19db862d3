"""JWT authentication for WebSocket handshakes.

The token comes from the ``Sec-WebSocket-Protocol`` header (the client
offers ``["notiflow", "jwt.<token>"]`` and the server answers ``notiflow``),
or from ``?token=<token>``, which browsers can always send but which ends up
in proxy access logs. ``scope["user"]`` is the user, or ``AnonymousUser``
when the token is missing or invalid; the consumer then closes with 4401.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from webapp.tokens import InvalidToken, token_verify

SUBPROTOCOL = "notiflow"
TOKEN_PREFIX = "jwt."  # noqa: S105 - a prefix, not a secret


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """The raw token offered in the handshake, subprotocol first, else the query string."""
    for proto in scope.get("subprotocols", []):
        if proto.startswith(TOKEN_PREFIX):
            return str(proto[len(TOKEN_PREFIX) :])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


@database_sync_to_async
def _active_user(user_id: int) -> tuple[Any, list[str]]:
    """The active user and their role names (Django group names), or ``(AnonymousUser, [])``."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).prefetch_related("groups").first()
    if user is None:
        return AnonymousUser(), []
    return user, sorted(g.name for g in user.groups.all())


class JWTAuthMiddleware(BaseMiddleware):
    """Set ``scope["user"]`` and ``scope["roles"]`` from a JWT, and ``scope["auth_error"]`` when one was refused."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"], scope["roles"] = AnonymousUser(), []
        token = token_from_scope(scope)
        if token:
            try:
                scope["user"], scope["roles"] = await _active_user(token_verify(token))
            except InvalidToken as exc:
                scope["auth_error"] = str(exc)
        return await super().__call__(scope, receive, send)
