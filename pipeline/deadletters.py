"""Dead letters: recording work that cannot complete by itself, and replaying it.

A dead letter is written when a delivery fails permanently or runs out of
attempts, when a digest cannot be sent, and when a pipeline task raises
something that retrying will not fix (a template that does not render, a
bug). Each row is announced, once its transaction commits, through the
signal :data:`dead_letter_recorded`; :mod:`pipeline.publishing` relays it to
the ``dead_letter`` Celery queue (task ``notiflow.dead_letter``), so it shows
in Flower and anything may consume it; the default consumer logs it and
sends :data:`pipeline.tasks.dead_lettered`.

A replay re-enters the pipeline at the step that failed: a delivery is put
back to ``queued`` and sent by its method, a digest window is sent again, a
poison event becomes pending again for the next drain, another pipeline task
runs again with its arguments. :func:`dead_letters_replay` changes the rows
and returns the work to queue (:class:`ReplayReport`);
:func:`pipeline.publishing.dead_letters_replay` queues it after the commit. Every
step is idempotent and a dead letter is replayed at most once (a conditional
update from ``dead`` to ``replayed``), so replaying twice sends once. If the
replayed work fails again it becomes a new dead letter whose ``replay_of``
points at this one: nothing is replayed automatically, so nothing loops.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.dispatch import Signal
from django.utils import timezone

from pipeline.models import DeadLetter, Delivery, DigestWindow

logger = logging.getLogger(__name__)

#: Sent once the transaction that stored a dead letter commits, with ``dead_letter_id`` (an int).
dead_letter_recorded = Signal()


def dead_letter_record(
    *,
    kind: str,
    task: str,
    exception: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    chain: Sequence[Any] = (),
    traceback: str = "",
    attempts: int = 1,
    task_id: str = "",
    event_id: Any = None,
    recipient_id: int | None = None,
    method: str = "",
    delivery_id: int | None = None,
    digest_window_id: int | None = None,
) -> DeadLetter:
    """Store one dead letter and send :data:`dead_letter_recorded` once the transaction commits.

    ``kind`` is a :class:`~pipeline.models.DeadLetter.Kind`. The new row's
    ``replay_of`` is the latest replayed dead letter of the same work (same
    delivery, same digest window, or same task and arguments), which keeps
    the history of an item that failed again after a replay.
    """
    previous = DeadLetter.objects.filter(status=DeadLetter.Status.REPLAYED, kind=kind)
    if kind == DeadLetter.Kind.DELIVERY:
        previous = previous.filter(delivery=delivery_id)
    elif kind == DeadLetter.Kind.DIGEST:
        previous = previous.filter(digest_window=digest_window_id)
    else:
        previous = previous.filter(task=task, args=list(args), event_id=event_id)
    letter = DeadLetter.objects.create(
        kind=kind,
        task=task,
        task_id=task_id or "",
        args=list(args),
        kwargs=dict(kwargs or {}),
        chain=list(chain),
        exception=exception,
        traceback=traceback,
        attempts=attempts,
        event_id=event_id,
        recipient_id=recipient_id,
        method=method,
        delivery_id=delivery_id,
        digest_window_id=digest_window_id,
        replay_of=previous.order_by("-replayed_at", "-pk").first(),
    )
    logger.error("Dead letter #%s: %s %s failed: %s", letter.pk, kind, task, exception)
    transaction.on_commit(lambda: dead_letter_recorded.send(sender=DeadLetter, dead_letter_id=letter.pk))
    return letter


def dead_letters_select(
    *,
    ids: Iterable[int] | None = None,
    method: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    status: str | None = DeadLetter.Status.DEAD,
) -> QuerySet[DeadLetter]:
    """Dead letters matching every filter given (``status=None``: any status), oldest first."""
    letters = DeadLetter.objects.select_related("event", "recipient").order_by("created_at", "pk")
    if status:
        letters = letters.filter(status=status)
    if ids is not None:
        letters = letters.filter(pk__in=list(ids))
    if method:
        letters = letters.filter(method=method)
    if event_type:
        letters = letters.filter(event__event_type=event_type)
    if since is not None:
        letters = letters.filter(created_at__gte=since)
    return letters


@dataclass
class ReplayReport:
    """What :func:`dead_letters_replay` did: ids replayed, ids skipped because they were not ``dead``, and the
    work to queue: ``deliveries`` (``{method: [delivery id]}``), digest ``windows``, ``steps`` (task, args,
    kwargs) and ``events`` (ids of poison events made pending again: a drain must be rung)."""

    replayed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    deliveries: dict[str, list[int]] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)
    steps: list[tuple[str, list[Any], dict[str, Any]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


#: The task a poison event's dead letter names (see :mod:`pipeline.processing`).
DRAIN_TASK = "notiflow.events_drain"


def dead_letters_replay(*, letters: Iterable[DeadLetter], replayed_by: str = "") -> ReplayReport:
    """Mark each dead letter still ``dead`` as replayed and make its work due again; return the work to queue.

    A dead letter already replayed (by an earlier or a concurrent call) is
    skipped, so the same work is never queued twice by replays. Run it in
    a transaction and queue the report's work after the commit (as
    :func:`pipeline.publishing.dead_letters_replay` does). If the broker is
    down then, the recovery sweep queues it later: the database already
    says it is due.
    """
    report = ReplayReport()
    now = timezone.now()
    deliveries: dict[str, list[int]] = defaultdict(list)
    with transaction.atomic():
        for letter in letters:
            won = DeadLetter.objects.filter(pk=letter.pk, status=DeadLetter.Status.DEAD).update(
                status=DeadLetter.Status.REPLAYED, replayed_at=now, replayed_by=replayed_by[:150]
            )
            if not won:
                report.skipped.append(letter.pk)
                continue
            report.replayed.append(letter.pk)
            if letter.kind == DeadLetter.Kind.DELIVERY and letter.delivery_id is not None:
                if Delivery.objects.filter(pk=letter.delivery_id, status__in=Delivery.DEAD_LETTERED).update(
                    status=Delivery.Status.QUEUED,
                    reason="replayed",
                    next_attempt_at=now,
                    claimed_by="",
                    claimed_until=None,
                ):
                    deliveries[letter.method].append(letter.delivery_id)
            elif letter.kind == DeadLetter.Kind.DIGEST and letter.digest_window_id is not None:
                window = DigestWindow.objects.filter(pk=letter.digest_window_id, status=DigestWindow.Status.FAILED)
                if window.update(status=DigestWindow.Status.SENDING, next_attempt_at=now, claimed_until=None):
                    Delivery.objects.filter(
                        digest_entry__window_id=letter.digest_window_id, status__in=Delivery.DEAD_LETTERED
                    ).update(status=Delivery.Status.QUEUED, reason="replayed")
                    report.windows.append(letter.digest_window_id)
            elif letter.event_id is not None and letter.kind == DeadLetter.Kind.STEP:
                # A poison event (or a step of the chains before the drain): no longer excluded, the drain takes it.
                report.events.append(str(letter.event_id))
            else:
                report.steps.append((letter.task, list(letter.args), dict(letter.kwargs)))
    report.deliveries = dict(deliveries)
    return report
