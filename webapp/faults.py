"""Fault-injection drills on the real processes of a :class:`~webapp.stack.Stack`.

Each drill emits events of the test-only type ``test.fault`` (defined in
``tests.settings``: one email per event, one recipient per event, the
recipients taken in turn), injects one fault while they are in flight,
repairs it, waits until the pipeline has settled, and counts what happened
from the outside: notifications in the database, emails in the SMTP
server's Maildir (matched to deliveries by their ``Message-ID``), and dead
letters. The integration tests (``tests/integration/test_faults.py``) assert
on the :class:`DrillReport`; ``bench/faults.py`` prints a table of them.

The stack must run with ``tests.settings`` (its short clocks: retries capped
at 3 s, the outbox relay and the recovery sweep every 2 s, recovery after
10 s) and with its processes started ``separately``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from argparse import ArgumentParser
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from webapp.mailsink import Maildir, PipeliningAnnounced
from webapp.stack import Stack, StackError, wait_for

EVENT_TYPE = "test.fault"


class RejectingHandler(PipeliningAnnounced):
    """An aiosmtpd handler that refuses every recipient with ``550``: a permanent rejection (RFC 5321). It
    announces ``PIPELINING`` as the stack's server does, so the refusal reaches the pipelining client."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        return "550 5.1.1 Mailbox unavailable (notiflow fault injection)"


class SlowMaildir(Maildir):
    """The stack's Maildir sink answering each message after ``low`` to ``high`` seconds (uniform): a slow
    provider. ``-c webapp.faults.SlowMaildir <dir> <low> <high>``."""

    def __init__(self, mail_dir: str, low: float, high: float) -> None:
        super().__init__(mail_dir)
        self.low, self.high = low, high

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(random.uniform(self.low, self.high))  # noqa: S311 - a delay, not cryptography
        return await super().handle_DATA(server, session, envelope)

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> SlowMaildir:
        if len(args) != 3:
            parser.error("webapp.faults.SlowMaildir takes three arguments: the Maildir folder, low and high seconds")
        return cls(args[0], float(args[1]), float(args[2]))


@dataclass
class DrillReport:
    """What one drill observed. Times are in seconds.

    ``duplicates`` counts notifications beyond one per (event, recipient)
    and emails beyond one per delivery; ``lost`` counts expected
    notifications and emails that never arrived. ``in_flight`` is how many
    of the emails were not yet sent when the fault was injected.
    ``recover_seconds`` runs from the repair (process back, replay run) to
    the moment every expected email is sent.
    """

    scenario: str
    events: int
    notifications: int = 0
    emails: int = 0
    duplicates: int = 0
    lost: int = 0
    dead_letters: int = 0
    in_flight: int = 0
    recover_seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    HEADER = (
        "scenario",
        "events",
        "in flight at fault",
        "stored",
        "emails",
        "duplicates",
        "lost",
        "dead letters",
        "recover (s)",
    )

    def row(self) -> tuple[str, ...]:
        return (
            self.scenario,
            str(self.events),
            str(self.in_flight),
            str(self.notifications),
            str(self.emails),
            str(self.duplicates),
            str(self.lost),
            str(self.dead_letters),
            f"{self.recover_seconds:.1f}",
        )


