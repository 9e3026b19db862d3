"""The one module that sends work to the broker, by task name.

Nothing here imports :mod:`pipeline.tasks`: every message names its task
(``notiflow.events_drain``, ``notiflow.deliveries_send``, ...) and its queue,
so the domain never depends on the Celery task definitions.

**The doorbell.** Events are not carried by broker messages: the ``Event``
row is the queue (it is written in the caller's transaction, so it is also
the outbox), and a ``notiflow.events_drain`` message only says "there is
work". :func:`events_ring` publishes that message only when no drain is
already due: it sets the Redis key :data:`DOORBELL_KEY` with ``SET NX`` and
publishes only if the key was absent. A running drain holds the key
(:func:`doorbell_hold`) and releases it only when it finds no event left,
then looks once more (:func:`doorbell_release` and the caller's re-check), so
an event committed at any moment is either seen by a running drain or rings
a new one. Under load one message and one task execution serve many events;
a lone event still rings at once. The key expires after
``NOTIFLOW["DOORBELL_TTL"]`` seconds, so a drain that dies holding it delays
new events by that much at most, and the celery beat sweep rings for events
left waiting longer than ``OUTBOX_RELAY_AFTER`` (a lost message, a broker
outage at emit time). The pattern is the "wake-up flag" of a work queue
whose items live in a database (as in PostgreSQL's ``LISTEN``/``NOTIFY``
job queues), with Redis standing in for ``NOTIFY``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError

from delivery.registry import methods
from pipeline import deadletters
from pipeline.conf import DEAD_LETTER_QUEUE, notiflow_settings
from pipeline.models import DeadLetter

logger = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
DIGEST_QUEUE = "digest"
#: The Redis key (on the broker's Redis) that says "a drain is due or running".
DOORBELL_KEY = "notiflow:events:doorbell"
#: A Redis list: one item when events were committed while the doorbell was held (a lingering drain waits on it).
NUDGE_KEY = "notiflow:events:nudge"
#: What publishing raises when the broker (Redis) cannot be reached.
BROKER_ERRORS: tuple[type[BaseException], ...] = (BrokerOperationalError, RedisError, ConnectionError, OSError)


class _BrokerBreaker:
    """A circuit breaker for publishing: after the broker failed, callers skip it for ``pause`` seconds.

    During an outage each ``emit_event()`` would otherwise wait for the
    publish retry policy (about a second) before giving up; with the breaker
    open it returns at once and the event waits in the database for the
    celery beat sweep. Per process; the pattern is Nygard's "Circuit Breaker"
    (*Release It!*, 2007).
    """

    def __init__(self, pause: float = 5.0) -> None:
        self.pause = pause
        self._open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.pause

    def reset(self) -> None:
        self._open_until = 0.0


broker_breaker = _BrokerBreaker()

_clients: dict[int, redis.Redis] = {}


def _redis() -> redis.Redis:
    """This process's client of the broker's Redis (one per pid: a forked pool process gets its own)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        _clients.clear()
        _clients[pid] = client
    return client


