from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from webapp.tokens import Identity, InvalidToken, token_verify


class JWTAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <jwt>``, the same tokens as the WebSocket relay.

    ``request.auth`` is the token's :class:`~webapp.tokens.Identity`.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Identity] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = header[1].decode("latin-1")
        try:
            identity = token_verify(token)
        except InvalidToken as exc:
            raise exceptions.AuthenticationFailed(f"Invalid token: {exc}") from exc
        user = get_user_model().objects.filter(pk=identity.user_id, is_active=True).first()
        if user is None:
            raise exceptions.AuthenticationFailed("The token's user does not exist or is inactive.")
        return user, identity

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
