"""The drain loop that ``notiflow.events_drain`` runs: batches of events, pushed, their other sends gathered.

A drain takes batches (:func:`pipeline.processing.events_process_isolating`)
while events are pending, holding the doorbell (:mod:`pipeline.publishing`).
When it finds none, it lingers up to ``DRAIN_LINGER`` seconds, woken at once
by an emitter's nudge, before it lets the doorbell go: under a steady trickle
of events (tens a second) one drain takes them all as they come, instead of
one broker message and one task per event. A lone event still goes out at
once: the first batch is taken as soon as the drain starts. After a batch
that was not full, the drain does not look again but waits for a nudge:
an event committed after that batch's take was rung after its commit, and
a drain that holds the doorbell is nudged by every ring (on PostgreSQL, the
empty look cost BEGIN, the advisory lock, the take and COMMIT after each
batch of a trickle). Having let the
doorbell go, it looks for events once more; if it finds some, it goes on
only if it can take the doorbell back: if an emitter rang it meanwhile, the
drain that ring queued takes them. Two drains side by side (one pool
process each) made each other wait for the database's write lock and left
no process to send emails: at 92 events/s on SQLite the p99 emit → push was
78 ms and the p50 emit → email 3.7 s; without the overlap 28 ms and 0.12 s.

Each batch's WebSocket deliveries are pushed right after its commit. Its
queued deliveries (email) are gathered across batches and sent to their
queues together: once a method has ``DELIVERY_BATCH_SIZE`` of them, once the
first has waited ``DRAIN_LINGER``, or when the drain ends; so an email task
carries up to a hundred emails over one SMTP connection, not one or two. A
drain that dies before sending them on leaves them ``queued`` in the
database, for the recovery sweep.

What a batch's pushes did (sent, or skipped for want of a socket) is written
by the next batch's transaction (:func:`pipeline.processing.events_process`'s
``records``; on PostgreSQL part of the statement that stores it), not by
statements of their own after the pushes: one round trip and one commit
fewer per batch of a steady stream. A drain that waits for a nudge writes
them after ``RECORDS_WAIT`` seconds without one, and before it ends. A
drain that dies first leaves those deliveries ``queued``, for the recovery
sweep (a socket drops a push it has had).
"""

from __future__ import annotations

import time
from collections import defaultdict

from pipeline import processing, publishing
from pipeline.conf import notiflow_settings
from pipeline.storing import SendRecord, records_write

#: Seconds a drain waiting for a nudge keeps its last pushes' records for the next batch before it writes them
#: on their own: longer than the gap between events of a steady stream (5 ms at 200 events/s), short beside
#: ``RECOVER_AFTER``.
RECORDS_WAIT = 0.02


class _Gathered:
    """Queued deliveries of successive batches, sent to their queues together."""

    def __init__(self, *, size: int, wait: float) -> None:
        self.size, self.wait = size, wait
        self.send: dict[str, list[int]] = defaultdict(list)
        self.digest: list[int] = []
        self.since: float | None = None

    def add(self, *, send: dict[str, list[int]], digest: list[int]) -> None:
        for method, ids in send.items():
            self.send[method].extend(ids)
        self.digest.extend(digest)
        if self.since is None and (self.digest or any(self.send.values())):
            self.since = time.monotonic()

    def due(self) -> bool:
        if self.since is None:
            return False
        full = len(self.digest) >= self.size or any(len(ids) >= self.size for ids in self.send.values())
        return full or time.monotonic() - self.since >= self.wait

    def flush(self) -> None:
        if self.since is not None:
            publishing.deliveries_dispatch(send=dict(self.send), digest=self.digest)
        self.send, self.digest, self.since = defaultdict(list), [], None


def events_drain_run() -> dict[str, int]:
    """Drain pending events until none comes for ``DRAIN_LINGER`` seconds or ``DRAIN_BUDGET`` seconds have
    passed (then ring a successor and return). Returns ``{"batches": n, "events": n, "notifications": n}``."""
    counts = {"batches": 0, "events": 0, "notifications": 0}
    deadline = time.monotonic() + float(notiflow_settings.DRAIN_BUDGET)
    linger = float(notiflow_settings.DRAIN_LINGER)
    gathered = _Gathered(size=int(notiflow_settings.DELIVERY_BATCH_SIZE), wait=linger)
    # The doorbell's expiry is refreshed when a woken drain has held it for half of DOORBELL_TTL, not at every
    # wake-up: one Redis round trip less before each batch of a trickle of events.
    refresh_after = float(notiflow_settings.DOORBELL_TTL) / 2
    records: list[SendRecord] = []
    try:
        publishing.doorbell_hold()
        held_at = time.monotonic()
        while True:
            batch = _batch_run(counts, gathered, records)
            if batch and time.monotonic() > deadline:
                publishing.events_ring(force=True)  # work may be left: a successor takes it
                return counts
            if batch.more:
                continue
            # No event pending, or none but those of a batch that was not full: every event committed after
            # that batch's take rang the doorbell this drain holds, so a nudge is waiting for it. Linger for
            # the next ones, holding the doorbell; looking again at once would cost a transaction that finds
            # nothing after each batch of a trickle.
            idle_until = min(time.monotonic() + linger, deadline)
            woken = False
            while not woken and time.monotonic() < idle_until:
                if gathered.due():
                    gathered.flush()
                wait = max(0.001, idle_until - time.monotonic())
                woken = publishing.doorbell_wait(min(wait, RECORDS_WAIT) if records else wait)
                if not woken and records:
                    _records_flush(records)
            if woken:
                if time.monotonic() - held_at > refresh_after:
                    publishing.doorbell_hold()
                    held_at = time.monotonic()
                continue
            gathered.flush()
            # Let go of the doorbell, then look once more: an emitter that found it held relies on this look.
            publishing.doorbell_release()
            if not _batch_run(counts, gathered, records):
                return counts
            if not publishing.doorbell_take():
                return counts  # an emitter rang a new drain meanwhile: it takes the rest (no two drains at once)
            held_at = time.monotonic()
    finally:
        try:
            _records_flush(records)
        finally:
            gathered.flush()


def _records_flush(records: list[SendRecord]) -> None:
    """Write ``records`` on their own (each statement's commit unflushed) and empty the list."""
    if records:
        records_write(records, unflushed=True)
        records.clear()


def _batch_run(counts: dict[str, int], gathered: _Gathered, records: list[SendRecord]) -> processing.Batch:
    """Process one batch, writing ``records`` (the last batch's sends) with it; push it after its commit,
    leaving its own records in ``records``; gather its other deliveries; add it to ``counts``."""
    batch = processing.events_process_isolating(records=records)
    records.clear()  # written with the batch (or on their own, if it was isolated)
    if batch or batch.dead_lettered:
        retry = processing.inline_send(batch=batch, records=records)
        gathered.add(send={**batch.queued, **retry}, digest=batch.digest)
        if gathered.due():
            gathered.flush()
        counts["batches"] += 1
        counts["events"] += batch.events
        counts["notifications"] += batch.notifications
    return batch
