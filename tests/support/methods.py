"""Delivery methods that exist only in the tests: a third-party one that appends each message to a JSON-lines
file, scripted ones, and a WebSocket push that loses pushes on purpose."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import ClassVar

from django.core.exceptions import ImproperlyConfigured

from delivery.base import DeliveryMethod, DeliveryResult, Message, Outcome
from delivery.websocket import WebSocketMethod


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


class DroppingWebSocketMethod(WebSocketMethod):
    """The WebSocket push, losing every :attr:`every`-th message of this process's stream of sends on purpose.

    A dropped message is reported sent (the database says it was pushed) but
    never reaches the channel layer, as a push the Redis channel layer lost
    (at-most-once) would: the relay must notice the gap in ``push_seq`` and
    fill it from the database. The count runs across ``send()`` calls, per
    worker process (each batch counted in cursor order). Each drop is
    appended to the JSON-lines file OPTIONS ``path``, if given, as
    ``{"recipient", "notification", "cursor", "push_seq", "pid"}``, so that a
    test can tell which pushes were lost.
    """

    key = "websocket_lossy"
    every: ClassVar[int] = 5
    counted: ClassVar[int] = 0
    _lock = threading.Lock()

    def send(self, batch: Sequence[Message]) -> list[DeliveryResult]:
        order = sorted(range(len(batch)), key=lambda i: (batch[i].cursor is None, batch[i].cursor or 0, i))
        kept: list[int] = []
        dropped: list[Message] = []
        with self._lock:
            for index in order:
                DroppingWebSocketMethod.counted += 1
                if DroppingWebSocketMethod.counted % self.every == 0:
                    dropped.append(batch[index])
                else:
                    kept.append(index)
        self._record(dropped)
        results = [DeliveryResult.sent() for _ in batch]  # a dropped push is reported sent all the same
        if kept:
            kept.sort()
            for index, result in zip(kept, super().send([batch[i] for i in kept]), strict=True):
                results[index] = result
        return results

    def _record(self, dropped: Sequence[Message]) -> None:
        path = self.options.get("path")
        if not path or not dropped:
            return
        with open(path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            for m in dropped:
                row = {"recipient": m.recipient.id, "notification": m.notification_id, "cursor": m.cursor}
                f.write(json.dumps({**row, "push_seq": m.push_seq, "pid": os.getpid()}) + "\n")
