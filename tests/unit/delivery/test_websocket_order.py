"""One batch of pushes: concurrent across recipients, one after the other in cursor order for each."""

from __future__ import annotations

import asyncio
import random

import pytest

from delivery import websocket
from delivery.base import Message, Outcome, Recipient


class SlowLayer:
    """A channel layer whose ``group_send`` takes a random few milliseconds; records each send as it ends."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, int]] = []
        self.open = 0
        self.most_open = 0

    async def group_send(self, group: str, message: dict) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        await asyncio.sleep(random.uniform(0.001, 0.01))
        self.open -= 1
        self.ended.append((group, message["notification"]["cursor"]))


def push(user_id: int, cursor: int) -> Message:
    recipient = Recipient(id=user_id, username=f"u{user_id}", email="")
    payload = {"cursor": cursor}
    return Message(None, None, "t", "c", recipient, "title", "", "d", cursor=cursor, payload=payload)


@pytest.fixture
def layer(monkeypatch):
    fake = SlowLayer()
    monkeypatch.setattr(websocket, "get_channel_layer", lambda alias="default": fake)
    return fake


def test_each_recipients_pushes_end_in_cursor_order_while_recipients_go_concurrently(layer):
    random.seed(7)
    batch = [push(user, cursor) for cursor in (3, 1, 2, 5, 4) for user in (1, 2, 3)]  # not in cursor order

    results = websocket.WebSocketMethod(alias="websocket").send(batch)

    assert [r.outcome for r in results] == [Outcome.SENT] * len(batch)
    for user in (1, 2, 3):
        assert [cursor for group, cursor in layer.ended if group == f"user.{user}"] == [1, 2, 3, 4, 5]
    assert layer.most_open == 3  # one send in flight per recipient at a time, all recipients at once
