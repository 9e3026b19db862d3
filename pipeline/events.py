"""``emit_event()``: the one entry point application code calls.

An event is validated against the catalogue and written as a row
(:class:`pipeline.models.Event`) in the caller's transaction; that row is
both the outbox and the work queue. After the transaction commits, the
doorbell is rung (:func:`pipeline.publishing.events_ring`): one broker
message wakes a drain unless one is due already. If the broker cannot be
reached, ``emit_event()`` still returns: the row waits and the celery beat
sweep rings for it later.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

from pipeline import publishing
from pipeline.audiences import Audience, max_user_id, storable
from pipeline.bulk import rows_insert, select_in
from pipeline.catalogue import catalogue
from pipeline.conf import notiflow_settings
from pipeline.exceptions import (
    EventError,
    InvalidActor,
    InvalidAudience,
    InvalidEventData,
    InvalidIdempotencyKey,
    InvalidOccurredAt,
    InvalidTarget,
    UnknownEventType,
    shown,
)
from pipeline.models import Event

logger = logging.getLogger(__name__)


class IdempotencyConflict(EventError):
    """The idempotency key was used before for an event with different content."""


def _validate_audience(audience: Any) -> Audience:
    """The audience's shape (no database read; :func:`_check_users` reads)."""
    if isinstance(audience, Iterable) and not isinstance(audience, str | bytes | Mapping | Audience | models.Model):
        audience = Audience.users(*audience)  # a list, a set, a queryset of users, values_list("pk", flat=True)
    if not isinstance(audience, Audience):
        raise InvalidAudience(f"audience must be an Audience or a list of user ids, not {type(audience).__name__}.")
    return audience.checked()


def _validate_actor(actor: Any) -> int | None:
    """The actor's user id, or ``None`` (no database read; :func:`_check_users` reads)."""
    if actor is None:
        return None
    if isinstance(actor, AbstractBaseUser):
        if actor.pk is None:
            raise InvalidActor(f"actor {shown(actor)} is not saved: it has no id.")
        actor = actor.pk
    if isinstance(actor, bool) or not isinstance(actor, int) or not 0 < actor <= max_user_id():
        raise InvalidActor(f"actor must be None, a saved user or a user id (1 to {max_user_id()}), not {shown(actor)}.")
    return actor


_COMPILED_UP_TO = 64  # ids up to which the users check's SQL is compiled once per count (pipeline.bulk.select_in)


def _users_query(ids: list[int]) -> tuple[str, list[Any]] | None:
    """``SELECT pk FROM <users> WHERE pk IN (ids)``, compiled once per number of ids; ``None`` for none or for
    more than :data:`_COMPILED_UP_TO`. Building it through the ORM cost more than running it (0.6 of 0.73 ms
    on PostgreSQL, where the raw ``SELECT`` took 0.13 ms)."""
    if len(ids) > _COMPILED_UP_TO:
        return None
    users = get_user_model()._default_manager
    return select_in(
        "events.users",
        lambda pks: users.filter(pk__in=pks).values_list("pk"),
        ids,
        using=router.db_for_read(users.model),
    )


