"""Errors raised by notiflow's public API.

Every error a caller of :func:`pipeline.emit_event` can see derives from
:class:`EventError`, itself a :class:`ValueError`, so that
``except EventError`` catches all bad input and nothing else. When one is
raised, nothing has been written and nothing has been queued.
"""

from __future__ import annotations

from delivery.registry import UnknownDeliveryMethod

__all__ = [
    "ClaimLost",
    "EventError",
    "InvalidActor",
    "InvalidAudience",
    "InvalidEventData",
    "InvalidIdempotencyKey",
    "InvalidOccurredAt",
    "InvalidTarget",
    "NotiflowError",
    "UnknownDeliveryMethod",
    "UnknownEventType",
]


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message about a bad argument: never raises for
    an int of more than 4,300 digits (``repr()`` does) and never quotes a 64 KiB string whole."""
    try:
        text = repr(value)
    except ValueError:  # Exceeds the limit (4300 digits) for integer string conversion
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class NotiflowError(Exception):
    """Base class of every notiflow error."""


class EventError(NotiflowError, ValueError):
    """The event passed to ``emit_event()`` is invalid; nothing was queued."""


class UnknownEventType(EventError):
    """The event type is not in the catalogue (``NOTIFLOW["EVENT_TYPES"]``)."""


class InvalidAudience(EventError):
    """The audience is empty, malformed, or names users that do not exist (or ``include_actor`` is not a bool)."""


class InvalidEventData(EventError):
    """The data is not a JSON object, not JSON-serialisable, too large or too deep, has a key that is not a
    string, or holds text a database cannot store (NUL, a lone surrogate)."""


class InvalidActor(EventError):
    """The actor is neither ``None``, a user, nor the id of an existing user."""


class InvalidTarget(EventError):
    """The target is neither ``None``, a saved model instance, nor a ``(type, id)`` pair that fits its columns."""


class InvalidIdempotencyKey(EventError):
    """The idempotency key is not text of 1 to 255 characters that a database can store."""


class InvalidOccurredAt(EventError):
    """``occurred_at`` is not an aware datetime (or is out of range in UTC)."""


class ClaimLost(NotiflowError):
    """A send task no longer holds the claim on a delivery (its lease lapsed and another task took it over)."""
