"""The Celery tasks: thin interfaces to the services.

``notiflow.events_drain`` (queue ``events``) runs the hot path: it processes
pending events in batches (:func:`pipeline.processing.events_process`),
pushes each batch's WebSocket deliveries straight after its commit, and
queues the rest: ``notiflow.deliveries_send`` on each method's queue
(``deliver.<alias>``), ``notiflow.digest_append`` (queue ``digest``). It is
woken by the doorbell (:mod:`pipeline.publishing`), not by one message per
event. celery beat runs ``notiflow.digests_flush_due``,
``notiflow.outbox_relay`` and ``notiflow.pipeline_recover``. Dead letters are
announced by ``notiflow.dead_letter`` on the ``dead_letter`` queue. Tasks take
ids and JSON, never model instances, and only :mod:`pipeline.publishing`
sends them (by name): nothing imports this module but the worker.

Failures (see :class:`PipelineTask`): a database error is retried with
backoff; a broker error is left to the recovery sweep; anything else is
dead-lettered with the task and its arguments.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task, current_app, shared_task
from celery.signals import worker_process_init
from django.db import OperationalError as DatabaseOperationalError
from django.dispatch import Signal
from django.utils import timezone
from kombu.exceptions import ChannelError  # type: ignore[attr-defined]  # missing from the kombu stubs

from delivery.base import DeliveryResult, Outcome
from delivery.registry import methods
from pipeline import digests, drain, processing, publishing, sending, services
from pipeline.conf import notiflow_settings
from pipeline.deadletters import dead_letter_record
from pipeline.models import DeadLetter
from pipeline.recovery import stale_work_claim
from pipeline.termination import pool_process_init, termination_deferred

logger = logging.getLogger(__name__)

#: Sent by the default consumer of the ``dead_letter`` queue, with ``dead_letter`` (a
#: :class:`~pipeline.models.DeadLetter`): connect a receiver to alert someone.
dead_lettered = Signal()

BROKER_ERRORS = publishing.BROKER_ERRORS

worker_process_init.connect(pool_process_init, weak=False)


def _event_id_in(args: Any) -> str | None:
    """The event id a pipeline task works on, from its first argument (an id, or a dict holding one)."""
    first = args[0] if args else None
    candidate = first.get("event_id") if isinstance(first, dict) else first
    try:
        return str(uuid.UUID(str(candidate)))
    except ValueError:
        return None


class PipelineTask(Task):
    """Base class of the pipeline's tasks.

    - ``django.db.OperationalError`` (a locked or lost database) is retried
      with exponential backoff and jitter, up to 5 times.
    - A broker error (Redis down) is logged and left to
      ``notiflow.pipeline_recover``: the database still says the work is due.
    - Any other exception makes a dead letter (:meth:`dead_letter`).
    """

    autoretry_for = (DatabaseOperationalError,)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo) -> None:
        if isinstance(exc, BROKER_ERRORS):
            logger.warning(
                "%s[%s]: broker unreachable (%s); the recovery sweep will queue it again", self.name, task_id, exc
            )
            return
        try:
            self.dead_letter(exc, task_id, list(args), dict(kwargs), str(einfo))
        except Exception:
            logger.exception("%s[%s] failed and its dead letter could not be stored", self.name, task_id)

    def dead_letter(self, exc: Exception, task_id: str, args: list[Any], kwargs: dict[str, Any], tb: str) -> None:
        """Record this failure as a STEP dead letter; replaying it runs this task again."""
        dead_letter_record(
            kind=DeadLetter.Kind.STEP,
            task=self.name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            chain=list(self.request.chain or []),
            exception=f"{type(exc).__name__}: {exc}",
            traceback=tb,
            attempts=self.request.retries + 1,
            event_id=_event_id_in(args),
        )


@shared_task(name="notiflow.events_drain", base=PipelineTask)
def events_drain() -> dict[str, int]:
    """Process pending events in batches, push them, queue their other deliveries (:mod:`pipeline.drain`).

    Returns ``{"batches": n, "events": n, "notifications": n}``.
    """
    return drain.events_drain_run()


def _countdown(task: Task, policy: dict[str, float]) -> float:
    """Seconds before the task's next attempt: full-jitter backoff under a method's retry policy."""
    return services.retry_countdown(
        attempt=task.request.retries + 1, base=policy["BACKOFF_BASE"], cap=policy["BACKOFF_CAP"]
    )


class DeliveryTask(PipelineTask):
    """``deliveries_send``: an unexpected exception makes each unsent delivery of the batch a dead letter."""

    def dead_letter(self, exc: Exception, task_id: str, args: list[Any], kwargs: dict[str, Any], tb: str) -> None:
        method, delivery_ids = args[0], args[1]
        for delivery in services.deliveries_pending(method=method, delivery_ids=delivery_ids):
            services.delivery_record(
                delivery=delivery,
                result=DeliveryResult.failed(f"{type(exc).__name__}: {exc}"),
                final=True,
                retry_in=0,
                task_id=task_id,
                traceback=tb,
            )


@shared_task(name="notiflow.deliveries_send", bind=True, base=DeliveryTask, max_retries=None)
def deliveries_send(self: Task, method: str, delivery_ids: list[int]) -> dict[str, int]:
    """Send a batch through one delivery method (:func:`pipeline.sending.deliveries_send`); retry the transient
    failures after the method's backoff. Returns ``{"sent": n, "retrying": n, "failed": n, "dead": n}``."""
    report = sending.deliveries_send(
        method=method, delivery_ids=delivery_ids, claimer=str(self.request.id), attempt=self.request.retries + 1
    )
    if report.to_retry:
        raise self.retry(args=(method, report.to_retry), countdown=report.countdown, queue=methods.queue(method))
    return report.counts