def _users_found(ids: list[int]) -> set[int]:
    """Which of ``ids`` (distinct) are users."""
    query = _users_query(ids)
    if query is None:
        return set(get_user_model()._default_manager.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()
    with connections[router.db_for_read(get_user_model())].cursor() as cursor:
        cursor.execute(*query)
        return {row[0] for row in cursor.fetchall()}


def _check_users(audience: Audience, actor_id: int | None) -> None:
    """Check that the users the event names exist, with one query (and one more for a role)."""
    named = sorted({*audience.user_ids, *([actor_id] if actor_id is not None else [])})
    found = _users_found(named) if named else set()
    missing = [uid for uid in audience.user_ids if uid not in found]
    if missing:
        raise InvalidAudience(f"The audience names unknown user id(s): {missing}.")
    if audience.kind == "role" and not Group.objects.filter(name=audience.role_name).exists():
        raise InvalidAudience(f"The audience names role {audience.role_name!r}, which is not a group.")
    if actor_id is not None and actor_id not in found:
        raise InvalidActor(f"actor {actor_id} is not a user.")


#: How deep ``data`` may nest (the object itself is level 1): our own bound, far below where json and the
#: worker's rendering would reach the interpreter's recursion limit (about 1,000 levels, fewer in a deep stack).
MAX_DATA_DEPTH = 100
#: A JSON ``\u0000`` escape, not preceded by an escaped backslash: PostgreSQL's ``jsonb`` refuses it.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_CURLY_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET_OR_QUOTE = bytes(set(range(256)) - set(b'"[]{}'))


def _nests_deeper_than(encoded: bytes, limit: int) -> bool:
    """Whether JSON text (UTF-8) nests arrays and objects more than ``limit`` levels deep.

    Read from the text rather than by walking the value in Python: nothing to do for text with ``limit``
    brackets or fewer (the hot path's data), else its brackets outside strings, as ``[`` and ``]``, lose their
    innermost pairs once per level (0.3 ms for 59 KB of 2,400 objects and arrays, where walking took 0.8 ms).
    """
    if encoded.count(b"[") + encoded.count(b"{") <= limit:  # brackets in strings counted too: an upper bound
        return False
    if b"\\" in encoded:  # escaped backslashes, then escaped quotes: every quote left delimits a string
        encoded = encoded.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = encoded.translate(_CURLY_AS_SQUARE, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in skeleton:  # strings with brackets in them
        skeleton = b"".join(skeleton.split(b'"')[::2])
    for _ in range(limit):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")  # the innermost level: a pair formed by the removal waits
    return bool(skeleton)


def _non_string_key(value: Any) -> tuple[bool, Any]:
    """``(True, key)`` for the first object key in ``value`` that is not a string, else ``(False, None)``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return True, key
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False, None


def _validate_data(data: Any) -> dict[str, Any]:
    """A plain JSON copy of ``data`` that both databases store as it is; raises ``InvalidEventData``.

    One ``json.dumps`` and one ``json.loads`` as before; the other checks read the encoded text, and the
    keys are looked at only when the copy differs from ``data`` (a tuple, or a key json turned into a string).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidEventData(f"data must be a JSON object (a dict), not {type(data).__name__}.")
    if not isinstance(data, dict):
        data = dict(data)  # json writes dicts only
    try:
        encoded = json.dumps(data, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise InvalidEventData(f"data nests deeper than {MAX_DATA_DEPTH} levels.") from None
    except (TypeError, ValueError) as exc:  # a set, bytes, nan, a 5,000-digit int, a circular reference, ...
        raise InvalidEventData(f"data is not JSON-serialisable: {exc}") from exc
    try:
        raw = encoded.encode()
    except UnicodeEncodeError as exc:
        raise InvalidEventData(f"data holds a lone surrogate, which is not UTF-8: {exc}") from exc
    limit = notiflow_settings.MAX_EVENT_DATA_BYTES
    if len(raw) > limit:
        raise InvalidEventData(f"data is {len(raw)} bytes as JSON; the limit is {limit} bytes (MAX_EVENT_DATA_BYTES).")
    if "\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise InvalidEventData("data holds a NUL character (\\u0000), which PostgreSQL cannot store.")
    if _nests_deeper_than(raw, MAX_DATA_DEPTH):
        raise InvalidEventData(f"data nests deeper than {MAX_DATA_DEPTH} levels.")
    result: dict[str, Any] = json.loads(encoded)  # a plain copy: later changes by the caller do not leak in
    if result != data:
        found, key = _non_string_key(data)
        if found:  # json wrote 1 as "1", silently, and {1: a, "1": b} as an object with the key twice
            raise InvalidEventData(f"data's object keys must be strings, not {shown(key)}.")
    return result


def _longest(field: str) -> int:
    """The ``max_length`` of one of :class:`pipeline.models.Event`'s text columns."""
    column = Event._meta.get_field(field)
    assert isinstance(column, models.CharField) and column.max_length is not None
    return int(column.max_length)


#: The longest event type, target type, target id and idempotency key: Event's columns.
_EVENT_TYPE_MAX, _TARGET_TYPE_MAX, _TARGET_ID_MAX, _IDEMPOTENCY_KEY_MAX = map(
    _longest, ("event_type", "target_type", "target_id", "idempotency_key")
)


def _target(target: Any) -> tuple[str, str]:
    """``(target_type, target_id)`` of a saved model instance or a ``(type, id)`` pair: a type of 1 to 100
    characters, an id (text or an int) of 1 to 64; raises ``InvalidTarget`` otherwise."""
    if target is None:
        return "", ""
    if isinstance(target, models.Model):
        if target.pk is None:
            raise InvalidTarget(f"target {shown(target)} is not saved: it has no primary key.")
        kind, ident = target._meta.label_lower, target.pk
    elif isinstance(target, tuple) and len(target) == 2:
        kind, ident = target
    else:
        raise InvalidTarget(f"target must be a model instance or a (type, id) pair, not {shown(target)}.")
    if isinstance(ident, int) and not isinstance(ident, bool) and -(10**63) < ident < 10**64:  # 64 characters
        ident = str(ident)
    for part, value, longest in (("type", kind, _TARGET_TYPE_MAX), ("id", ident, _TARGET_ID_MAX)):
        if not isinstance(value, str) or not 0 < len(value) <= longest or not storable(value):
            raise InvalidTarget(
                f"target's {part} must be text of 1 to {longest} characters without NUL or a lone surrogate"
                f"{' (or an int)' if part == 'id' else ''}, not {shown(value)}."
            )
    return kind, ident


def _validate_idempotency_key(key: Any) -> None:
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _IDEMPOTENCY_KEY_MAX or not storable(key)):
        raise InvalidIdempotencyKey(
            f"idempotency_key must be text of 1 to {_IDEMPOTENCY_KEY_MAX} characters without NUL or a lone "
            f"surrogate, not {shown(key)}."
        )


def _validate_occurred_at(occurred_at: Any) -> datetime:
    """``occurred_at`` (an aware datetime) in UTC, or now; raises ``InvalidOccurredAt`` otherwise."""
    if occurred_at is None:
        return timezone.now()
    if not isinstance(occurred_at, datetime) or timezone.is_naive(occurred_at):
        raise InvalidOccurredAt(f"occurred_at must be an aware datetime (with a time zone), not {shown(occurred_at)}.")
    try:
        return occurred_at.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01 00:00+05:00 is in year 0 in UTC
        raise InvalidOccurredAt(f"occurred_at {shown(occurred_at)} is out of range in UTC.") from exc


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
    transaction commits, and a rollback notifies no one. The broker is
    reached from a thread of this process (the doorbell,
    :data:`pipeline.publishing.ringer`), so the call costs the checks and one
    ``INSERT``; a broker outage does not raise: the event waits in the
    database and the celery beat sweep rings for it later.

    Every argument's form is checked before the database is read (for the
    users and role named), the same way on PostgreSQL and SQLite. Raises (all
    :class:`~pipeline.exceptions.EventError`, nothing queued):

    - ``UnknownEventType``: ``event_type`` is not a string in the catalogue;
    - ``InvalidAudience``: the audience is not an ``Audience`` or an iterable
      of user ids (1 to :func:`~pipeline.audiences.max_user_id`) or saved users, is empty, names unknown
      users or an unknown role; or ``include_actor`` is not a bool;
    - ``InvalidActor``: not ``None``, a saved user or the id of a user;
    - ``InvalidTarget``: not ``None``, a saved model instance or a
      ``(type, id)`` pair of 1 to 100 and 1 to 64 characters;
    - ``InvalidEventData``: ``data`` is not a JSON object with string keys,
      is not JSON-serialisable (``nan``, a set, ...), is over the byte limit
      or nests deeper than :data:`MAX_DATA_DEPTH` levels, or holds NUL or a
      lone surrogate;
    - ``InvalidIdempotencyKey``: not text of 1 to 255 characters;
    - ``InvalidOccurredAt``: not an aware datetime within range in UTC;
    - ``IdempotencyConflict``: the key was used for different content.

    Text never holds NUL (PostgreSQL refuses it; SQLite would store it) or a
    lone surrogate (not UTF-8).
    """
    if not isinstance(event_type, str):
        raise UnknownEventType(f"event_type must be a string, not {type(event_type).__name__}.")
    if len(event_type) > _EVENT_TYPE_MAX:  # no close match to look for (difflib's time grows with the length)
        raise UnknownEventType(f"Unknown event type {shown(event_type)}: longer than {_EVENT_TYPE_MAX} characters.")
    spec = catalogue.get(event_type)
    if not isinstance(include_actor, bool):
        raise InvalidAudience(f"include_actor must be True or False, not {shown(include_actor)}.")
    audience_ = _validate_audience(audience)
    actor_id = _validate_actor(actor)
    payload = _validate_data(data)
    target_type, target_id = _target(target)
    _validate_idempotency_key(idempotency_key)
    occurred_at = _validate_occurred_at(occurred_at)
    named = sorted({*audience_.user_ids, *([actor_id] if actor_id is not None else [])})
    # The users check goes into the INSERT itself (one statement) when it can: no idempotency key, no role.
    folded = _users_query(named) if named and idempotency_key is None and audience_.kind != "role" else None
    if folded is None:
        _check_users(audience_, actor_id)

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

    if idempotency_key is None:
        # One INSERT (autocommit, or the caller's transaction) that also checks the users it names; the
        # doorbell is rung after the commit, from a thread of this process (pipeline.publishing.ringer), so
        # the caller does not wait for Redis. Its SQL is built once per process (pipeline.bulk).
        event_id = uuid.uuid4()
        row = (event_id, *fields.values(), occurred_at)
        insert = partial(
            rows_insert, Event, columns=("id", *fields, "occurred_at"), rows=[row], using=router.db_for_write(Event)
        )
        if folded is None:
            insert()
        else:
            users_sql, users_params = folded
            known_sql = f"(SELECT COUNT(*) FROM ({users_sql}) AS named) = %s"  # noqa: S608 - the ORM's SQL
            every_user_known = (known_sql, [*users_params, len(named)])
            if not insert(when=every_user_known):
                _check_users(audience_, actor_id)  # raises, naming the unknown ids
                insert()  # they became users in between
        transaction.on_commit(publishing.ringer.request)
        return event_id
    try:
        with transaction.atomic():  # a savepoint: a concurrent call with the same key may win the race
            event = Event.objects.create(**fields, idempotency_key=idempotency_key, occurred_at=occurred_at)
            transaction.on_commit(publishing.ringer.request)
    except IntegrityError:
        # A concurrent call with the same key committed first.
        existing = _event_for_key(idempotency_key, fields)
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
