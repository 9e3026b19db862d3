from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from webapp.realtime.client import Listener, ListenerGroup
from webapp.tokens import token_issue

pytestmark = pytest.mark.integration


@pytest.fixture
def connect(stack: Any) -> Iterator[Callable[..., dict[str, Listener]]]:
    """``connect(bob=user, carol=user)``: real WebSocket clients, connected and greeted, closed after the test."""
    groups: list[ListenerGroup] = []

    def _connect(**named_users: Any) -> dict[str, Listener]:
        listeners = {
            name: Listener(
                name=name, url=f"{stack.ws_url}/ws/notifications/", token=token_issue(user_id=user.pk, ttl=300)
            )
            for name, user in named_users.items()
        }
        group = ListenerGroup(list(listeners.values()))
        group.start()
        groups.append(group)
        return listeners

    yield _connect
    for group in groups:
        group.stop()
