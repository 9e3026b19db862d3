"""The doorbell ringer: emit_event() hands the ring to a thread; requests made during a ring coalesce."""

from __future__ import annotations

import threading
import time

from pipeline import publishing


def test_requests_made_while_a_ring_runs_make_one_more_ring_not_one_each():
    rings: list[float] = []
    started = threading.Event()

    def slow_ring() -> bool:
        started.set()
        time.sleep(0.05)  # a slow broker round trip
        rings.append(time.monotonic())
        return True

    ringer = publishing._Ringer(ring=slow_ring)
    ringer.request()
    assert started.wait(2)
    for _ in range(50):  # 50 events committed while the first ring is on the wire
        ringer.request()
    ringer.flush()
    deadline = time.monotonic() + 2
    while len(rings) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rings) == 2  # the first, then one for all 50
    ringer.flush()
    assert len(rings) == 2  # nothing left pending


def test_a_request_returns_at_once_whatever_the_broker_does():
    ringer = publishing._Ringer(ring=lambda: time.sleep(1.0))
    begun = time.perf_counter()
    ringer.request()
    assert time.perf_counter() - begun < 0.1