class Drill:
    """One run of events against ``stack``, to ``recipients`` (user ids) in turn."""

    def __init__(self, stack: Stack, recipients: Sequence[int], *, settle_timeout: float = 300.0) -> None:
        self.stack = stack
        self.recipients = list(recipients)
        self.run = uuid.uuid4().hex[:8]
        self.event_ids: list[uuid.UUID] = []
        self.poison_ids: list[uuid.UUID] = []
        self.emit_seconds: list[float] = []  # how long each emit_event() call took
        self.settle_timeout = settle_timeout
        for f in stack.mail_dir.glob("*/*"):
            f.unlink()

    # -- emitting ---------------------------------------------------------
    def emit(self, count: int, *, poison_at: int | None = None, pace: float = 0.0) -> None:
        """Emit ``count`` events; the one at index ``poison_at`` cannot render. ``pace``: seconds between calls."""
        from pipeline import Audience, emit_event

        for i in range(count):
            seq = len(self.event_ids) + len(self.poison_ids)
            poison = i == poison_at
            began = time.monotonic()
            event_id = emit_event(
                event_type=EVENT_TYPE,
                audience=Audience.users(self.recipients[seq % len(self.recipients)]),
                data={"run": self.run, "seq": seq, **({"poison": True} if poison else {})},
            )
            self.emit_seconds.append(time.monotonic() - began)
            (self.poison_ids if poison else self.event_ids).append(event_id)
            if pace:
                time.sleep(pace)

    # -- observing --------------------------------------------------------
    def sent(self) -> int:
        """Emails of this run recorded as sent."""
        from pipeline.models import Delivery

        return Delivery.objects.filter(notification__event_id__in=self.event_ids, status="sent").count()

    def dead(self) -> int:
        """Dead letters of this run's events (still dead or replayed)."""
        from pipeline.models import DeadLetter

        return DeadLetter.objects.filter(event_id__in=[*self.event_ids, *self.poison_ids]).count()

    def wait_until(self, condition: Callable[[], bool], *, timeout: float | None = None, what: str = "") -> float:
        """Wait for ``condition``; return the seconds it took. Raises :class:`StackError` on time-out."""
        start = time.monotonic()
        if not wait_for(condition, timeout=timeout or self.settle_timeout, interval=0.25):
            raise StackError(
                f"drill {self.run}: {what or 'condition'} not reached in {timeout or self.settle_timeout} s"
            )
        return time.monotonic() - start

    def wait_sent(self, at_least: int | None = None) -> float:
        goal = len(self.event_ids) if at_least is None else at_least
        return self.wait_until(lambda: self.sent() >= goal, what=f"{goal} emails sent")

    def report(self, scenario: str, *, recover_seconds: float = 0.0, in_flight: int = 0) -> DrillReport:
        """Count notifications, emails and dead letters of this run (waits 1 s for late duplicates first)."""
        from pipeline.models import Delivery, Notification

        time.sleep(1.0)
        stored = list(Notification.objects.filter(event_id__in=self.event_ids).values_list("event_id", "recipient_id"))
        per_notification = Counter(stored)
        deliveries = {
            f"<notiflow.delivery-{pk}@": pk
            for pk in Delivery.objects.filter(notification__event_id__in=self.event_ids, method="email").values_list(
                "pk", flat=True
            )
        }
        per_delivery: Counter[int] = Counter()
        strangers = 0
        for message in self.stack.emails():
            key = str(message.get("Message-ID", "")).split("@")[0] + "@"
            if key in deliveries:
                per_delivery[deliveries[key]] += 1
            else:
                strangers += 1
        duplicates = sum(n - 1 for n in per_notification.values()) + sum(n - 1 for n in per_delivery.values())
        lost = (len(self.event_ids) - len(per_notification)) + (len(self.event_ids) - len(per_delivery))
        return DrillReport(
            scenario=scenario,
            events=len(self.event_ids) + len(self.poison_ids),
            notifications=len(stored),
            emails=sum(per_delivery.values()),
            duplicates=duplicates,
            lost=lost,
            dead_letters=self.dead(),
            in_flight=in_flight,
            recover_seconds=recover_seconds,
            notes={"emails_of_no_delivery": strangers},
        )


# -- the drills -----------------------------------------------------------------


def drill_baseline(stack: Stack, recipients: Sequence[int], size: int) -> DrillReport:
    """No fault: the time ``size`` events take to be delivered, to compare the others with."""
    drill = Drill(stack, recipients)
    start = time.monotonic()
    drill.emit(size)
    drill.wait_sent()
    return drill.report("no fault (baseline)", recover_seconds=time.monotonic() - start)


