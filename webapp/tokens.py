"""JWT access tokens for the WebSocket relay and the REST API (PyJWT).

Two kinds of token are accepted, chosen by the token's ``alg`` header and
``NOTIFLOW["JWT"]["ALGORITHMS"]``:

- **HS256/384/512**, signed with ``JWT["SECRET"]``: the tokens notiflow
  issues itself (``POST /api/token/``, :func:`token_issue`);
- **RS*/PS*/ES*** from an identity provider (Auth0, Clerk, Cognito,
  Keycloak): the public key is the one named by the token's ``kid`` in the
  JSON Web Key Set at ``JWT["JWKS_URL"]``, fetched by PyJWT's
  :class:`jwt.PyJWKClient` through a :class:`JWKSKeySource`: cached for
  ``JWT["JWKS_CACHE"]`` seconds, refetched for a ``kid`` it does not hold (so
  key rotation works) but at most once per ``JWT["JWKS_MIN_REFETCH"]``
  seconds, so tokens with made-up ``kid`` values cost no request.

``exp`` is always required; ``iss`` and ``aud`` are checked when
``JWT["ISSUER"]``/``JWT["AUDIENCE"]`` are set. The user is the primary key in
``JWT["USER_CLAIM"]`` (``sub``); roles come from ``JWT["ROLES_CLAIM"]`` when
set (a list of strings).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from pipeline.conf import notiflow_settings

#: HMAC algorithms: verified with the shared secret; every other algorithm needs the JWKS.
SHARED_SECRET_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired, or for another issuer or audience."""


@dataclass(frozen=True)
class Identity:
    """Who a credential names: ``user_id``, ``roles`` from the token, ``expires_at`` (epoch seconds), and the
    ``session_key`` of the Django session it stands for (a ticket issued to a signed-in session), if any."""

    user_id: int
    roles: tuple[str, ...] = field(default=())
    expires_at: float | None = None
    session_key: str | None = None


