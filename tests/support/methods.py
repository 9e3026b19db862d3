"""A third-party delivery method that exists only in the tests: it appends each message to a JSON-lines file."""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import ClassVar

from django.core.exceptions import ImproperlyConfigured

from delivery.base import DeliveryMethod, DeliveryResult, Message, Outcome


class RecordingMethod(DeliveryMethod):
    key = "recording"

    def check(self) -> None:
        if "path" not in self.options:
            raise ImproperlyConfigured("RecordingMethod needs OPTIONS['path'].")

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        with open(self.options["path"], "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            for message in batch:
                f.write(json.dumps(asdict(message), default=str) + "\n")
        return [DeliveryResult.sent() for _ in batch]


class ScriptedMethod(DeliveryMethod):
    """A method whose outcomes a test scripts: each message takes ``delay`` seconds, gets the next outcome of
    ``script`` (sent once it is empty), and ``before(delivery_id)`` runs first; ``sent`` lists the delivery ids
    it sent. Class attributes, reset by the test that uses it."""

    key = "scripted"
    script: ClassVar[list[DeliveryResult]] = []
    delay: ClassVar[float] = 0.0
    sent: ClassVar[list[int]] = []
    before: ClassVar[Callable[[int], None] | None] = None

    def send(self, batch: Sequence[Message]) -> Iterator[DeliveryResult]:
        for message in batch:
            assert message.delivery_id is not None
            if ScriptedMethod.before is not None:
                ScriptedMethod.before(message.delivery_id)
            time.sleep(self.delay)
            outcome = self.script.pop(0) if self.script else DeliveryResult.sent()
            if outcome.outcome is Outcome.SENT:
                self.sent.append(message.delivery_id)
            yield outcome


class ReachableMethod(DeliveryMethod):
    """An inline method (``send_inline``) whose reach a test sets: ``online`` (user ids; ``None``: everyone,
    the method cannot tell); ``sent`` lists the messages it sent. Class attributes, reset by the test."""

    key = "reachable"
    send_inline = True
    unreachable_reason = "offline (test)"
    online: ClassVar[set[int] | None] = None
    sent: ClassVar[list[Message]] = []

    def reachable(self, recipient_ids: Sequence[int]) -> set[int] | None:
        return None if self.online is None else set(recipient_ids) & self.online

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        ReachableMethod.sent.extend(batch)
        return [DeliveryResult.sent() for _ in batch]