def _fault_mid_run(
    stack: Stack, recipients: Sequence[int], size: int, scenario: str, *, fault: Callable[[], str], pause: float
) -> DrillReport:
    """Emit ``size`` events (from a thread, so the fault lands while events are still coming in, however fast
    the pipeline keeps up); once a tenth of the emails are out, call ``fault`` (it returns the process it
    took down), wait ``pause`` seconds, start that process again and wait until every email is sent."""
    from django.db import connection

    drill = Drill(stack, recipients)

    def emit_all() -> None:
        try:
            drill.emit(size)
        finally:
            connection.close()  # this thread's own database connection

    emitter = threading.Thread(target=emit_all, name="drill-emitter")
    emitter.start()
    drill.wait_sent(at_least=max(1, size // 10))
    process = fault()
    in_flight = size - drill.sent()
    time.sleep(pause)
    stack.restart(process)
    emitter.join()
    return drill.report(scenario, recover_seconds=drill.wait_sent(), in_flight=in_flight)


def drill_worker_killed(stack: Stack, recipients: Sequence[int], size: int) -> DrillReport:
    """SIGKILL the worker's main process while the events are in flight, then start a new worker."""

    def kill() -> str:
        stack.kill_worker()
        return "worker"

    return _fault_mid_run(stack, recipients, size, "worker killed (SIGKILL)", fault=kill, pause=1.0)


def drill_redis_restarted(stack: Stack, recipients: Sequence[int], size: int) -> DrillReport:
    """Stop Redis in the middle of a run and start it again on the same data (its AOF)."""

    def stop() -> str:
        stack.stop_process("redis")
        return "redis"

    return _fault_mid_run(stack, recipients, size, "Redis restarted", fault=stop, pause=2.0)


def drill_broker_down(stack: Stack, recipients: Sequence[int], size: int, *, outage: float = 30.0) -> DrillReport:
    """Stop Redis for ``outage`` seconds while ``size`` events are emitted; ``emit_event()`` must not raise."""
    drill = Drill(stack, recipients)
    stack.stop_process("redis")
    start = time.monotonic()
    drill.emit(size, pace=outage / max(size, 1) * 0.9)
    time.sleep(max(0.0, outage - (time.monotonic() - start)))
    in_flight = size - drill.sent()
    stack.restart("redis")
    recover = drill.wait_sent()
    report = drill.report(f"broker down {outage:.0f} s", recover_seconds=recover, in_flight=in_flight)
    report.notes["slowest_emit_seconds"] = max(drill.emit_seconds, default=0.0)
    report.notes["emits_over_half_a_second"] = sum(seconds > 0.5 for seconds in drill.emit_seconds)
    return report


def drill_smtp_down(stack: Stack, recipients: Sequence[int], size: int, *, outage: float = 60.0) -> DrillReport:
    """Stop the SMTP server for ``outage`` seconds: emails are retried and sent once it is back."""
    drill = Drill(stack, recipients)
    stack.stop_process("smtp")
    start = time.monotonic()
    drill.emit(size)
    time.sleep(max(0.0, outage - (time.monotonic() - start)))
    in_flight = size - drill.sent()
    stack.restart("smtp")
    recover = drill.wait_sent()
    return drill.report(f"SMTP down {outage:.0f} s", recover_seconds=recover, in_flight=in_flight)


@contextlib.contextmanager
def _smtp_replaced(stack: Stack, handler: type, *args: str) -> Iterator[None]:
    """The stack's SMTP server stopped and an aiosmtpd with ``handler`` (a class of this module; ``args`` for
    its ``from_cli``) serving its port instead, until the block ends. The caller starts the stack's own again."""
    stack.stop_process("smtp")
    replacement = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{stack.ports['smtp']}",
            "-c",
            f"{__name__}.{handler.__name__}",
            *args,
        ],
        env=stack.env,
        start_new_session=True,
    )
    try:
        stack.wait_ready(processes=["smtp"])
        yield
    finally:
        os.killpg(replacement.pid, signal.SIGTERM)
        replacement.wait(timeout=20)


def drill_smtp_rejects(stack: Stack, recipients: Sequence[int], size: int) -> DrillReport:
    """An SMTP server that rejects every recipient (550): every email is dead-lettered. Then the normal
    server comes back and ``manage.py deadletters replay`` runs twice: each email is sent exactly once."""
    from pipeline.models import DeadLetter

    drill = Drill(stack, recipients)
    with _smtp_replaced(stack, RejectingHandler):
        drill.emit(size)
        dead = DeadLetter.objects.filter(event_id__in=drill.event_ids, status="dead")
        drill.wait_until(lambda: dead.count() >= size, what=f"{size} dead letters")
    dead_before_replay = dead.count()
    stack.restart("smtp")
    start = time.monotonic()
    stack.manage("deadletters", "replay", "--event-type", EVENT_TYPE, "--since", "1h")
    stack.manage("deadletters", "replay", "--event-type", EVENT_TYPE, "--since", "1h")  # a second replay sends nothing
    drill.wait_sent()
    report = drill.report("SMTP rejects (550), then replay", recover_seconds=time.monotonic() - start)
    report.notes["dead_before_replay"] = dead_before_replay
    return report


