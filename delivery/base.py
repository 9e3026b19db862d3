"""The delivery method interface.

A delivery method turns a batch of :class:`Message` into one
:class:`DeliveryResult` each, in order, so that the caller retries only what
failed. ``send()`` may yield the results one by one: the caller records each
as it arrives, so a worker that dies in the middle of a batch re-sends at most
the message it was sending (the shape follows kombu's transports and Channels' layers: a small
base class, resolved from settings by :mod:`delivery.registry`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Recipient:
    """Who a message goes to. ``email`` may be empty."""

    id: int
    username: str
    email: str


@dataclass(frozen=True)
class Message:
    """One thing to send, JSON-safe and frozen; never a model instance.

    ``template_dir`` is the template folder for rendering (for example
    ``notiflow/events/critique_created`` or ``notiflow/digest``) and
    ``context`` the JSON-safe template context. ``delivery_id`` is ``None``
    for a message that stands for several deliveries (a digest).
    """

    delivery_id: int | None
    notification_id: int | None
    event_type: str
    category: str
    recipient: Recipient
    title: str
    body: str
    template_dir: str
    context: Mapping[str, Any] = field(default_factory=dict)
    cursor: int | None = None
    #: The notification as the REST API shows it: what a WebSocket push carries.
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: The same on every attempt (``delivery-<id>``, ``digest-<window id>``): a resend after a
    #: crash carries the same key (the email ``Message-ID``), so receivers can deduplicate.
    key: str = ""
    #: The notification's position in its recipient's push stream (1, 2, 3, ...), for a ``streamed`` method;
    #: ``None`` for others and for digests.
    push_seq: int | None = None


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient: trying again may help
    FAILED = "failed"  # permanent: trying again will not help
    SKIPPED = "skipped"  # nothing to send (a push to a user with no open socket): not a failure


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of sending one message. ``retry_after`` is in seconds."""

    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None

    @classmethod
    def sent(cls) -> DeliveryResult:
        return cls(Outcome.SENT)

    @classmethod
    def retry(cls, reason: str, *, after: float | None = None) -> DeliveryResult:
        return cls(Outcome.RETRY, reason, after)

    @classmethod
    def failed(cls, reason: str) -> DeliveryResult:
        return cls(Outcome.FAILED, reason)

    @classmethod
    def skipped(cls, reason: str) -> DeliveryResult:
        return cls(Outcome.SKIPPED, reason)


class DeliveryMethod:
    """Base class of delivery methods.

    Subclasses set ``key`` and implement :meth:`send`. ``options`` is the
    ``OPTIONS`` dict of the method's entry in ``NOTIFLOW["DELIVERY_METHODS"]``.
    """

    key: ClassVar[str]
    #: True when a digest frequency may replace immediate sending (email).
    supports_digest: ClassVar[bool] = False
    #: True when a batch is cheap and quick to send (milliseconds, no outside provider): the worker that stores
    #: the notifications sends it right after the commit, with no task of its own (the WebSocket push). Otherwise
    #: the deliveries are queued on the method's own queue, so a slow provider never holds up the pipeline.
    send_inline: ClassVar[bool] = False
    #: True when its sends make up the per-recipient push stream that sockets receive in order (the WebSocket
    #: push): the pipeline numbers each recipient's notifications it will send (``Message.push_seq``), so the
    #: relay can tell a push that is late or lost from one that was never meant for the socket.
    streamed: ClassVar[bool] = False

    def __init__(self, *, alias: str, options: Mapping[str, Any] | None = None) -> None:
        self.alias = alias
        self.options: Mapping[str, Any] = dict(options or {})

    #: The reason recorded on a delivery skipped because :meth:`reachable` left its recipient out.
    unreachable_reason: ClassVar[str] = "recipient not reachable"

    def reachable(self, recipient_ids: Sequence[int]) -> set[int] | None:
        """Which of ``recipient_ids`` (user ids) this method can reach now; ``None``: all of them, or it cannot
        tell. Must not raise.

        The pipeline asks before it builds the messages of an inline batch
        (``send_inline``): it builds and sends none for the others, whose
        deliveries it records ``skipped`` with :attr:`unreachable_reason`.
        """
        return None

    def send(self, batch: Sequence[Message]) -> Iterable[DeliveryResult]:
        """Send every message; return or yield one result per message, in order.

        Must not raise for one message's failure: classify it as
        ``DeliveryResult.retry`` (transient) or ``DeliveryResult.failed``
        (permanent). If it raises anyway, the messages without a result are
        dead-lettered with the traceback.
        """
        raise NotImplementedError

    def check(self) -> None:
        """Optional: raise ``ImproperlyConfigured`` if the options are unusable."""
