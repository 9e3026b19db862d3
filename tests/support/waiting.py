from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(produce: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Call ``produce`` until it returns something truthy; return it, or the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    value = produce()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = produce()
    return value