class JWKSKeySource:
    """The signing keys of the JSON Web Key Set at ``url``, shared by every thread of the process.

    PyJWT's :class:`jwt.PyJWKClient` fetches and parses the set; this class
    decides when to fetch, because ``PyJWKClient`` refetches for every ``kid``
    it does not hold: tokens with made-up ``kid`` values would each cost an
    HTTP request. Here:

    - the set is used for ``lifespan`` seconds, then fetched again by the next lookup;
    - a fetch starts at most once per ``min_refetch`` seconds, whatever the
      lookups: until then a ``kid`` missing from the set last fetched is
      refused without a request (the negative cache), and a failed fetch is not
      retried; the keys fetched last stay in use meanwhile;
    - one fetch at a time: a lookup that needs a fetch while one is under way
      waits for its result (up to ``timeout`` seconds) instead of starting another;
      a ``kid`` the set holds is answered at once, even from a set past its
      ``lifespan`` while its refetch is under way.

    The cooldown is jose's (panva/jose ``createRemoteJWKSet``: ``cooldownDuration``,
    30 s by default, "after a successful fetch before a missing key can trigger
    another fetch"); here a failed fetch starts it too.
    """

    def __init__(self, url: str, *, lifespan: float, min_refetch: float, timeout: int = 5) -> None:
        """``lifespan``, ``min_refetch`` and ``timeout`` in seconds; raises :class:`ValueError` if ``lifespan``
        or ``timeout`` is not positive or ``min_refetch`` is negative."""
        if lifespan <= 0 or timeout <= 0 or min_refetch < 0:
            raise ValueError(
                f"JWKS lifespan and timeout must be positive and the minimum refetch interval not negative "
                f"(got {lifespan}, {timeout} and {min_refetch} seconds)"
            )
        self.url = url
        self.lifespan = float(lifespan)
        self.min_refetch = float(min_refetch)
        self.timeout = timeout
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # time.monotonic() of the last successful fetch
        self._attempted_at = float("-inf")  # ... and of the start of the last fetch, successful or not
        self._fetch_error: str | None = None  # why the last fetch failed, if it did
        self._fetch_done: threading.Event | None = None  # set when the fetch under way ends

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The signing key ``kid`` names.

        Blocking: may fetch the set over HTTP (``timeout`` seconds) or wait for
        another thread's fetch. Raises :class:`jwt.PyJWKClientError` when the
        set has no such key or none could be fetched (the message says which).
        """
        with self._lock:
            now = time.monotonic()
            key = self._keys.get(kid)
            may_fetch = now - self._attempted_at >= self.min_refetch
            fresh = now - self._fetched_at < self.lifespan
            if key is not None and (fresh or not may_fetch or self._fetch_done is not None):
                return key
            done = self._fetch_done
            if done is None and may_fetch:
                done = self._fetch_done = threading.Event()
                self._attempted_at = now
                fetching = True
            elif done is None:
                raise self._missing(kid)
            else:
                fetching = False
        if fetching:
            self._fetch(done)
        else:
            done.wait(self.timeout)
        with self._lock:
            key = self._keys.get(kid)
            if key is None:
                raise self._missing(kid)
            return key

    def _fetch(self, done: threading.Event) -> None:
        """Fetch the set and make it current; on failure keep the current one and remember why. Wakes the waiters."""
        keys: dict[str, jwt.PyJWK] | None = None
        error: str | None = None
        try:
            keys = {str(k.key_id): k for k in self._client.get_signing_keys(refresh=True)}
        # Unreachable, cut off mid-answer (urllib leaves errors after the request unwrapped), not JSON, no key.
        except (jwt.PyJWTError, OSError, http.client.HTTPException, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        finally:
            with self._lock:
                if keys is not None:
                    self._keys, self._fetched_at = keys, time.monotonic()
                self._fetch_error = error
                self._fetch_done = None
            done.set()

    def _missing(self, kid: str) -> jwt.PyJWKClientError:
        why = f"; the last JWKS fetch failed: {self._fetch_error}" if self._fetch_error else ""
        return jwt.PyJWKClientError(f'Unable to find a signing key that matches: "{kid}"{why}')


_sources_lock = threading.Lock()
_sources: dict[tuple[str, float, float], JWKSKeySource] = {}


def _jwks_source(url: str, lifespan: float, min_refetch: float) -> JWKSKeySource:
    """One :class:`JWKSKeySource` per (URL, lifespan, minimum refetch interval), shared by every thread.

    Raises :class:`ImproperlyConfigured` if ``JWKS_CACHE`` or ``JWKS_MIN_REFETCH`` is out of range.
    """
    with _sources_lock:
        source = _sources.get((url, lifespan, min_refetch))
        if source is None:
            try:
                source = JWKSKeySource(url, lifespan=lifespan, min_refetch=min_refetch)
            except ValueError as exc:
                raise ImproperlyConfigured(f"NOTIFLOW['JWT']['JWKS_CACHE'/'JWKS_MIN_REFETCH']: {exc}") from exc
            _sources[(url, lifespan, min_refetch)] = source
        return source


def _forget_sources(*, setting: str, **kwargs: Any) -> None:
    """A test changed ``NOTIFLOW``: start from empty key sets (a new test server may reuse a port, hence a URL)."""
    if setting == "NOTIFLOW":
        with _sources_lock:
            _sources.clear()


setting_changed.connect(_forget_sources)


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

    Blocking: a token signed with a ``kid`` not cached may fetch the JWKS over
    HTTP (5 s timeout), or wait for another thread's fetch (see
    :class:`JWKSKeySource`). Call it from a thread in async code, not the one
    that serves the process's database calls. Raises
    :class:`~django.core.exceptions.ImproperlyConfigured` for JWKS settings out of range.
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
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("the token's header names no key ('kid')")
            source = _jwks_source(conf["JWKS_URL"], float(conf["JWKS_CACHE"]), float(conf["JWKS_MIN_REFETCH"]))
            key = source.signing_key(kid).key
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
