"""A third-party delivery method that exists only in the tests: it appends each message to a JSON-lines file."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Sequence
from dataclasses import asdict

from django.core.exceptions import ImproperlyConfigured

from delivery.base import DeliveryMethod, DeliveryResult, Message


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
