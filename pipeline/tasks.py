"""The Celery tasks: thin interfaces to the services.

The chain for each chunk of an event's audience is
``notiflow.preferences_check`` → ``notiflow.notifications_persist`` →
``notiflow.deliveries_fan_out`` (queue ``events``); fan-out sends batches to
``notiflow.deliveries_send`` on each method's queue (``deliver.<alias>``) and
to ``notiflow.digest_append`` (queue ``digest``). celery beat runs
``notiflow.digests_flush_due`` and ``notiflow.outbox_relay``.
Tasks take ids and JSON, never model instances.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from celery import Task, chain, shared_task
from django.utils import timezone

from delivery.base import DeliveryResult, Outcome
from delivery.registry import methods
from pipeline import digests, services
from pipeline.catalogue import catalogue
from pipeline.conf import notiflow_settings
from pipeline.events import Audience, event_publish
from pipeline.models import Event
from pipeline.preferences import Decision, preferences_resolve


def event_start(*, event_id: uuid.UUID | str, after_user_id: int = 0) -> None:
    """Queue the chain for the chunk of the event's audience after ``after_user_id``."""
    chain(
        preferences_check.s(str(event_id), after_user_id),
        notifications_persist.s(),
        deliveries_fan_out.s(),
    ).apply_async()


@shared_task(name="notiflow.preferences_check")
def preferences_check(event_id: str, after_user_id: int = 0) -> dict[str, Any]:
    """Expand one chunk of the audience and decide every (recipient, method).

    Queues the chain for the next chunk when this one is full. Returns
    ``{"event_id": str, "plan": {"<user_id>": {method: [action, digest, reason]}}}``.
    """
    event = Event.objects.get(pk=event_id)
    spec = catalogue.get(event.event_type)
    audience = Audience.from_json(event.audience)
    size = notiflow_settings.AUDIENCE_CHUNK_SIZE
    recipients = audience.recipients(exclude=None if event.include_actor else event.actor_id)
    user_ids = list(recipients.filter(pk__gt=after_user_id).values_list("pk", flat=True)[:size])
    if len(user_ids) == size:
        event_start(event_id=event_id, after_user_id=user_ids[-1])
    plan = preferences_resolve(event_type=spec, user_ids=user_ids)
    return {
        "event_id": event_id,
        "plan": {str(uid): {m: d.as_json() for m, d in per_method.items()} for uid, per_method in plan.items()},
    }


@shared_task(name="notiflow.notifications_persist")
def notifications_persist(checked: dict[str, Any]) -> dict[str, Any]:
    """Store the notifications and deliveries of one chunk; returns what to fan out."""
    plan = {
        int(uid): {m: Decision.from_json(d) for m, d in per_method.items()}
        for uid, per_method in checked["plan"].items()
    }
    return services.notifications_persist(event_id=checked["event_id"], plan=plan)


@shared_task(name="notiflow.deliveries_fan_out")
def deliveries_fan_out(persisted: dict[str, Any]) -> dict[str, int]:
    """Queue one ``deliveries_send`` per method per batch, and the digest appends.

    Returns ``{method or "digest": number of deliveries queued}``.
    """
    size = notiflow_settings.DELIVERY_BATCH_SIZE
    counts: dict[str, int] = {}
    for method, ids in persisted["send"].items():
        for start in range(0, len(ids), size):
            deliveries_send.apply_async((method, ids[start : start + size]), queue=methods.queue(method))
        counts[method] = len(ids)
    digest_ids = persisted["digest"]
    for start in range(0, len(digest_ids), size):
        digest_append.delay(digest_ids[start : start + size])
    counts["digest"] = len(digest_ids)
    return counts


def _countdown(task: Task, policy: dict[str, float]) -> float:
    """Seconds before the task's next attempt under a method's retry policy."""
    return services.retry_countdown(
        attempt=task.request.retries + 1, base=policy["BACKOFF_BASE"], cap=policy["BACKOFF_CAP"]
    )


@shared_task(name="notiflow.deliveries_send", bind=True, max_retries=None)
def deliveries_send(self: Task, method: str, delivery_ids: list[int]) -> dict[str, int]:
    """Send a batch through one delivery method; retry only the transient failures.

    Returns ``{"sent": n, "retrying": n, "failed": n}`` for this attempt.
    """
    deliveries = services.deliveries_claim(method=method, delivery_ids=delivery_ids, claimer=str(self.request.id))
    if not deliveries:
        return {"sent": 0, "retrying": 0, "failed": 0}
    results = methods.get(method).send(services.delivery_messages(deliveries=deliveries))
    policy = methods.retry_policy(method)
    countdown = _countdown(self, policy)
    to_retry = services.deliveries_record(
        deliveries=deliveries, results=results, max_attempts=int(policy["MAX_ATTEMPTS"]), retry_in=countdown
    )
    sent = sum(r.outcome is Outcome.SENT for r in results)
    if to_retry:
        raise self.retry(args=(method, to_retry), countdown=countdown, queue=methods.queue(method))
    return {"sent": sent, "retrying": 0, "failed": len(deliveries) - sent}


@shared_task(name="notiflow.digest_append")
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
        digest_send.delay(window_id)
    return claimed


@shared_task(name="notiflow.digest_send", bind=True, max_retries=None)
def digest_send(self: Task, window_id: int) -> int:
    """Send one claimed digest window as one message; returns how many notifications it listed."""
    found = digests.digest_window_deliveries(window_id=window_id)
    if found is None:
        return 0
    window, deliveries = found
    if not deliveries:
        digests.digest_record(window=window, deliveries=[], result=DeliveryResult.sent(), final=True)
        return 0
    message = digests.digest_message(window=window, deliveries=deliveries)
    (result,) = methods.get(window.method).send([message])
    policy = methods.retry_policy(window.method)
    final = self.request.retries + 1 >= int(policy["MAX_ATTEMPTS"])
    digests.digest_record(window=window, deliveries=deliveries, result=result, final=final)
    if result.outcome is Outcome.RETRY and not final:
        raise self.retry(countdown=_countdown(self, policy))
    return len(deliveries)


@shared_task(name="notiflow.outbox_relay")
def outbox_relay() -> int:
    """Publish events left in the outbox (the broker was down at emit time); returns how many."""
    cutoff = timezone.now() - timedelta(seconds=notiflow_settings.OUTBOX_RELAY_AFTER)
    ids = list(
        Event.objects.filter(published_at__isnull=True, created_at__lt=cutoff).values_list("pk", flat=True)[:500]
    )
    return sum(event_publish(event_id=event_id) for event_id in ids)
