"""``emit_event()``: the one entry point application code calls.

An event is validated against the catalogue, written as an outbox row
(:class:`pipeline.models.Event`) in the caller's transaction, and published to
the broker after that transaction commits. If the broker cannot be reached,
``emit_event()`` still returns: the row stays unpublished and the celery beat
task ``notiflow.outbox_relay`` publishes it later.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from pipeline.catalogue import catalogue
from pipeline.conf import notiflow_settings
from pipeline.exceptions import EventError, InvalidActor, InvalidAudience, InvalidEventData
from pipeline.models import Event

logger = logging.getLogger(__name__)


class IdempotencyConflict(EventError):
    """The idempotency key was used before for an event with different content."""


@dataclass(frozen=True)
class Audience:
    """Who an event is for: explicit users, the members of a role, or everyone.

    A role is a Django auth ``Group`` name. Build one with
    :meth:`users`, :meth:`role` or :meth:`everyone`.
    """

    kind: str
    user_ids: tuple[int, ...] = ()
    role_name: str = ""

    @classmethod
    def users(cls, *users: int | AbstractBaseUser) -> Audience:
        """Explicit recipients, as user ids or user instances (duplicates removed, order kept)."""
        ids: list[int] = []
        for user in users:
            if isinstance(user, AbstractBaseUser):
                user = user.pk
            if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
                raise InvalidAudience(f"Audience.users() takes user ids or users, not {user!r}.")
            if user not in ids:
                ids.append(user)
        return cls(kind="users", user_ids=tuple(ids))

    @classmethod
    def role(cls, name: str) -> Audience:
        """Every active member of the Django group ``name``."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidAudience("Audience.role() takes a non-empty group name.")
        return cls(kind="role", role_name=name)

    @classmethod
    def everyone(cls) -> Audience:
        """Every active user."""
        return cls(kind="everyone")

    def as_json(self) -> dict[str, Any]:
        if self.kind == "users":
            return {"kind": "users", "user_ids": list(self.user_ids)}
        if self.kind == "role":
            return {"kind": "role", "role": self.role_name}
        return {"kind": "everyone"}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Audience:
        kind = raw.get("kind")
        if kind == "users":
            return cls.users(*raw.get("user_ids", []))
        if kind == "role":
            return cls.role(raw.get("role", ""))
        if kind == "everyone":
            return cls.everyone()
        raise InvalidAudience(f"Unknown audience kind {kind!r}.")

    def recipients(self, *, exclude: int | None = None) -> models.QuerySet[Any]:
        """Active users in the audience, ordered by id, without ``exclude``."""
        users = get_user_model().objects.filter(is_active=True).order_by("pk")
        if self.kind == "users":
            users = users.filter(pk__in=self.user_ids)
        elif self.kind == "role":
            users = users.filter(groups__name=self.role_name)
        if exclude is not None:
            users = users.exclude(pk=exclude)
        return users


def _validate_audience(audience: Any) -> Audience:
    if isinstance(audience, Iterable) and not isinstance(audience, str | bytes | Mapping | Audience):
        audience = Audience.users(*audience)
    if not isinstance(audience, Audience):
        raise InvalidAudience(f"audience must be an Audience or a list of user ids, not {type(audience).__name__}.")
    if audience.kind == "users":
        if not audience.user_ids:
            raise InvalidAudience("The audience is empty.")
        found = set(get_user_model().objects.filter(pk__in=audience.user_ids).values_list("pk", flat=True))
        missing = [uid for uid in audience.user_ids if uid not in found]
        if missing:
            raise InvalidAudience(f"The audience names unknown user id(s): {missing}.")
    elif audience.kind == "role":
        if not Group.objects.filter(name=audience.role_name).exists():
            raise InvalidAudience(f"The audience names role {audience.role_name!r}, which is not a group.")
    elif audience.kind != "everyone":
        raise InvalidAudience(f"Unknown audience kind {audience.kind!r}.")
    return audience


def _validate_actor(actor: Any) -> int | None:
    if actor is None:
        return None
    if isinstance(actor, AbstractBaseUser):
        actor = actor.pk
    if isinstance(actor, bool) or not isinstance(actor, int):
        raise InvalidActor(f"actor must be None, a user or a user id, not {actor!r}.")
    if not get_user_model().objects.filter(pk=actor).exists():
        raise InvalidActor(f"actor {actor} is not a user.")
    return actor


