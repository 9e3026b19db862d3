"""Sending a batch of deliveries through one delivery method, recording each outcome.

:func:`deliveries_send` is what the ``notiflow.deliveries_send`` task runs
(email batches, and any delivery retried or re-queued). It claims the
deliveries, hands the messages to the method, and records the results as the
method yields them, under the claim:

- **Group commit.** Consecutive successes are recorded together, with one
  ``UPDATE``, at most ``DELIVERY_RECORD_INTERVAL`` seconds (50 ms) after the
  first of them was sent; a failure is recorded at once, on its own. With a
  fast provider that is one write per few dozen messages instead of one per
  message (on SQLite every write takes the database's single write lock,
  which the pipeline's other writers wait for; on PostgreSQL every commit
  waits for its WAL flush); with a slow one (seconds per message) it is one
  write per message, as before. The idea is the database's own group commit
  (PostgreSQL's ``commit_delay``), applied to a provider's acknowledgements.
- **Termination.** Signals that stop a pool process are held while a group
  is sent and recorded (:func:`pipeline.termination.termination_deferred`),
  so a stop or the death of the main process lets the group finish and be
  recorded: at most ``DELIVERY_RECORD_INTERVAL`` plus one send. Only a SIGKILL
  of the pool process itself can leave a group sent and unrecorded; those
  messages are sent again on recovery with the same ``Message-ID``.
- **Claims.** The claim is renewed every third of ``DELIVERY_LEASE`` while
  the batch is being sent (before the next message once a third has passed),
  and outcomes are recorded only while the claim is still this sender's: if
  another sender took a delivery over (one send that outlasted the rest of
  the lease), the renewal or the record finds it and
  :class:`~pipeline.exceptions.ClaimLost` stops this batch before it sends
  another message. Only the message in flight when the lease lapsed can then
  be sent twice, so a send must not take longer than two thirds of the lease
  (Django's ``EMAIL_TIMEOUT``, 10 s in notiflow's settings, against 300 s).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from delivery.base import DeliveryResult, Message, Outcome
from delivery.registry import methods
from pipeline import services
from pipeline.conf import notiflow_settings
from pipeline.exceptions import ClaimLost
from pipeline.models import Delivery
from pipeline.termination import termination_deferred

logger = logging.getLogger(__name__)


@dataclass
class SendReport:
    """What one :func:`deliveries_send` did: ``counts`` per status recorded (``sent``, ``skipped``, ``retrying``,
    ``failed``, ``dead``), the deliveries ``to_retry`` and the ``countdown`` (seconds) before their retry."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"sent": 0, "skipped": 0, "retrying": 0, "failed": 0, "dead": 0}
    )
    to_retry: list[int] = field(default_factory=list)
    countdown: float = 0.0


def deliveries_sent_record(*, deliveries: list[Delivery], claimer: str) -> None:
    """Record ``deliveries`` sent, with one ``UPDATE``, while ``claimer`` still holds every one of them.

    Raises :class:`~pipeline.exceptions.ClaimLost` if any was taken over;
    the others are recorded all the same.
    """
    if not deliveries:
        return
    now = timezone.now()
    updated = Delivery.objects.filter(pk__in=[d.pk for d in deliveries], claimed_by=claimer).update(
        status=Delivery.Status.SENT,
        sent_at=now,
        last_error="",
        attempts=F("attempts") + 1,
        next_attempt_at=None,
        claimed_by="",
        claimed_until=None,
        updated_at=now,
    )
    for delivery in deliveries:
        delivery.status = Delivery.Status.SENT
    if updated != len(deliveries):
        raise ClaimLost(
            f"{len(deliveries) - updated} of {len(deliveries)} deliveries are no longer claimed by {claimer}"
        )


def _results(method: str, messages: list[Message]) -> Iterator[tuple[DeliveryResult, str]]:
    """The method's result for each message, in order, with a traceback if the method raised; never raises.

    Recipients the method cannot reach now (:meth:`~delivery.base.DeliveryMethod.reachable`) are ``skipped``
    without a send."""
    backend = methods.get(method)
    reachable = backend.reachable([m.recipient.id for m in messages])
    away = set() if reachable is None else {i for i, m in enumerate(messages) if m.recipient.id not in reachable}
    produced = iter(backend.send([m for i, m in enumerate(messages) if i not in away]))
    for index in range(len(messages)):
        if index in away:
            yield DeliveryResult.skipped(backend.unreachable_reason), ""
            continue
        try:
            yield next(produced), ""
        except StopIteration:
            yield DeliveryResult.failed(f"the {method} method returned no result for this message"), ""
        except Exception as exc:  # noqa: BLE001 - a method that raises: its unsent messages are dead-lettered
            reason, tb = DeliveryResult.failed(f"{type(exc).__name__}: {exc}"), traceback.format_exc()
            produced = iter(())
            yield reason, tb