#: Take the doorbell (KEYS[1]) if it is free and return 1; else nudge its holder (KEYS[2]) and return 0. ARGV[1]:
#: the expiry of both, ms. Sent whole with ``EVAL`` (Redis keeps the compiled script by its SHA1).
_RING = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 0)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 0
"""


def _ttl_ms() -> int:
    return int(float(notiflow_settings.DOORBELL_TTL) * 1000)


def events_ring(*, force: bool = False) -> bool:
    """Make sure a ``notiflow.events_drain`` will run; ``False`` if the broker could not be reached.

    Publishes one message on the ``events`` queue unless the doorbell is
    held already (a drain is queued or running and will see every committed
    event); ``force`` publishes anyway (the celery beat sweep, a drain that
    stops with work left). Never raises for a broker outage: the events
    stay in the database and the sweep rings for them later. While
    :data:`broker_breaker` is open (a publish failed less than 5 s ago) it
    does not try, unless ``force``.
    """
    if broker_breaker.is_open() and not force:
        return False
    try:
        # One round trip (a script runs atomically): take the doorbell if it is free, else nudge the drain that
        # holds it, in case it is lingering (see doorbell_wait).
        taken = _redis().eval(_RING, 2, DOORBELL_KEY, NUDGE_KEY, str(_ttl_ms()))
        if taken or force:
            current_app.send_task("notiflow.events_drain", queue=EVENTS_QUEUE)
    except BROKER_ERRORS as exc:
        broker_breaker.trip()
        logger.warning("Broker unreachable; new events wait in the database for the sweep: %s", exc)
        return False
    broker_breaker.reset()
    return True


class _Ringer:
    """Rings the doorbell (:func:`events_ring`) from a daemon thread of this process, so that ``emit_event()``
    returns without waiting for Redis; requests made while it rings make one more ring, not one each.

    :meth:`request` starts the thread on first use in each process (a forked child starts its own) and
    never blocks on the broker. :meth:`flush` rings at once if a request is pending and waits for a ring in
    progress: at interpreter exit (registered with ``atexit``) and in tests.
    """

    def __init__(self, ring: Callable[[], object] | None = None) -> None:
        self._ring_once = ring  # default: events_ring (a test passes its own)
        self._wanted = threading.Event()
        self._ringing = threading.Lock()  # held while a ring is in progress
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def request(self) -> None:
        """Ask for a ring after the event just committed (an ``on_commit`` hook of ``emit_event()``)."""
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            with self._start:
                if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                    self._wanted = threading.Event()  # a child does not inherit its parent's state
                    self._ringing = threading.Lock()
                    self._thread = threading.Thread(target=self._run, name="notiflow-doorbell", daemon=True)
                    self._pid = os.getpid()
                    self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            with self._ringing:
                if not self._wanted.is_set():  # flushed meanwhile
                    continue
                self._wanted.clear()
                self._ring()

    def flush(self) -> None:
        """Ring now if a ring was requested and has not started; return once no ring is in progress."""
        if self._pid != os.getpid():
            return
        with self._ringing:
            if self._wanted.is_set():
                self._wanted.clear()
                self._ring()

    def _ring(self) -> None:
        try:
            (self._ring_once or events_ring)()
        except Exception:
            logger.exception("Ringing the doorbell failed; waiting events get a drain from the sweep")


#: This process's doorbell ringer (see :class:`_Ringer`).
ringer = _Ringer()
atexit.register(ringer.flush)


def doorbell_hold() -> None:
    """Called by a running drain before each batch: keep the doorbell set (and its expiry fresh), so that
    emitters do not publish a message per event while this drain will see their events anyway."""
    _redis().set(DOORBELL_KEY, b"1", px=_ttl_ms())


def doorbell_wait(timeout: float) -> bool:
    """Called by a drain that holds the doorbell and found no event: wait up to ``timeout`` seconds for an
    emitter's nudge (events committed meanwhile); ``True`` if one came. A drain that lingers like this takes
    the next events without a broker message per event and without delay."""
    # Redis 6+ takes a fractional timeout; redis-py's stubs say int.
    return _redis().blpop([NUDGE_KEY], timeout=timeout) is not None  # type: ignore[arg-type]


def doorbell_take() -> bool:
    """Called by a drain that let the doorbell go and then found events: take it back unless an emitter rang it
    meanwhile (``SET NX``). ``False``: a new drain is on its way and will see every committed event, so this
    one may stop instead of running beside it."""
    return bool(_redis().set(DOORBELL_KEY, b"1", nx=True, px=_ttl_ms()))


def doorbell_release() -> None:
    """Called by a drain that found no event: clear the doorbell, so the next emit rings a new drain.

    The caller must look for events once more after this: an emitter that
    found the doorbell set just before the release relies on that look.
    """
    _redis().delete(DOORBELL_KEY)


def deliveries_dispatch(*, send: Mapping[str, Sequence[int]], digest: Sequence[int] = ()) -> None:
    """Queue ``notiflow.deliveries_send`` per method (``{method: [delivery id]}``) on the method's queue
    and ``notiflow.digest_append`` for digest deliveries, in batches of ``DELIVERY_BATCH_SIZE``.

    Raises the broker's error if it cannot be reached (the deliveries stay
    due in the database; the recovery sweep queues them again).
    """
    size = notiflow_settings.DELIVERY_BATCH_SIZE
    for method, ids in send.items():
        for start in range(0, len(ids), size):
            current_app.send_task(
                "notiflow.deliveries_send", args=(method, list(ids[start : start + size])), queue=methods.queue(method)
            )
    for start in range(0, len(digest), size):
        current_app.send_task("notiflow.digest_append", args=(list(digest[start : start + size]),), queue=DIGEST_QUEUE)


def digest_send(*, window_id: int) -> None:
    """Queue ``notiflow.digest_send`` for one claimed digest window."""
    current_app.send_task("notiflow.digest_send", args=(window_id,), queue=DIGEST_QUEUE)


def dead_letter_announce(*, dead_letter_id: int, **_: Any) -> None:
    """Publish ``notiflow.dead_letter`` on the ``dead_letter`` queue; a broker outage only logs (the row stays).

    The receiver of :data:`pipeline.deadletters.dead_letter_recorded` (connected by the ``pipeline`` app).
    """
    try:
        current_app.send_task("notiflow.dead_letter", args=(dead_letter_id,), queue=DEAD_LETTER_QUEUE)
    except Exception as exc:  # noqa: BLE001 - the row is stored; the announcement is best effort
        logger.warning("Dead letter #%s stored but not announced (broker unreachable?): %s", dead_letter_id, exc)


def task_send(*, task: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
    """Queue the task named ``task`` on its routed queue (what celery beat does, from code: the demo, an operator)."""
    current_app.send_task(task, args=list(args), kwargs=dict(kwargs or {}))


def dead_letters_replay(*, letters: Iterable[DeadLetter], replayed_by: str = "") -> deadletters.ReplayReport:
    """Replay dead letters (:func:`pipeline.deadletters.dead_letters_replay`) and queue their work on commit.

    A broker outage while queueing is logged, not raised: the database says
    the work is due, and the recovery sweep queues it.
    """

    def publish() -> None:
        try:
            deliveries_dispatch(send=report.deliveries)
            for window_id in report.windows:
                digest_send(window_id=window_id)
            for task, args, kwargs in report.steps:
                task_send(task=task, args=args, kwargs=kwargs)
            if report.events:
                events_ring(force=True)
        except BROKER_ERRORS as exc:
            logger.warning("Replay stored, queueing failed (the recovery sweep will queue it): %s", exc)

    with transaction.atomic():
        report = deadletters.dead_letters_replay(letters=letters, replayed_by=replayed_by)
        transaction.on_commit(publish)
    return report
