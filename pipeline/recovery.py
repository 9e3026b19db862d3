"""The recovery sweep: finding work the broker lost, so that nothing is lost.

The database is the truth about what is due; a broker message is only a
prompt to do it. A message can be lost: a worker killed with SIGKILL holds
its prefetched and delayed (retry) messages until the broker's visibility
timeout (an hour by default), a Redis that dies loses up to a second of its
AOF, and a publish that fails in the middle of a chain (broker down) ends the
chain. celery beat runs ``notiflow.pipeline_recover`` every
``SWEEP_INTERVAL`` seconds; it claims work left untouched for
``RECOVER_AFTER`` seconds and queues it again:

- events left unprocessed (``completed_at`` unset, not dead-lettered): a
  drain is rung for them (the drain's transaction takes them, so none is
  ever half-taken);
- a delivery ``queued`` or ``retrying`` past its ``next_attempt_at``, not
  claimed by a live task;
- a digest delivery not yet in a window, and a digest window left ``sending``.

It only touches a queue that is empty: while a queue has a backlog, the
message may still be waiting in it, and re-queueing would only add load to a
busy queue. Work queued twice is harmless: every step is idempotent and every
send claims its deliveries first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from delivery.registry import methods
from pipeline.conf import notiflow_settings
from pipeline.models import Delivery, DigestWindow
from pipeline.processing import events_pending
from pipeline.services import SENDABLE, claimable


@dataclass
class StaleWork:
    """Work claimed by :func:`stale_work_claim`, to be queued again."""

    events: list[str] = field(default_factory=list)  # ids of events waiting for a drain
    deliveries: dict[str, list[int]] = field(default_factory=dict)  # method → delivery ids
    digest_appends: list[int] = field(default_factory=list)  # delivery ids
    windows: list[int] = field(default_factory=list)  # digest window ids

    def counts(self) -> dict[str, int]:
        return {
            "events": len(self.events),
            "deliveries": sum(len(ids) for ids in self.deliveries.values()),
            "digest_appends": len(self.digest_appends),
            "windows": len(self.windows),
        }


def stale_work_claim(*, now: datetime, idle: Callable[[str], bool], limit: int = 1000) -> StaleWork:
    """Claim stale work on the queues for which ``idle(queue)`` is true; at most ``limit`` items of each kind.

    Claiming stamps the item as (re)queued at ``now`` (a conditional update),
    so two sweeps running at once never both take it, and the next sweep
    leaves it alone for another ``RECOVER_AFTER`` seconds.
    """
    cutoff = now - timedelta(seconds=notiflow_settings.RECOVER_AFTER)
    found = StaleWork()

    if idle("events"):
        # Events are claimed by the drain's own transaction: none is ever half-taken. Waiting ones get a drain.
        found.events = [
            str(pk) for pk in events_pending().filter(created_at__lt=cutoff).values_list("pk", flat=True)[:limit]
        ]

    unclaimed = claimable()
    for method in methods.aliases():
        if not idle(methods.queue(method)):
            continue
        due = Delivery.objects.filter(method=method, status__in=SENDABLE, digest="", next_attempt_at__lt=cutoff)
        ids = list(due.filter(unclaimed).order_by("pk").values_list("pk", flat=True)[:limit])
        if ids:
            Delivery.objects.filter(pk__in=ids, next_attempt_at__lt=cutoff).update(next_attempt_at=now)
            found.deliveries[method] = ids

    if idle("digest"):
        homeless = Delivery.objects.filter(
            status=Delivery.Status.QUEUED, digest_entry__isnull=True, next_attempt_at__lt=cutoff
        ).exclude(digest="")
        found.digest_appends = list(homeless.order_by("pk").values_list("pk", flat=True)[:limit])
        Delivery.objects.filter(pk__in=found.digest_appends).update(next_attempt_at=now)
        windows = DigestWindow.objects.filter(status=DigestWindow.Status.SENDING, next_attempt_at__lt=cutoff)
        for window_id in windows.filter(unclaimed).order_by("pk").values_list("pk", flat=True)[:limit]:
            if DigestWindow.objects.filter(pk=window_id, next_attempt_at__lt=cutoff).update(next_attempt_at=now):
                found.windows.append(window_id)
    return found