def drill_slow_provider(
    stack: Stack, recipients: Sequence[int], size: int, *, low: float = 2.0, high: float = 5.0
) -> DrillReport:
    """An SMTP server that takes ``low`` to ``high`` seconds to accept each message, while ``size`` events are
    emitted at once: the email batches take longer than ``DELIVERY_LEASE``, and the recovery sweep looks for
    lapsed claims all the while. Every email must arrive once. ``notes["longest_claim_seconds"]`` is the
    longest time one send task was seen holding deliveries (polled every 0.25 s), against
    ``notes["lease_seconds"]``."""
    from pipeline.conf import notiflow_settings
    from pipeline.models import Delivery

    drill = Drill(stack, recipients, settle_timeout=size * high + 120)
    held: dict[str, list[float]] = {}  # claimer -> [first seen, last seen]
    try:
        with _smtp_replaced(stack, SlowMaildir, str(stack.mail_dir), str(low), str(high)):
            start = time.monotonic()
            drill.emit(size)
            claims = Delivery.objects.filter(notification__event_id__in=drill.event_ids, method="email").exclude(
                claimed_by=""
            )

            def settled() -> bool:
                now = time.monotonic()
                for claimer in set(claims.values_list("claimed_by", flat=True)):
                    held.setdefault(claimer, [now, now])[1] = now
                return drill.sent() >= size

            drill.wait_until(settled, what=f"{size} emails sent")
            elapsed = time.monotonic() - start
    finally:
        stack.restart("smtp")
    report = drill.report(f"slow SMTP ({low:g}-{high:g} s a message)", recover_seconds=elapsed)
    report.notes["lease_seconds"] = float(notiflow_settings.DELIVERY_LEASE)
    report.notes["longest_claim_seconds"] = round(max((last - first for first, last in held.values()), default=0.0), 1)
    report.notes["send_tasks_seen"] = len(held)
    return report


def drill_poison(stack: Stack, recipients: Sequence[int], size: int) -> DrillReport:
    """One event in the middle of ``size`` cannot render its template: it alone is dead-lettered."""
    drill = Drill(stack, recipients)
    start = time.monotonic()
    drill.emit(size, poison_at=size // 2)
    drill.wait_sent()
    drill.wait_until(lambda: drill.dead() >= 1, what="the poison event dead-lettered")
    return drill.report("poison event", recover_seconds=time.monotonic() - start)


def _broker_messages(stack: Stack) -> int:
    """Messages held by the broker's database: every list (queues) and the unacknowledged hash."""
    import redis

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    total = 0
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            total += client.llen(key)  # type: ignore[operator]  # redis-py's sync/async union
        elif kind == b"hash":
            total += client.hlen(key)  # type: ignore[operator]
    return total


def drill_bad_input(stack: Stack, recipients: Sequence[int]) -> DrillReport:
    """Every kind of bad input raises its documented error, and neither the outbox nor the broker gains anything.

    The worker and celery beat are stopped meanwhile, so the broker's message
    count can only change through these calls. ``notes["errors"]`` maps each
    case to the name of the exception class raised (or ``None``).
    """
    from pipeline import Audience, emit_event
    from pipeline.models import Event

    one = Audience.users(*recipients[:1])
    cases: dict[str, dict[str, Any]] = {
        "unknown event type": {"event_type": "test.no_such_type", "audience": one},
        "audience of the wrong type": {"event_type": EVENT_TYPE, "audience": "everyone"},
        "data not a dict": {"event_type": EVENT_TYPE, "audience": one, "data": [1, 2]},
        "data not serialisable": {"event_type": EVENT_TYPE, "audience": one, "data": {"when": object()}},
        "data oversized": {"event_type": EVENT_TYPE, "audience": one, "data": {"x": "x" * (64 * 1024)}},
        "empty audience": {"event_type": EVENT_TYPE, "audience": []},
        "unknown user ids": {"event_type": EVENT_TYPE, "audience": [10**9]},
        "actor of the wrong type": {"event_type": EVENT_TYPE, "audience": one, "actor": "bob"},
    }
    stack.stop_process("beat")
    stack.stop_process("worker")
    try:
        events_before, messages_before = Event.objects.count(), _broker_messages(stack)
        errors: dict[str, str | None] = {}
        for name, kwargs in cases.items():
            try:
                emit_event(**kwargs)
            except Exception as exc:  # noqa: BLE001 - recorded; the caller checks the class
                errors[name] = type(exc).__name__
            else:
                errors[name] = None
        outbox_added = Event.objects.count() - events_before
        broker_added = _broker_messages(stack) - messages_before
    finally:
        stack.restart("worker", "beat")
    report = DrillReport(scenario="bad input", events=len(cases))
    report.notes = {"errors": errors, "outbox_rows_added": outbox_added, "broker_messages_added": broker_added}
    return report