def deliveries_send(*, method: str, delivery_ids: list[int], claimer: str, attempt: int) -> SendReport:
    """Claim and send the unsent deliveries among ``delivery_ids`` through ``method``; record every outcome.

    ``attempt`` is this send's number (1 for the first), counted against the
    method's ``RETRY["MAX_ATTEMPTS"]``; ``claimer`` is the task's id (a
    redelivered task takes its own claim back). Transient failures are to be
    retried after the report's ``countdown``; on the last attempt they, and
    permanent failures at once, are dead-lettered. Returns a
    :class:`SendReport`.
    """
    report = SendReport()
    claimed = services.deliveries_claim(method=method, delivery_ids=delivery_ids, claimer=claimer)
    if not claimed:
        return report
    deliveries = [delivery for delivery, _ in claimed]
    policy = methods.retry_policy(method)
    final = attempt >= int(policy["MAX_ATTEMPTS"])
    report.countdown = services.retry_countdown(attempt=attempt, base=policy["BACKOFF_BASE"], cap=policy["BACKOFF_CAP"])
    interval = float(notiflow_settings.DELIVERY_RECORD_INTERVAL)
    lease = float(notiflow_settings.DELIVERY_LEASE)
    renewed = time.monotonic()
    results = _results(method, [message for _, message in claimed])
    index = 0
    try:
        while index < len(deliveries):
            if time.monotonic() - renewed > lease / 3:  # a slow provider: keep the rest of the batch ours
                rest = [d.pk for d in deliveries[index:]]
                held = services.deliveries_claim_renew(delivery_ids=rest, claimer=claimer, lease_seconds=lease)
                renewed = time.monotonic()
                if held < len(rest):  # a send outlasted the lease and another sender took some over: stop
                    raise ClaimLost(f"{len(rest) - held} of the {len(rest)} unsent deliveries were taken over")
            with termination_deferred():  # a group sent and recorded, or a stop waits for it
                index = _group_send(deliveries, index, results, claimer, interval, final, policy, report)
    except ClaimLost as exc:
        logger.warning("%s: %s; the rest of the batch is left to its new owner", claimer, exc)
        services.deliveries_claim_release(delivery_ids=[d.pk for d in deliveries[index:]], claimer=claimer)
    return report


def _group_send(
    deliveries: list[Delivery],
    index: int,
    results: Iterator[tuple[DeliveryResult, str]],
    claimer: str,
    interval: float,
    final: bool,
    policy: dict[str, float],
    report: SendReport,
) -> int:
    """Send from ``deliveries[index]`` until ``interval`` seconds have passed or a message fails; record the
    group. Returns the index of the next delivery to send."""
    sent: list[Delivery] = []
    failure: tuple[Delivery, DeliveryResult, str] | None = None
    started = time.monotonic()
    try:
        while index < len(deliveries):
            delivery = deliveries[index]
            index += 1
            result, tb = next(results)
            if result.outcome is not Outcome.SENT:
                failure = (delivery, result, tb)
                break
            sent.append(delivery)
            if time.monotonic() - started >= interval:
                break
    finally:
        # Whatever ends the group (the interval, a failure, an exception), what was sent is recorded.
        deliveries_sent_record(deliveries=sent, claimer=claimer)
        report.counts["sent"] += len(sent)
    if failure is not None:
        _failure_record(*failure, claimer, final, policy, report)
    return index


def _failure_record(
    delivery: Delivery,
    result: DeliveryResult,
    tb: str,
    claimer: str,
    final: bool,
    policy: dict[str, float],
    report: SendReport,
) -> None:
    if result.outcome is Outcome.RETRY and result.retry_after is not None:
        # The provider asked for a later retry (an HTTP Retry-After, say): the batch waits for it.
        report.countdown = max(report.countdown, min(result.retry_after, float(policy["BACKOFF_CAP"])))
        Delivery.objects.filter(pk__in=report.to_retry).update(
            next_attempt_at=timezone.now() + timedelta(seconds=report.countdown)
        )
    if services.delivery_record(
        delivery=delivery, result=result, final=final, retry_in=report.countdown, task_id=claimer, traceback=tb
    ):
        report.to_retry.append(delivery.pk)
    report.counts[delivery.status] += 1  # "skipped", "retrying", "failed" or "dead"
