"""The drain's hand-over: after it lets the doorbell go, a drain that finds more events keeps going only if
no emitter rang a new drain meanwhile, so that two drains never run side by side for long."""

from __future__ import annotations

import pytest

from pipeline import drain, processing, publishing


@pytest.fixture
def scripted(monkeypatch, settings):
    """Batches of 1 event or none, in the order a test gives them; the doorbell's calls, recorded."""
    settings.NOTIFLOW = {**settings.NOTIFLOW, "DRAIN_LINGER": 0.01}
    state = {"batches": [], "taken": [], "calls": []}

    def take() -> processing.Batch:
        state["calls"].append("batch")
        scripted = state["batches"].pop(0) if state["batches"] else 0
        return scripted if isinstance(scripted, processing.Batch) else processing.Batch(events=scripted)

    def doorbell(name, result=None):
        def call(*args, **kwargs):
            state["calls"].append(name)
            return result() if callable(result) else result

        return call

    monkeypatch.setattr(processing, "events_process_isolating", take)
    monkeypatch.setattr(processing, "inline_send", lambda *, batch, task_id="": {})
    monkeypatch.setattr(publishing, "doorbell_hold", doorbell("hold"))
    monkeypatch.setattr(publishing, "doorbell_wait", doorbell("wait", False))
    monkeypatch.setattr(publishing, "doorbell_release", doorbell("release"))
    monkeypatch.setattr(publishing, "doorbell_take", doorbell("take", lambda: state["taken"].pop(0)))
    return state


def test_a_drain_that_finds_events_after_letting_go_stops_if_a_new_drain_was_rung(scripted):
    scripted["batches"] = [1, 1]  # one batch (not full: linger, let go), then one more found on the last look
    scripted["taken"] = [False]  # an emitter rang the doorbell meanwhile

    counts = drain.events_drain_run()

    assert counts["batches"] == 2
    assert scripted["calls"][-3:] == ["release", "batch", "take"]  # stopped: the new drain takes the rest


def test_a_drain_that_takes_the_doorbell_back_goes_on(scripted):
    scripted["batches"] = [0, 1, 0, 0]  # none, let go, one found, then none and none: it ends
    scripted["taken"] = [True]

    counts = drain.events_drain_run()

    assert counts["batches"] == 1
    assert scripted["calls"].count("release") == 2
    assert scripted["calls"][-2:] == ["release", "batch"]


@pytest.mark.parametrize(("ttl", "wait_seconds", "holds"), [(10.0, 0.0, 1), (0.02, 0.015, 3)])
def test_a_woken_drain_refreshes_the_doorbell_only_once_half_its_ttl_has_passed(
    scripted, settings, monkeypatch, ttl, wait_seconds, holds
):
    """Two wake-ups: with a 10 s doorbell the start's hold covers them (one Redis call less per woken batch);
    with one of 20 ms, 15 ms per wait is past half of it, and each wake-up refreshes it."""
    import time

    settings.NOTIFLOW = {**settings.NOTIFLOW, "DOORBELL_TTL": ttl}
    scripted["batches"] = [0, 1, 1, 0, 0]  # none; woken: one; woken: one; none, and none after letting go
    wakes = [True, True]

    def wait(timeout):
        scripted["calls"].append("wait")
        if wakes:
            time.sleep(wait_seconds)
            return wakes.pop(0)
        return False

    monkeypatch.setattr(publishing, "doorbell_wait", wait)

    counts = drain.events_drain_run()

    assert counts["batches"] == 2
    assert scripted["calls"].count("hold") == holds
    assert scripted["calls"][0] == "hold"


def test_after_a_batch_that_was_not_full_the_drain_waits_for_a_nudge_instead_of_looking_again(scripted):
    """A full batch (``more``) is followed by the next at once; one that was not full by the linger, whose
    nudges announce every event committed after its take: no empty batch (a transaction) in between."""
    scripted["batches"] = [processing.Batch(events=50, more=True), 1]

    counts = drain.events_drain_run()

    calls = scripted["calls"]
    calls = [c for i, c in enumerate(calls) if not (c == "wait" and calls[i - 1] == "wait")]  # the linger's
    assert calls == ["hold", "batch", "batch", "wait", "release", "batch"]
    assert counts == {"batches": 2, "events": 51, "notifications": 0}