@shared_task(name="notiflow.digest_append", base=PipelineTask)
def digest_append(delivery_ids: list[int]) -> int:
    """Add digest deliveries to their open windows; returns how many were added."""
    return digests.digest_entries_append(delivery_ids=delivery_ids)


@shared_task(name="notiflow.digests_flush_due")
def digests_flush_due(as_of: str | None = None) -> list[int]:
    """Close every window due at ``as_of`` (ISO 8601; default now) and queue its sending.

    celery beat runs it every minute; returns the ids of the windows claimed.
    """
    when = datetime.fromisoformat(as_of) if as_of else timezone.now()
    claimed = digests.digests_claim_due(as_of=when)
    for window_id in claimed:
        publishing.digest_send(window_id=window_id)
    return claimed


class DigestTask(PipelineTask):
    """``digest_send``: an unexpected exception fails the window and dead-letters it."""

    def dead_letter(self, exc: Exception, task_id: str, args: list[Any], kwargs: dict[str, Any], tb: str) -> None:
        found = digests.digest_window_claim(window_id=args[0], claimer=task_id)
        if found is not None:
            window, deliveries = found
            digests.digest_record(
                window=window,
                deliveries=deliveries,
                result=DeliveryResult.failed(f"{type(exc).__name__}: {exc}"),
                final=True,
                task_id=task_id,
                attempts=self.request.retries + 1,
                traceback=tb,
            )


@shared_task(name="notiflow.digest_send", bind=True, base=DigestTask, max_retries=None)
def digest_send(self: Task, window_id: int) -> int:
    """Send one claimed digest window as one message; returns how many notifications it listed.

    Transient failures are retried under the method's ``RETRY`` policy; a
    permanent one, or the last attempt, fails the window and dead-letters it.
    """
    found = digests.digest_window_claim(window_id=window_id, claimer=str(self.request.id))
    if found is None:
        return 0
    window, deliveries = found
    if not deliveries:
        digests.digest_record(window=window, deliveries=[], result=DeliveryResult.sent(), final=True)
        return 0
    message = digests.digest_message(window=window, deliveries=deliveries)
    policy = methods.retry_policy(window.method)
    final = self.request.retries + 1 >= int(policy["MAX_ATTEMPTS"])
    countdown = _countdown(self, policy)
    with termination_deferred():  # sent and recorded, or neither; see pipeline.termination
        (result,) = list(methods.get(window.method).send([message]))
        digests.digest_record(
            window=window,
            deliveries=deliveries,
            result=result,
            final=final,
            retry_in=countdown,
            task_id=str(self.request.id),
            attempts=self.request.retries + 1,
        )
    if result.outcome is Outcome.RETRY and not final:
        raise self.retry(countdown=countdown)
    return len(deliveries)


@shared_task(name="notiflow.outbox_relay")
def outbox_relay() -> int:
    """Ring the doorbell if events have waited longer than ``OUTBOX_RELAY_AFTER`` seconds (the broker was down
    when they were emitted, or the message was lost) and no drain is queued; returns how many events wait."""
    cutoff = timezone.now() - timedelta(seconds=notiflow_settings.OUTBOX_RELAY_AFTER)
    waiting = processing.events_pending().filter(created_at__lt=cutoff).count()
    if waiting and queue_is_idle(publishing.EVENTS_QUEUE):
        publishing.events_ring(force=True)
    return waiting


def queue_is_idle(name: str) -> bool:
    """True when the broker holds no message waiting in queue ``name`` (a missing Redis list is empty)."""
    with current_app.connection_for_read() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=name, passive=True)  # type: ignore[attr-defined]
            return int(declared.message_count) == 0
        except ChannelError:
            return True


@shared_task(name="notiflow.pipeline_recover")
def pipeline_recover() -> dict[str, int]:
    """Queue again the work the broker lost (see :mod:`pipeline.recovery`); returns how much of each kind."""
    stale = stale_work_claim(now=timezone.now(), idle=queue_is_idle)
    if stale.events:
        publishing.events_ring(force=True)
    publishing.deliveries_dispatch(send=stale.deliveries, digest=stale.digest_appends)
    for window_id in stale.windows:
        publishing.digest_send(window_id=window_id)
    counts = stale.counts()
    if any(counts.values()):
        logger.warning("Recovery sweep queued lost work again: %s", counts)
    return counts


@shared_task(name="notiflow.dead_letter")
def dead_letter(dead_letter_id: int) -> str:
    """The default consumer of the ``dead_letter`` queue: log the dead letter, send :data:`dead_lettered`
    and stamp ``announced_at``. Returns a one-line summary (shown in Flower).
    """
    letter = DeadLetter.objects.filter(pk=dead_letter_id).select_related("event").first()
    if letter is None:
        return f"dead letter {dead_letter_id} no longer exists"
    dead_lettered.send(sender=DeadLetter, dead_letter=letter)
    DeadLetter.objects.filter(pk=letter.pk, announced_at__isnull=True).update(announced_at=timezone.now())
    summary = f"{letter}: {letter.exception}"
    logger.error("%s", summary)
    return summary
