"""The drain's hand-over: after it lets the doorbell go, a drain that finds more events keeps going only if
no emitter rang a new drain meanwhile, so that two drains never run side by side for long."""

from __future__ import annotations

import pytest

from pipeline import drain, processing, publishing


@pytest.fixture
def scripted(monkeypatch, settings):
    """Batches of 1 event or none, in the order a test gives them; the doorbell's calls, recorded."""
    settings.NOTIFLOW = {**settings.NOTIFLOW, "DRAIN_LINGER": 0.01}
    state = {"batches": [], "taken": [], "calls": [], "given": [], "written": []}

    def take(*, records=()) -> processing.Batch:
        state["calls"].append("batch")
        state["given"].append(list(records))
        scripted = state["batches"].pop(0) if state["batches"] else 0
        return scripted if isinstance(scripted, processing.Batch) else processing.Batch(events=scripted)

    def inline_send(*, batch, task_id="", records=None):
        records.append(f"record of batch {len(state['given'])}")  # what the drain must write later
        return {}

    def records_write(records, *, unflushed=False):
        state["calls"].append("write")
        state["written"].append(list(records))

    def doorbell(name, result=None):
        def call(*args, **kwargs):
            state["calls"].append(name)
            return result() if callable(result) else result

        return call

    monkeypatch.setattr(processing, "events_process_isolating", take)
    monkeypatch.setattr(processing, "inline_send", inline_send)
    monkeypatch.setattr(drain, "records_write", records_write)
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
    assert scripted["calls"][-4:] == ["release", "batch", "take", "write"]  # stopped: the new drain takes the rest
    assert scripted["written"] == [["record of batch 1"], ["record of batch 2"]]  # no nudge; at the end


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
    assert calls == ["hold", "batch", "batch", "wait", "write", "wait", "release", "batch"]
    assert counts == {"batches": 2, "events": 51, "notifications": 0}


def test_a_batch_s_send_records_go_with_the_next_batch_or_are_written_when_no_nudge_comes(scripted, monkeypatch):
    """The records of a batch's pushes are handed to the next batch's transaction when a nudge comes within
    RECORDS_WAIT; when none comes, they are written on their own before the drain waits on; nothing is left
    unwritten when it ends."""
    scripted["batches"] = [1, 1, 0]  # one; woken: one; not woken: let go, none
    wakes, timeouts = [True], []

    def wait(timeout):
        scripted["calls"].append("wait")
        timeouts.append(timeout)
        return wakes.pop(0) if wakes else False

    monkeypatch.setattr(publishing, "doorbell_wait", wait)

    drain.events_drain_run()

    assert scripted["given"] == [[], ["record of batch 1"], []]
    assert scripted["written"] == [["record of batch 2"]]
    assert timeouts[0] <= drain.RECORDS_WAIT and timeouts[1] <= drain.RECORDS_WAIT  # records were waiting
    assert scripted["calls"].index("write") < scripted["calls"].index("release")
