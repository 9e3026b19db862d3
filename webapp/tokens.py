"""JWT access tokens for the WebSocket relay and the REST API (PyJWT).

Two kinds of token are accepted, chosen by the token's ``alg`` header and
``NOTIFLOW["JWT"]["ALGORITHMS"]``:

- **HS256/384/512**, signed with ``JWT["SECRET"]``: the tokens notiflow
  issues itself (``POST /api/token/``, :func:`token_issue`);
- **RS*/PS*/ES*** from an identity provider (Auth0, Clerk, Cognito,
  Keycloak): the public key is the one named by the token's ``kid`` in the
  JSON Web Key Set at ``JWT["JWKS_URL"]``, fetched by PyJWT's
  :class:`jwt.PyJWKClient` and cached for ``JWT["JWKS_CACHE"]`` seconds (a
  ``kid`` not in the cache triggers one refetch, so key rotation works).

``exp`` is always required; ``iss`` and ``aud`` are checked when
``JWT["ISSUER"]``/``JWT["AUDIENCE"]`` are set. The user is the primary key in
``JWT["USER_CLAIM"]`` (``sub``); roles come from ``JWT["ROLES_CLAIM"]`` when
set (a list of strings).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from pipeline.conf import notiflow_settings

#: HMAC algorithms: verified with the shared secret; every other algorithm needs the JWKS.
SHARED_SECRET_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired, or for another issuer or audience."""


@dataclass(frozen=True)
class Identity:
    """Who a verified token names: ``user_id``, ``roles`` from the token, and ``expires_at`` (epoch seconds)."""

    user_id: int
    roles: tuple[str, ...] = field(default=())
    expires_at: float | None = None


_jwks_lock = threading.Lock()
_jwks_clients: dict[tuple[str, int], jwt.PyJWKClient] = {}


def _jwks_client(url: str, lifespan: int) -> jwt.PyJWKClient:
    """One cached :class:`jwt.PyJWKClient` per (URL, lifespan), shared by every thread."""
    with _jwks_lock:
        client = _jwks_clients.get((url, lifespan))
        if client is None:
            client = jwt.PyJWKClient(url, cache_keys=True, lifespan=lifespan, timeout=5)
            _jwks_clients[(url, lifespan)] = client
        return client


def token_issue(*, user_id: int, ttl: int | None = None, roles: list[str] | None = None) -> str:
    """An HS-signed token for ``user_id`` that expires after ``ttl`` seconds (default ``JWT["TTL"]``).

    Carries ``iss``/``aud`` when those are configured and ``roles`` in
    ``ROLES_CLAIM`` when that is set. Raises :class:`ValueError` if no
    HS algorithm is allowed or ``SECRET`` is empty.
    """
    conf = notiflow_settings.JWT
    algorithm = next((a for a in conf["ALGORITHMS"] if a in SHARED_SECRET_ALGORITHMS), None)
    if algorithm is None or not conf["SECRET"]:
        raise ValueError("notiflow issues HS-signed tokens: JWT['ALGORITHMS'] needs HS256 and JWT['SECRET'] a value.")
    now = int(time.time())
    claims: dict[str, Any] = {
        conf["USER_CLAIM"]: str(user_id),
        "iat": now,
        "exp": now + int(ttl if ttl is not None else conf["TTL"]),
    }
    if conf["ISSUER"]:
        claims["iss"] = conf["ISSUER"]
    if conf["AUDIENCE"]:
        audience = conf["AUDIENCE"]
        claims["aud"] = audience if isinstance(audience, str) else next(iter(audience))
    if roles is not None and conf["ROLES_CLAIM"]:
        claims[conf["ROLES_CLAIM"]] = list(roles)
    return jwt.encode(claims, conf["SECRET"], algorithm=algorithm)


def token_verify(token: str) -> Identity:
    """The :class:`Identity` a valid token names; raises :class:`InvalidToken` otherwise.

    Blocking: the first token signed with a new ``kid`` fetches the JWKS over
    HTTP (5 s timeout). Call it from a thread in async code.
    """
    conf = notiflow_settings.JWT
    allowed = list(conf["ALGORITHMS"])
    try:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in allowed:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted (accepted: {', '.join(allowed)})")
        key: Any
        if algorithm in SHARED_SECRET_ALGORITHMS:
            key = conf["SECRET"]
        elif conf["JWKS_URL"]:
            key = _jwks_client(conf["JWKS_URL"], int(conf["JWKS_CACHE"])).get_signing_key_from_jwt(token).key
        else:
            raise InvalidToken(f"algorithm {algorithm!r} needs JWT['JWKS_URL'], which is not set")
        required = ["exp", str(conf["USER_CLAIM"])]
        required += (["iss"] if conf["ISSUER"] else []) + (["aud"] if conf["AUDIENCE"] else [])
        claims = jwt.decode(
            token,
            key,
            algorithms=[str(algorithm)],
            leeway=conf["LEEWAY"],
            issuer=conf["ISSUER"] or None,
            audience=conf["AUDIENCE"] or None,
            options={"require": required, "verify_aud": bool(conf["AUDIENCE"])},
        )
        user_id = int(claims[conf["USER_CLAIM"]])
    except InvalidToken:
        raise
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise InvalidToken(str(exc) or type(exc).__name__) from exc
    roles: tuple[str, ...] = ()
    if conf["ROLES_CLAIM"]:
        raw = claims.get(conf["ROLES_CLAIM"], [])
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise InvalidToken(f"claim {conf['ROLES_CLAIM']!r} must be a list of strings")
        roles = tuple(raw)
    return Identity(user_id=user_id, roles=roles, expires_at=float(claims["exp"]) + float(conf["LEEWAY"]))
