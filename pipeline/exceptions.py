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
    "NotiflowError",
    "UnknownDeliveryMethod",
    "UnknownEventType",
]


class NotiflowError(Exception):
    """Base class of every notiflow error."""


class EventError(NotiflowError, ValueError):
    """The event passed to ``emit_event()`` is invalid; nothing was queued."""


class UnknownEventType(EventError):
    """The event type is not in the catalogue (``NOTIFLOW["EVENT_TYPES"]``)."""


class InvalidAudience(EventError):
    """The audience is empty, malformed, or names users that do not exist."""


class InvalidEventData(EventError):
    """The data is not a JSON object, not JSON-serialisable, or too large."""


class InvalidActor(EventError):
    """The actor is neither ``None``, a user, nor the id of an existing user."""


class ClaimLost(NotiflowError):
    """A send task no longer holds the claim on a delivery (its lease lapsed and another task took it over)."""
