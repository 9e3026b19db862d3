"""JWT access tokens for the WebSocket relay and the REST API (PyJWT).

HS256 with ``NOTIFLOW["JWT"]["SECRET"]`` for now; the claim naming the user
is ``NOTIFLOW["JWT"]["USER_CLAIM"]`` (default ``sub``, the user id as a string).
"""

from __future__ import annotations

import time

import jwt

from pipeline.conf import notiflow_settings


class InvalidToken(Exception):
    """The token is missing, malformed, forged or expired."""


def token_issue(*, user_id: int, ttl: int | None = None) -> str:
    """A signed token for ``user_id`` that expires after ``ttl`` seconds (default ``JWT["TTL"]``)."""
    conf = notiflow_settings.JWT
    now = int(time.time())
    claims = {conf["USER_CLAIM"]: str(user_id), "iat": now, "exp": now + int(ttl if ttl is not None else conf["TTL"])}
    return jwt.encode(claims, conf["SECRET"], algorithm=conf["ALGORITHMS"][0])


def token_verify(token: str) -> int:
    """The user id a valid token names. Raises :class:`InvalidToken` otherwise (``exp`` is required)."""
    conf = notiflow_settings.JWT
    try:
        claims = jwt.decode(
            token,
            conf["SECRET"],
            algorithms=conf["ALGORITHMS"],
            leeway=conf["LEEWAY"],
            options={"require": ["exp", conf["USER_CLAIM"]]},
        )
        return int(claims[conf["USER_CLAIM"]])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken(str(exc)) from exc