def _validate_data(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidEventData(f"data must be a JSON object (a dict), not {type(data).__name__}.")
    try:
        encoded = json.dumps(data, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEventData(f"data is not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode())
    limit = notiflow_settings.MAX_EVENT_DATA_BYTES
    if size > limit:
        raise InvalidEventData(f"data is {size} bytes as JSON; the limit is {limit} bytes (MAX_EVENT_DATA_BYTES).")
    result: dict[str, Any] = json.loads(encoded)  # a plain copy: later changes by the caller do not leak in
    return result


def _target(target: Any) -> tuple[str, str]:
    if target is None:
        return "", ""
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk)
    if isinstance(target, tuple) and len(target) == 2 and all(isinstance(p, str | int) for p in target):
        return str(target[0]), str(target[1])
    raise EventError(f"target must be a model instance or a (type, id) pair, not {target!r}.")


def emit_event(
    *,
    event_type: str,
    audience: Audience | Iterable[int | AbstractBaseUser],
    actor: AbstractBaseUser | int | None = None,
    target: models.Model | tuple[str, str | int] | None = None,
    data: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    include_actor: bool = False,
) -> uuid.UUID:
    """Record an event and queue its processing; return the event id.

    ``audience`` is an :class:`Audience` or a list of user ids/users; the actor
    is left out of it unless ``include_actor`` is true. ``data`` is a JSON
    object of at most ``NOTIFLOW["MAX_EVENT_DATA_BYTES"]`` bytes. With an
    ``idempotency_key`` used for the same content within
    ``NOTIFLOW["IDEMPOTENCY_WINDOW"]`` seconds (24 hours), the first event's
    id is returned and nothing is queued; after the window the key starts
    a new event.

    Inside ``transaction.atomic()`` the event is published only after the
    transaction commits, and a rollback notifies no one. A broker outage does
    not raise: the event stays in the outbox and is published later.

    Raises (all :class:`~pipeline.exceptions.EventError`, nothing queued):
    ``UnknownEventType``, ``InvalidAudience``, ``InvalidActor``,
    ``InvalidEventData``, ``IdempotencyConflict``.
    """
    spec = catalogue.get(event_type)
    audience_ = _validate_audience(audience)
    actor_id = _validate_actor(actor)
    payload = _validate_data(data)
    target_type, target_id = _target(target)
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 255):
        raise EventError("idempotency_key must be a string of 1 to 255 characters.")

    fields = {
        "event_type": spec.name,
        "actor_id": actor_id,
        "audience": audience_.as_json(),
        "include_actor": include_actor,
        "target_type": target_type,
        "target_id": target_id,
        "data": payload,
    }
    if idempotency_key is not None:
        existing = _event_for_key(idempotency_key, fields)
        if existing is not None:
            return existing

    try:
        with transaction.atomic():
            event = Event.objects.create(
                **fields, idempotency_key=idempotency_key, occurred_at=occurred_at or timezone.now()
            )
            transaction.on_commit(lambda: event_publish(event_id=event.id))
    except IntegrityError:
        # A concurrent call with the same key committed first.
        existing = _event_for_key(idempotency_key, fields) if idempotency_key is not None else None
        if existing is None:
            raise
        return existing
    return event.id


def _event_for_key(key: str, fields: Mapping[str, Any]) -> uuid.UUID | None:
    """The id of the event stored under ``key`` within ``IDEMPOTENCY_WINDOW``, ``None`` if there is none.

    A key older than the window is released (its event keeps no key), so
    the caller may store a new event under it. Raises
    :class:`IdempotencyConflict` if the event's content differs from ``fields``.
    """
    existing = Event.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.created_at < timezone.now() - timedelta(seconds=notiflow_settings.IDEMPOTENCY_WINDOW):
        Event.objects.filter(pk=existing.pk, idempotency_key=key).update(idempotency_key=None)
        return None
    if any(getattr(existing, name) != value for name, value in fields.items()):
        raise IdempotencyConflict(f"idempotency_key {key!r} was used for event {existing.id} with different content.")
    return existing.id


class _BrokerBreaker:
    """A circuit breaker for publishing: after the broker failed, callers skip it for ``pause`` seconds.

    During an outage each ``emit_event()`` would otherwise wait for the
    publish retry policy (about a second) before giving up; with the breaker
    open it returns at once and the event waits in the outbox for
    ``notiflow.outbox_relay``. Per process; the pattern is Nygard's
    "Circuit Breaker" (*Release It!*, 2007).
    """

    def __init__(self, pause: float = 5.0) -> None:
        self.pause = pause
        self._open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.pause

    def reset(self) -> None:
        self._open_until = 0.0


broker_breaker = _BrokerBreaker()


def event_publish(*, event_id: uuid.UUID | str, force: bool = False) -> bool:
    """Hand an event to the broker and mark it published; ``False`` if the broker is unreachable.

    Never raises for a broker outage: the event stays in the outbox for
    ``notiflow.outbox_relay``. While :data:`broker_breaker` is open (a publish
    failed less than 5 s ago) it does not try, unless ``force``.
    """
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from pipeline.tasks import event_start

    if broker_breaker.is_open() and not force:
        return False
    try:
        event_start(event_id=event_id)
    except (OperationalError, RedisError, OSError) as exc:
        broker_breaker.trip()
        logger.warning("Broker unreachable; event %s stays in the outbox: %s", event_id, exc)
        return False
    broker_breaker.reset()
    Event.objects.filter(pk=event_id).update(published_at=timezone.now())
    return True
