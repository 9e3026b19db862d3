"""The one place Celery is configured (Celery's own lowercase setting names).

Values that depend on the deployment come from Django settings, which read
the environment (``REDIS_URL``, ``NOTIFLOW``); nothing else configures Celery.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from delivery.registry import methods
from pipeline.conf import DEAD_LETTER_QUEUE, notiflow_settings

broker_url = settings.REDIS_URL
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Must exceed the longest retry countdown, or Redis redelivers a message that is
    # only waiting for its ETA and the task runs twice (checked below).
    "visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT,  # seconds
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# emit_event() must not hang in a request when the broker is down: give up after
# about a second and leave the event in the outbox for the relay.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.5}

# The chain passes results between tasks in its messages; nothing reads a result backend.
task_ignore_result = True
task_serializer = "json"
accept_content = ["json"]

# At-least-once execution; every task is idempotent (see pipeline.services).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Events for Flower: the worker's (received, started, succeeded, failed, retried). Not the publisher's
# "task-sent" event: it is one more Redis PUBLISH in every emit_event() that rings the doorbell (16 % of
# emit_event()'s time under cProfile, 2026-11-22), and Flower shows a task from "received" on without it.
worker_send_task_events = settings.CELERY_TASK_EVENTS
task_send_sent_event = False

task_default_queue = "events"
task_queues = [Queue(name) for name in ["events", "digest", DEAD_LETTER_QUEUE, *methods.queues()]]
task_routes = {
    "notiflow.events_drain": {"queue": "events"},
    "notiflow.outbox_relay": {"queue": "events"},
    "notiflow.pipeline_recover": {"queue": "events"},
    "notiflow.dead_letter": {"queue": DEAD_LETTER_QUEUE},
    "notiflow.digest_append": {"queue": "digest"},
    "notiflow.digests_flush_due": {"queue": "digest"},
    "notiflow.digest_send": {"queue": "digest"},
    # notiflow.deliveries_send goes to each method's own queue, chosen at fan-out.
}

beat_schedule = {
    "digests-flush-due": {"task": "notiflow.digests_flush_due", "schedule": 60.0},
    "outbox-relay": {"task": "notiflow.outbox_relay", "schedule": float(notiflow_settings.SWEEP_INTERVAL)},
    "pipeline-recover": {"task": "notiflow.pipeline_recover", "schedule": float(notiflow_settings.SWEEP_INTERVAL)},
}

timezone = "UTC"
enable_utc = True


def visibility_timeout_check(*, visibility_timeout: float, policies: list[dict[str, float]]) -> None:
    """Refuse a broker ``visibility_timeout`` (seconds) not longer than every retry policy's ``BACKOFF_CAP``.

    A retry waits in a worker as an unacknowledged message with an ETA; if
    Redis's visibility timeout ends first, Redis hands it to another worker
    and it runs twice (Celery's "Redis: caveats" documentation). Raises
    ``ImproperlyConfigured``.
    """
    longest = max(float(policy["BACKOFF_CAP"]) for policy in policies)
    if visibility_timeout <= longest:
        raise ImproperlyConfigured(
            f"broker visibility_timeout ({visibility_timeout} s) must exceed the longest retry countdown "
            f"({longest} s), or retried tasks are redelivered early and run twice."
        )


visibility_timeout_check(
    visibility_timeout=broker_transport_options["visibility_timeout"],
    policies=[methods.retry_policy(alias) for alias in methods.aliases()],
)
