"""The ``NOTIFLOW`` settings object.

All notiflow settings live in one namespaced dict, ``settings.NOTIFLOW``, read
through :data:`notiflow_settings`. The pattern is django-rest-framework's
``api_settings``: defaults, lazy reads, a reload when a test overrides the
setting, and **unknown keys are rejected** so that a typo fails at start-up
instead of being silently ignored.

Keys (defaults in :data:`DEFAULTS`):

``EVENT_TYPES``
    ``{event_type: {...}}``, the event catalogue (see :mod:`pipeline.catalogue`).
``DELIVERY_METHODS``
    ``{alias: {"BACKEND": "dotted.path.Class", "OPTIONS": {...}, "QUEUE": str}}``,
    the delivery method registry (see :mod:`delivery.registry`).
``MAX_EVENT_DATA_BYTES``
    Upper bound, in bytes, of an event's ``data`` once encoded as UTF-8 JSON.
    64 KiB: our own choice, to keep broker messages small (a Redis list entry
    could hold far more).
``EVENT_BATCH_SIZE``
    The most events one transaction of the hot path takes
    (:func:`pipeline.processing.events_process`). Under load a batch takes
    whatever has arrived since the last one, up to this; a lone event is a
    batch of one and goes out at once.
``AUDIENCE_CHUNK_SIZE``
    The most notifications (recipients) stored by one transaction of the hot
    path; a larger audience is stored in chunks of this size, in user id order.
``DRAIN_BUDGET``
    Seconds one ``notiflow.events_drain`` task keeps taking batches before it
    queues its successor and returns, so other tasks of the ``events`` queue
    get their turn. Keep it below ``DOORBELL_TTL``: a drain sets the
    doorbell's expiry when it starts, and again when woken once half of it
    has passed.
``DRAIN_LINGER``
    Seconds a drain that found no event waits for the next before it lets
    the doorbell go (woken at once by an emitter), and the longest a batch's
    email deliveries wait to be sent to their queue with the next batches'
    (see :mod:`pipeline.drain`): 0.1.
``DOORBELL_TTL``
    Seconds the doorbell (see :mod:`pipeline.publishing`) stays set without a
    drain refreshing it: how long new events may wait after a drain dies
    holding it, before the next emit rings again.
``DELIVERY_BATCH_SIZE``
    Deliveries handed to one delivery task (one ``send()`` call).
``RECENT_ON_CONNECT``
    How many unread notifications a WebSocket client receives on connect.
``JWT``
    How WebSocket and REST clients' tokens are verified (PyJWT):

    - ``ALGORITHMS``: the accepted ``alg`` values. ``HS256/384/512`` are
      verified with ``SECRET`` (tokens notiflow issues itself);
      ``RS*``/``PS*``/``ES*`` with the key named by the token's ``kid`` in the
      JSON Web Key Set at ``JWKS_URL`` (Auth0, Clerk, Cognito, Keycloak...),
      fetched with PyJWT's ``PyJWKClient`` and cached ``JWKS_CACHE`` seconds.
    - ``JWKS_MIN_REFETCH``: the fewest seconds between two fetches of the
      JWKS. A token whose ``kid`` is not in the cached set triggers a refetch
      (a rotated key), but until this long after the last fetch it is refused
      without one, so made-up ``kid`` values cannot flood the identity
      provider or hold up handshakes. 30, panva/jose's ``cooldownDuration``
      default: a rotated key is accepted within half a minute of its first token.
    - ``ISSUER`` / ``AUDIENCE``: when set, the ``iss`` / ``aud`` claims must
      match (``AUDIENCE`` may be a list).
    - ``LEEWAY``: seconds of clock skew allowed on ``exp``/``iat``/``nbf``.
    - ``TTL``: seconds a token issued by ``POST /api/token/`` lives.
    - ``USER_CLAIM``: the claim holding the user's primary key (``sub``);
      ``ROLES_CLAIM``: a claim holding a list of role names (``None``: roles
      come from the user's Django groups only; otherwise both).
``WEBSOCKET``
    The relay's limits (see the README's "WebSocket protocol"):

    - ``ALLOWED_ORIGINS``: browser origins (``https://app.example.com``) that
      may open a socket; ``None`` means the origins of ``ALLOWED_HOSTS``.
      A handshake with a foreign ``Origin`` is refused (HTTP 403).
    - ``MAX_FRAME_BYTES``: a client frame over this many bytes closes the
      socket with 4413.
    - ``RATE`` / ``BURST``: a token bucket per socket, refilled ``RATE``
      frames per second, holding ``BURST``; an empty bucket closes the socket
      with 4429. 20/s with bursts of 50 by default: far above what a person
      clicking "mark read" sends, well below what a runaway loop sends.
    - ``RESUME_LIMIT``: the most notifications a reconnecting client is sent;
      past it the reply says ``recovered: false`` and the client refetches
      through the REST API.
    - ``TICKET_TTL``: seconds a one-time ticket (``POST /api/ws-ticket/``)
      stays valid; 30, time enough to open a socket and too short to matter
      in an access log (it is single-use anyway).
    - ``GAP_WAIT``: seconds a socket holds a push whose predecessor in the
      user's push stream has not come (a push lost, or late from another
      worker) before it reads the missing ones from the database and sends
      them, in order; also how long after its last push a socket checks that
      no push after it was lost. 1.0 by default.
    - ``MAX_SOCKETS_PER_USER``: open sockets one user may hold on each ASGI
      process; one more is closed with 4409 at once, before it joins any
      group. 20 by default: a person's tabs and devices, not a script's
      thousands. Per process, so that it holds exactly, with no shared count
      for a crashed process to leave behind; N processes allow N times it.
    - ``USER_RATE`` / ``USER_BURST``: a token bucket per user and process,
      shared by all the user's sockets there (40/s, bursts of 100): the
      socket whose frame finds it empty is closed with 4429, so opening more
      sockets does not raise a user's rate.
    - ``REVALIDATE``: seconds between checks that each open socket's user is
      still active (else 4403) and that the session it was opened with, by
      cookie or by a ticket issued to it, is still signed in (else 4401).
      60 by default: a deactivated user or a signed-out session loses its
      sockets within that. Each check also renews the socket's channel-layer
      group memberships when a quarter of the layer's ``group_expiry`` has
      passed.
``RETRY``
    ``{"BACKOFF_BASE": seconds, "BACKOFF_CAP": seconds, "MAX_ATTEMPTS": int}``,
    the default retry policy of every delivery method (an entry in
    ``DELIVERY_METHODS`` may override it with its own ``"RETRY"``). "Full
    jitter" exponential backoff (Marc Brooker, "Exponential Backoff And
    Jitter", AWS Architecture Blog, 2015): after attempt *n* the next waits
    ``uniform(0, min(CAP, BASE * 2**n))`` seconds. With the defaults (5 s,
    10 min, 10 attempts) the nine waits add up to 20 minutes on average and
    40 at most: the half-hour order of the retry windows hosted notification
    services use, spread so that a recovering provider is not hit by every
    retry at once.
``OUTBOX_RELAY_AFTER``
    Seconds an event may wait unprocessed before the celery beat relay
    (``notiflow.outbox_relay``) rings a drain for it (the broker was down when
    it was emitted, or the wake-up message was lost).
``IDEMPOTENCY_WINDOW``
    Seconds during which an ``idempotency_key`` given to ``emit_event()``
    returns the first event instead of a new one. 24 hours, the window
    Stripe documents for its ``Idempotency-Key`` header.
``DELIVERY_RECORD_INTERVAL``
    Seconds of successful sends recorded together, with one ``UPDATE`` (see
    :mod:`pipeline.sending`): 0.05. Also the longest a stop of a pool
    process waits for the messages in hand, beyond the one being sent.
``DELIVERY_LEASE``
    Seconds a delivery task holds its claim on the deliveries it is sending
    (300), measured on the database's clock. The task renews it every third
    of it while a batch is being sent, so a batch may take longer; one send
    must not take more than two thirds of it (Django's ``EMAIL_TIMEOUT``).
    A task that dies leaves its claim to lapse after this long.
``RECOVER_AFTER``
    Seconds after which work that should have moved and did not (an event
    whose chain never finished, a delivery queued or due for retry but never
    sent, a digest claimed but never sent) is queued again by the celery beat
    task ``notiflow.pipeline_recover``: the broker lost the message (a Redis
    restart without the last second of its AOF, a publish that failed in the
    middle of a chain). It must exceed the normal queueing delay, or busy
    queues receive needless (harmless) duplicates.
``SWEEP_INTERVAL``
    Seconds between celery beat runs of ``notiflow.outbox_relay`` and
    ``notiflow.pipeline_recover``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from delivery.registry import DEFAULT_METHODS, DEFAULT_RETRY, methods

DEFAULTS: dict[str, Any] = {
    "EVENT_TYPES": {},
    "DELIVERY_METHODS": DEFAULT_METHODS,
    "MAX_EVENT_DATA_BYTES": 64 * 1024,
    "EVENT_BATCH_SIZE": 50,
    "AUDIENCE_CHUNK_SIZE": 1000,
    "DRAIN_BUDGET": 5.0,
    "DRAIN_LINGER": 0.1,
    "DOORBELL_TTL": 10.0,
    "DELIVERY_BATCH_SIZE": 100,
    "RECENT_ON_CONNECT": 20,
    "JWT": {
        "SECRET": "",
        "ALGORITHMS": ["HS256"],
        "LEEWAY": 0,
        "TTL": 3600,
        "USER_CLAIM": "sub",
        "ROLES_CLAIM": None,
        "ISSUER": None,
        "AUDIENCE": None,
        "JWKS_URL": None,
        "JWKS_CACHE": 300,
        "JWKS_MIN_REFETCH": 30,
    },
    "WEBSOCKET": {
        "ALLOWED_ORIGINS": None,
        "MAX_FRAME_BYTES": 4096,
        "RATE": 20.0,
        "BURST": 50,
        "RESUME_LIMIT": 500,
        "TICKET_TTL": 30,
        "GAP_WAIT": 1.0,
        "MAX_SOCKETS_PER_USER": 20,
        "USER_RATE": 40.0,
        "USER_BURST": 100,
        "REVALIDATE": 60.0,
    },
    "OUTBOX_RELAY_AFTER": 30,
    "IDEMPOTENCY_WINDOW": 24 * 3600,
    "DELIVERY_LEASE": 300,
    "DELIVERY_RECORD_INTERVAL": 0.05,
    "RECOVER_AFTER": 300,
    "SWEEP_INTERVAL": 30,
    "RETRY": DEFAULT_RETRY,
}

#: The keys that are dicts merged over their defaults, so a project sets only what it changes.
_NESTED = ("JWT", "WEBSOCKET")

#: The Celery queue on which every new dead letter is announced (task ``notiflow.dead_letter``).
DEAD_LETTER_QUEUE = "dead_letter"


class NotiflowSettings:
    """Attribute access to ``settings.NOTIFLOW`` merged over :data:`DEFAULTS`.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` on first
    access if ``NOTIFLOW`` is not a dict or holds a key notiflow does not know.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._cache is None:
            raw = getattr(settings, "NOTIFLOW", {})
            if not isinstance(raw, Mapping):
                raise ImproperlyConfigured("settings.NOTIFLOW must be a dict.")
            unknown = sorted(set(raw) - set(DEFAULTS))
            if unknown:
                raise ImproperlyConfigured(
                    f"Unknown key(s) in settings.NOTIFLOW: {', '.join(unknown)}. "
                    f"Known keys: {', '.join(sorted(DEFAULTS))}."
                )
            merged = {**DEFAULTS, **raw}
            for name in _NESTED:
                nested = {**DEFAULTS[name], **raw.get(name, {})}
                unknown_nested = sorted(set(nested) - set(DEFAULTS[name]))
                if unknown_nested:
                    raise ImproperlyConfigured(
                        f"Unknown key(s) in settings.NOTIFLOW[{name!r}]: {', '.join(unknown_nested)}."
                    )
                merged[name] = nested
            self._cache = merged
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid notiflow setting: {name!r}")
        return self.user_settings[name]

    def reload(self) -> None:
        self._cache = None


notiflow_settings = NotiflowSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    """A test changed ``NOTIFLOW``: forget the merged settings and the cached delivery methods
    (the catalogue listens for the same signal in :mod:`pipeline.catalogue`)."""
    if setting == "NOTIFLOW":
        notiflow_settings.reload()
        methods.reload()


setting_changed.connect(_reload)
