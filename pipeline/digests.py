"""Digest windows: batching a recipient's deliveries into one message.

A delivery whose preference is a digest frequency is appended to the
recipient's open window for that method and frequency. Windows close on the
hour (hourly), at midnight (daily) or at Monday midnight (weekly), in UTC;
celery beat (``notiflow.digests_flush_due``, every minute) claims each due
window and one task sends it as a single message through the delivery method.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from delivery.base import DeliveryResult, Message, Outcome
from pipeline.conf import notiflow_settings
from pipeline.deadletters import dead_letter_record
from pipeline.models import DeadLetter, Delivery, DigestEntry, DigestWindow
from pipeline.services import claimable, deliveries_pending, lease_until, recipient_of, text_render

PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
DIGEST_TEMPLATE_DIR = "notiflow/digest"


def window_closes_at(*, frequency: str, now: datetime) -> datetime:
    """The end of the window that contains ``now`` (aware, UTC). Raises ``KeyError`` for an unknown frequency."""
    period = PERIODS[frequency]
    now = now.astimezone(UTC)
    start = now.replace(minute=0, second=0, microsecond=0)
    if frequency != "hourly":
        start = start.replace(hour=0)
    if frequency == "weekly":
        start -= timedelta(days=start.weekday())
    return start + period


def _window_open_locked(*, user_id: int, method: str, frequency: str, closes_at: datetime) -> DigestWindow:
    """The recipient's open window closing at ``closes_at``, or the first open one after it, created if
    missing, its row locked until the transaction ends (``SELECT … FOR UPDATE``; call it in one).

    The lock closes a race: without it an entry could be added to a window that
    :func:`digests_claim_due` moved to ``sending`` between the status check and
    the insert, after :func:`digest_window_claim` read its entries, and never be
    sent. With it, the claim's ``UPDATE`` waits for the entry's commit, or the
    append waits for the claim's and, seeing ``sending``, takes the next window.
    """
    while True:
        window, _ = DigestWindow.objects.get_or_create(
            user_id=user_id, method=method, frequency=frequency, closes_at=closes_at
        )
        window = DigestWindow.objects.select_for_update().get(pk=window.pk)
        if window.status == DigestWindow.Status.OPEN:
            return window
        closes_at += PERIODS[frequency]  # already flushed: the next window takes it


def digest_entries_append(*, delivery_ids: list[int]) -> int:
    """Add each queued digest delivery to its recipient's open window; return how many were added.

    Idempotent: a delivery is in at most one window (unique entry per delivery). An entry is never added to
    a window being sent (see :func:`_window_open_locked`).
    """
    now = timezone.now()
    added = 0
    pending = Delivery.objects.filter(pk__in=delivery_ids, status=Delivery.Status.QUEUED).exclude(digest="")
    for delivery_id, user_id, method, frequency in pending.values_list(
        "pk", "notification__recipient_id", "method", "digest"
    ):
        closes_at = window_closes_at(frequency=frequency, now=now)
        with transaction.atomic():
            window = _window_open_locked(user_id=user_id, method=method, frequency=frequency, closes_at=closes_at)
            try:
                with transaction.atomic():
                    DigestEntry.objects.create(window=window, delivery_id=delivery_id)
                added += 1
            except IntegrityError:
                pass  # a redelivered task: the entry is there already
    return added


def digests_claim_due(*, as_of: datetime) -> list[int]:
    """Move every open window that closes at or before ``as_of`` to ``sending``; return their ids.

    The conditional update makes each window claimed by exactly one caller.
    """
    claimed = []
    for pk in DigestWindow.objects.filter(status=DigestWindow.Status.OPEN, closes_at__lte=as_of).values_list(
        "pk", flat=True
    ):
        if DigestWindow.objects.filter(pk=pk, status=DigestWindow.Status.OPEN).update(
            status=DigestWindow.Status.SENDING, next_attempt_at=timezone.now()
        ):
            claimed.append(pk)
    return claimed


def digest_message(*, window: DigestWindow, deliveries: list[Delivery]) -> Message:
    """One message listing every notification of the window, oldest first."""
    user = window.user
    items = [
        {
            "id": d.notification.pk,
            "title": d.notification.title,
            "body": d.notification.body,
            "event_type": d.notification.event_type,
            "created_at": d.notification.created_at.isoformat(),
        }
        for d in deliveries
    ]
    context = {
        "frequency": window.frequency,
        "count": len(items),
        "items": items,
        "recipient": {"id": user.pk, "username": user.get_username()},
    }
    title = text_render(f"{DIGEST_TEMPLATE_DIR}/title.txt", context)
    body = text_render(f"{DIGEST_TEMPLATE_DIR}/body.txt", context)
    return Message(
        delivery_id=None,
        notification_id=None,
        event_type="digest",
        category="digest",
        recipient=recipient_of(user),
        title=title,
        body=body,
        template_dir=DIGEST_TEMPLATE_DIR,
        context=context,
        key=f"digest-{window.pk}",
    )


def digest_window_claim(*, window_id: int, claimer: str) -> tuple[DigestWindow, list[Delivery]] | None:
    """Claim a ``sending`` window for ``claimer``; return it with its deliveries still to send.

    ``None`` if the window is not ``sending`` or another task holds it (the
    same lease as deliveries, ``NOTIFLOW["DELIVERY_LEASE"]``): two copies of
    the task never send one digest twice.
    """
    claimed = (
        DigestWindow.objects.filter(pk=window_id, status=DigestWindow.Status.SENDING)
        .filter(claimable(claimer=claimer))
        .update(claimed_by=claimer, claimed_until=lease_until(float(notiflow_settings.DELIVERY_LEASE)))
    )
    if not claimed:
        return None
    window = DigestWindow.objects.select_related("user").get(pk=window_id)
    ids = list(window.entries.values_list("delivery_id", flat=True))
    return window, deliveries_pending(method=window.method, delivery_ids=ids)


def digest_record(
    *,
    window: DigestWindow,
    deliveries: list[Delivery],
    result: DeliveryResult,
    final: bool,
    retry_in: float = 0.0,
    task_id: str = "",
    attempts: int = 1,
    traceback: str = "",
) -> None:
    """Store the outcome of sending a window and release its claim.

    ``final``: no retry follows a transient failure. A failure that is
    permanent or final makes the window ``failed``, its deliveries ``dead``,
    and one dead letter for the window (``attempts`` is the task's count).
    """
    now = timezone.now()
    ids = [d.pk for d in deliveries]
    windows = DigestWindow.objects.filter(pk=window.pk)
    release = {"claimed_by": "", "claimed_until": None}
    with transaction.atomic():
        if result.outcome is Outcome.SENT:
            Delivery.objects.filter(pk__in=ids).update(
                status=Delivery.Status.SENT, sent_at=now, last_error="", attempts=F("attempts") + 1
            )
            windows.update(status=DigestWindow.Status.SENT, sent_at=now, next_attempt_at=None, **release)
        elif result.outcome is Outcome.RETRY and not final:
            Delivery.objects.filter(pk__in=ids).update(
                status=Delivery.Status.RETRYING, last_error=result.reason, attempts=F("attempts") + 1
            )
            windows.update(last_error=result.reason, next_attempt_at=now + timedelta(seconds=retry_in), **release)
        else:
            Delivery.objects.filter(pk__in=ids).update(
                status=Delivery.Status.DEAD if result.outcome is Outcome.RETRY else Delivery.Status.FAILED,
                last_error=result.reason,
                reason="digest failed",
                attempts=F("attempts") + 1,
            )
            windows.update(status=DigestWindow.Status.FAILED, last_error=result.reason, next_attempt_at=None, **release)
            dead_letter_record(
                kind=DeadLetter.Kind.DIGEST,
                task="notiflow.digest_send",
                task_id=task_id,
                args=[window.pk],
                exception=result.reason,
                traceback=traceback,
                attempts=attempts,
                recipient_id=window.user_id,
                method=window.method,
                digest_window_id=window.pk,
            )
