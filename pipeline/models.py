"""notiflow's tables: events (the outbox), notifications, deliveries,
preferences and digest windows.

Idempotency lives here as unique constraints: one notification per
(event, recipient), one delivery per (notification, method), one digest
entry per delivery, one digest window per (recipient, frequency, closing time).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Event(models.Model):
    """A domain fact passed to ``emit_event()``; also the outbox row and the hot path's work queue.

    An event is pending while ``completed_at`` is unset; drains take pending
    events in emit order (``created_at``, then id). ``published_at`` is when
    a worker first stored notifications of it. The audience is stored in
    chunks, one after the other, in user id order: ``progress_user_id`` is
    the last user id of the last chunk done, and ``completed_at`` is set when
    the last chunk is done.
    ``audience`` is ``{"kind": "users", "user_ids": [int, ...]}``,
    ``{"kind": "role", "role": str}`` or ``{"kind": "everyone"}``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own (nor on published_at): nothing reads events by type or by publication time, and each
    # index was one more entry for every emit_event() INSERT to write (two on PostgreSQL: btree and LIKE).
    event_type = models.CharField(max_length=100)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    audience = models.JSONField()
    include_actor = models.BooleanField(default=False)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker first stored notifications of it."
    )
    progress_user_id = models.BigIntegerField(default=0, help_text="The audience is processed up to this user id.")
    completed_at = models.DateTimeField(null=True, blank=True, help_text="When the whole audience was fanned out.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The drain's queue: pending events in emit order.
            models.Index(fields=["created_at", "id"], condition=Q(completed_at__isnull=True), name="event_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"


class Inbox(models.Model):
    """Per-recipient counters: cursors, and positions in the recipient's push stream.

    Persisting notifications locks the recipient's row (an ``UPDATE`` of
    both counters), so cursors are handed out and committed in order for each
    recipient: a client resuming "after cursor N" can never skip a row that
    commits later with a smaller cursor. ``last_push_seq`` counts the
    notifications pushed to sockets (see :attr:`Notification.push_seq`).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE)
    last_cursor = models.BigIntegerField(default=0)
    last_push_seq = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "inboxes"

    def __str__(self) -> str:
        return f"inbox of {self.user_id} at {self.last_cursor}"


class Notification(models.Model):
    """One in-app notification: one row per recipient per event."""

    class State(models.TextChoices):
        UNSEEN = "unseen"
        SEEN = "seen"
        READ = "read"
        ARCHIVED = "archived"

    # No index of their own: the unique (event, recipient) and (recipient, cursor) indexes lead with them. A
    # separate event_id index cost every stored row one more index entry and misled PostgreSQL's planner into
    # reading all of an event's notifications to check one chunk of its audience.
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="notifications", db_index=False)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    event_type = models.CharField(max_length=100)
    category = models.CharField(max_length=100)
    title = models.CharField(max_length=255)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    cursor = models.BigIntegerField(help_text="Per-recipient position, 1, 2, 3, ... in commit order.")
    push_seq = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Per-recipient position among the notifications pushed to sockets, 1, 2, 3, ... in cursor order; "
        "empty for one no socket is sent (no streamed delivery method, or the recipient's preference is off).",
    )
    occurred_at = models.DateTimeField(help_text="When its event happened (the event's occurred_at).")
    state = models.CharField(max_length=10, choices=State.choices, default=State.UNSEEN)
    created_at = models.DateTimeField(auto_now_add=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["recipient", "-cursor"]
        constraints = [
            models.UniqueConstraint(fields=["event", "recipient"], name="notification_once_per_recipient"),
            models.UniqueConstraint(fields=["recipient", "cursor"], name="notification_cursor_unique"),
        ]
        indexes = [models.Index(fields=["recipient", "state"], name="notification_unread_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.event_type} → {self.recipient_id}"

    @property
    def is_unread(self) -> bool:
        return self.state in (self.State.UNSEEN, self.State.SEEN)


class Delivery(models.Model):
    """One notification sent by one delivery method.

    ``queued`` → ``sent``; or ``retrying`` after a transient failure, then
    ``sent`` or, past the method's attempts, ``dead``; ``failed`` at once after
    a permanent failure. Both ``failed`` and ``dead`` are dead letters (a
    :class:`DeadLetter` row says why; a replay puts the delivery back to
    ``queued``). ``skipped`` when the recipient's preference is off.
    ``next_attempt_at`` is when the delivery is due: the recovery sweep
    re-queues one left unsent ``RECOVER_AFTER`` seconds past it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENT = "sent"
        RETRYING = "retrying"
        FAILED = "failed"  # permanent failure: dead-lettered
        DEAD = "dead"  # out of attempts: dead-lettered
        SKIPPED = "skipped"

    #: The statuses of a dead-lettered delivery, which a replay may put back to ``queued``.
    DEAD_LETTERED = (Status.FAILED, Status.DEAD)

    # No index of its own: the unique (notification, method) index leads with it.
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    method = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    reason = models.CharField(max_length=255, blank=True, help_text="Why it was skipped or failed.")
    digest = models.CharField(
        max_length=10, blank=True, help_text="The digest frequency this delivery is batched into; empty: sent at once."
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_by = models.CharField(max_length=64, blank=True, help_text="The task sending it now, if any.")
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="When that claim lapses.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "method"], name="delivery_once_per_method"),
        ]

    def __str__(self) -> str:
        return f"{self.method} for #{self.notification_id}: {self.status}"


class Preference(models.Model):
    """A recipient's choice for one category or one event type and one method.

    An event-type preference beats a category preference, which beats the
    catalogue's default (on). A digest frequency is valid only for a method
    that can be digested (email).
    """

    class Setting(models.TextChoices):
        ON = "on"
        OFF = "off"
        HOURLY = "hourly"
        DAILY = "daily"
        WEEKLY = "weekly"

    DIGEST_SETTINGS = (Setting.HOURLY, Setting.DAILY, Setting.WEEKLY)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    category = models.CharField(max_length=100, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    method = models.CharField(max_length=50)
    setting = models.CharField(max_length=10, choices=Setting.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(category="") & ~Q(event_type="")) | (~Q(category="") & Q(event_type="")),
                name="preference_category_xor_event_type",
            ),
            models.UniqueConstraint(fields=["user", "category", "event_type", "method"], name="preference_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.category or self.event_type} {self.method}={self.setting}"


class DigestWindow(models.Model):
    """A recipient's digest for one method, frequency and closing time.

    ``open`` collects entries; celery beat claims a due window (``sending``);
    then ``sent``, or ``failed`` (and dead-lettered). The task sending it
    holds a lease (``claimed_by`` until ``claimed_until``) so that two copies
    of the task never send it twice; ``next_attempt_at`` is when it is due,
    for the recovery sweep.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_windows")
    method = models.CharField(max_length=50, default="email")
    frequency = models.CharField(max_length=10)
    closes_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "method", "frequency", "closes_at"], name="digest_window_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.frequency} digest of {self.user_id} closing {self.closes_at:%Y-%m-%d %H:%M}"


class DigestEntry(models.Model):
    """One delivery batched into a digest window."""

    window = models.ForeignKey(DigestWindow, on_delete=models.CASCADE, related_name="entries")
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="digest_entry")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "digest entries"

    def __str__(self) -> str:
        return f"delivery {self.delivery_id} in window {self.window_id}"


class DeadLetter(models.Model):
    """Work that cannot complete by itself: a delivery that failed permanently
    or ran out of attempts, or a pipeline step that raised (a poison event).

    It records what to run again (``task``, ``args``, ``kwargs`` and the rest
    of the Celery ``chain``) and why it stopped. ``status`` is ``dead`` until
    replayed; a replay sets ``replayed`` (once: replaying twice sends once)
    and re-enters the pipeline at the failed step. If the replayed work fails
    again, a new dead letter records it with ``replay_of`` pointing here.
    """

    class Status(models.TextChoices):
        DEAD = "dead"
        REPLAYED = "replayed"

    class Kind(models.TextChoices):
        DELIVERY = "delivery"  # one delivery: re-sent through its method
        DIGEST = "digest"  # one digest window: sent again as one message
        STEP = "step"  # a pipeline task: run again with its arguments and the rest of its chain

    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DEAD)
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="dead_letters")
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    method = models.CharField(max_length=50, blank=True)
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.CASCADE, related_name="dead_letters")
    digest_window = models.ForeignKey(
        DigestWindow, null=True, blank=True, on_delete=models.CASCADE, related_name="dead_letters"
    )
    task = models.CharField(max_length=100, help_text="The Celery task name.")
    task_id = models.CharField(max_length=64, blank=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    chain = models.JSONField(default=list, blank=True, help_text="The chain's remaining signatures.")
    exception = models.TextField(help_text="The exception type and message, or the delivery method's reason.")
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    announced_at = models.DateTimeField(
        null=True, blank=True, help_text="When the dead_letter queue's consumer received it."
    )
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.CharField(max_length=150, blank=True)
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "created_at"], name="deadletter_status_idx")]

    def __str__(self) -> str:
        what = f"{self.method} delivery {self.delivery_id}" if self.kind == self.Kind.DELIVERY else self.task
        return f"dead letter #{self.pk}: {what} ({self.status})"

    def history(self) -> list[DeadLetter]:
        """This dead letter and the ones it replays, newest first."""
        found: list[DeadLetter] = [self]
        while found[-1].replay_of_id is not None and len(found) < 100:
            previous = DeadLetter.objects.filter(pk=found[-1].replay_of_id).first()
            if previous is None:
                break
            found.append(previous)
        return found
