"""WebSocket consumers: the notification relay and the health check.

The full protocol (every frame and close code) is in the README's
"WebSocket protocol" section; in short, on ``/ws/notifications/`` (and
``/ws/notifications/<user_id>/``, which must name the authenticated user):

server → client
  ``hello`` once on connect; ``resumed`` after a resume (``?cursor=`` or a
  ``resume`` frame); ``notification`` per push; ``read_state`` when the
  user's read state changes anywhere; ``broadcast``; ``pong``; ``error``.
client → server
  ``ping``, ``mark_read``, ``mark_seen``, ``resume`` (see
  :mod:`webapp.realtime.frames`).
close codes
  4401 no valid credential, the token expired while the socket was open, or
  the session it was opened with signed out; 4403 the path names another
  user, or the user was deactivated; 4409 the user has ``MAX_SOCKETS_PER_USER``
  sockets open on this process already; 4413 a frame over
  ``MAX_FRAME_BYTES``; 4429 over the rate limit (a token bucket per socket,
  and one per user shared by the user's sockets on this process).

Every handler of one socket runs in turn (Channels dispatches one message at
a time per consumer), so a resume is always sent complete before any push
that arrived meanwhile, and that push is dropped if the resume carried it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection

from delivery.websocket import presence_join, presence_leave, user_group
from pipeline.conf import notiflow_settings
from pipeline.selectors import (
    inbox_position,
    inboxes_push_seq,
    notifications_after,
    notifications_recent_unread,
    notifications_streamed_after,
    notifications_unread_count,
)
from pipeline.services import notifications_mark
from webapp.realtime.auth import SUBPROTOCOL
from webapp.realtime.frames import FrameError, TokenBucket, frame_parse
from webapp.realtime.revalidation import sockets_revoked
from webapp.realtime.stream import PushStream

logger = logging.getLogger(__name__)
T = TypeVar("T")

CLOSE_NORMAL = 1000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_SOCKETS = 4409
CLOSE_TOO_LARGE = 4413
CLOSE_RATE_LIMITED = 4429

BROADCAST_GROUP = "all"
#: Where a client that missed more than ``RESUME_LIMIT`` notifications refetches them.
REFETCH_URL = "/api/notifications/"


def role_group(name: str) -> str:
    """The Channels group of one role's members (non-group-name characters replaced)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"role.{safe}"[:99]


class JsonFrameConsumer(AsyncWebsocketConsumer):
    """Frame handling shared by the relay and the health check.

    Each frame costs a token from the socket's bucket (``WEBSOCKET["RATE"]``
    per second, ``WEBSOCKET["BURST"]`` at most): an empty bucket closes
    the socket with 4429. A frame over ``MAX_FRAME_BYTES`` closes it with
    4413. A binary frame, bad JSON, an invalid or unknown frame gets an
    ``error`` frame and the socket stays open. A handler that raises gets a
    ``server_error`` frame; the error is logged and the socket stays open.
    Subclasses handle a parsed frame in ``frame_<type>(frame)``.
    """

    #: The frame types this consumer accepts (others are ``unknown_type``).
    accepts: tuple[str, ...] = ("ping",)
    bucket: TokenBucket | None = None
    closing = False

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def send_error(self, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail})

    async def close_with(self, code: int, error: str, detail: str) -> None:
        """Send an ``error`` frame saying why, then close with ``code``."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):  # the peer may be gone already
            await self.send_error(error, detail)
        await self.close(code=code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.closing:
            return
        limits = notiflow_settings.WEBSOCKET
        over = self.over_rate(limits)
        if over is not None:
            await self.close_with(CLOSE_RATE_LIMITED, "rate_limited", over)
            return
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode("utf-8", "surrogatepass"))
        if size > int(limits["MAX_FRAME_BYTES"]):
            await self.close_with(
                CLOSE_TOO_LARGE, "too_large", f"Frames are at most {limits['MAX_FRAME_BYTES']} bytes; got {size}."
            )
            return
        if text_data is None:
            await self.send_error("binary_frame", "Send JSON text frames, not binary ones.")
            return
        try:
            frame = frame_parse(text_data)
            if frame["type"] not in self.accepts:
                raise FrameError("unknown_type", f"Frame type {frame['type']!r} is not used here; send 'ping'.")
        except FrameError as exc:
            await self.send_error(exc.code, exc.detail)
            return
        try:
            await getattr(self, f"frame_{frame['type']}")(frame)
        except Exception:
            logger.exception("handling a %r frame failed", frame["type"])
            await self.send_error("server_error", "The server could not handle this frame; it was logged.")

    def over_rate(self, limits: dict[str, Any]) -> str | None:
        """Spend a token for one frame: ``None``, or why the socket is over its rate (it is closed with 4429)."""
        if self.bucket is None:
            self.bucket = TokenBucket(rate=float(limits["RATE"]), burst=float(limits["BURST"]))
        if not self.bucket.take():
            return f"More than {limits['RATE']} frames per second (bursts of {limits['BURST']})."
        return None

    async def frame_ping(self, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"} if frame["id"] is None else {"type": "pong", "id": frame["id"]})


@database_sync_to_async
def _hello(user_id: int, resuming: bool) -> tuple[int, tuple[int, int], list[dict[str, Any]]]:
    """``(unread_count, (latest_cursor, latest_push_seq), recent)``; ``recent`` is empty when the client resumes.

    The inbox is read first and bounds the other two, so a notification
    committed meanwhile is in neither and reaches the socket as a push.
    """
    latest, seq = inbox_position(user_id=user_id)
    limit = notiflow_settings.RECENT_ON_CONNECT
    recent = [] if resuming else notifications_recent_unread(user_id=user_id, limit=limit, up_to=latest)
    return notifications_unread_count(user_id=user_id, up_to=latest), (latest, seq), recent


@database_sync_to_async
def _missed(user_id: int, cursor: int) -> tuple[list[dict[str, Any]], bool, tuple[int, int]]:
    """``(missed, complete, (latest_cursor, latest_push_seq))``: the notifications above ``cursor`` up to the
    inbox's latest (at most ``RESUME_LIMIT``), oldest first, and whether that is all of them (``False`` too for a
    ``cursor`` above the latest: the client's state is not the server's)."""
    limit = int(notiflow_settings.WEBSOCKET["RESUME_LIMIT"])
    latest, seq = inbox_position(user_id=user_id)
    if cursor > latest:
        return [], False, (latest, seq)
    missed, complete = notifications_after(user_id=user_id, cursor=cursor, limit=limit, up_to=latest)
    return missed, complete, (latest, seq)


@database_sync_to_async
def _fill_page(
    user_id: int, cursor: int, numbers: list[int] | None, below: int | None, limit: int
) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """One page of a fill: the user's pushed notifications above ``cursor`` as ``(push_seq, payload)``, oldest
    first, at most ``limit`` (of ``numbers``, below the cursor ``below``, when given); and whether that was all."""
    return notifications_streamed_after(user_id=user_id, cursor=cursor, limit=limit, below=below, numbers=numbers)


def _refetch_frame(cursor: int) -> dict[str, Any]:
    """The ``resumed`` frame that tells a client it missed too many: refetch over REST, carry on from ``cursor``."""
    return {"type": "resumed", "recovered": False, "notifications": [], "cursor": cursor, "refetch": REFETCH_URL}


_inbox_position = database_sync_to_async(lambda user_id: inbox_position(user_id=user_id))


#: A fill reads at most this many pages of ``RESUME_LIMIT`` notifications (5,000 with the default): a socket
#: further behind is sent the refetch frame of a resume that missed too many.
FILL_PAGES = 10


_push_seqs = database_sync_to_async(lambda user_ids: inboxes_push_seq(user_ids=user_ids))


class _QuietCheck:
    """Sockets whose stream went quiet, checked together: one query reads their users' ``last_push_seq``, and
    a socket behind it (its last push was lost, and nothing came after it to show the gap) fills from the
    database. One per event loop (an ASGI process runs one)."""

    #: Seconds to gather the sockets that went quiet together (an announcement's) into one query.
    GATHER = 0.05

    def __init__(self) -> None:
        self.due: set[NotificationConsumer] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, consumer: NotificationConsumer) -> None:
        self.due.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def discard(self, consumer: NotificationConsumer) -> None:
        self.due.discard(consumer)

    async def _run(self) -> None:
        await asyncio.sleep(self.GATHER)
        while self.due:
            batch, self.due = self.due, set()
            try:
                latest = await _push_seqs(sorted({c.user_id for c in batch}))
            except Exception:
                logger.exception("checking %d quiet sockets for lost pushes failed", len(batch))
                continue
            for consumer in batch:
                if not consumer.closing and latest.get(consumer.user_id, 0) > consumer.stream.seq:
                    consumer.fill_soon()


_revoked = database_sync_to_async(sockets_revoked)


class _Sockets:
    """The relay's open sockets on one event loop (an ASGI process runs one), by user: the cap on a user's
    sockets, the user's token bucket shared by them, and a check every ``REVALIDATE`` seconds (sooner when
    the channel layer's ``group_expiry`` asks) that closes the sockets whose credentials were revoked
    (:mod:`webapp.realtime.revalidation`) and renews the others' group memberships when due."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[NotificationConsumer]] = {}
        self.buckets: dict[int, TokenBucket] = {}
        self.task: asyncio.Task[None] | None = None

    def admit(self, consumer: NotificationConsumer) -> bool:
        """Count ``consumer`` as open, unless its user has ``MAX_SOCKETS_PER_USER`` open here already."""
        sockets = self.by_user.setdefault(consumer.user_id, set())
        if len(sockets) >= int(notiflow_settings.WEBSOCKET["MAX_SOCKETS_PER_USER"]):
            return False
        sockets.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return True

    def discard(self, consumer: NotificationConsumer) -> None:
        sockets = self.by_user.get(consumer.user_id)
        if sockets is None:
            return
        sockets.discard(consumer)
        if not sockets:
            del self.by_user[consumer.user_id]
            self.buckets.pop(consumer.user_id, None)

    def take(self, user_id: int, limits: dict[str, Any]) -> bool:
        """Spend one of ``user_id``'s tokens (``USER_RATE`` per second, ``USER_BURST`` at most)."""
        bucket = self.buckets.get(user_id)
        if bucket is None:
            bucket = self.buckets[user_id] = TokenBucket(
                rate=float(limits["USER_RATE"]), burst=float(limits["USER_BURST"])
            )
        return bucket.take()

    @staticmethod
    def interval(layer: Any) -> float:
        """Seconds between checks: ``REVALIDATE``, or a quarter of the layer's ``group_expiry`` if shorter."""
        interval = float(notiflow_settings.WEBSOCKET["REVALIDATE"])
        expiry = getattr(layer, "group_expiry", None)
        return min(interval, expiry / 4) if expiry else interval

    async def _run(self) -> None:
        while self.by_user:
            consumers = [c for sockets in self.by_user.values() for c in sockets]
            await asyncio.sleep(self.interval(consumers[0].channel_layer))
            try:
                await self.check()
            except Exception:
                logger.exception("revalidating %d sockets failed; trying again", len(consumers))

    async def check(self) -> None:
        """Close every socket whose credentials were revoked; renew the others' groups when a quarter of the
        layer's ``group_expiry`` has passed since they last joined."""
        consumers = [c for sockets in self.by_user.values() for c in sockets if not c.closing]
        revoked = await _revoked([(c.user_id, c.session_key) for c in consumers])
        for consumer in consumers:
            reason = revoked.get((consumer.user_id, consumer.session_key))
            if reason is not None:
                await consumer.close_with(reason.code, reason.error, reason.detail)
                continue
            expiry = getattr(consumer.channel_layer, "group_expiry", None)
            if expiry and not consumer.closing and time.monotonic() - consumer.groups_renewed >= expiry / 4:
                await consumer.groups_renew()


_per_loop: dict[tuple[asyncio.AbstractEventLoop, type], Any] = {}


def _on_this_loop(kind: type[T]) -> T:
    """The one ``kind()`` of the running event loop (made on first use; those of closed loops are dropped)."""
    loop = asyncio.get_running_loop()
    for known in [k for k in _per_loop if k[0].is_closed()]:
        del _per_loop[known]
    found: T = _per_loop.setdefault((loop, kind), kind())
    return found


def _quiet_check() -> _QuietCheck:
    return _on_this_loop(_QuietCheck)


def _sockets() -> _Sockets:
    return _on_this_loop(_Sockets)


_mark = database_sync_to_async(notifications_mark)


class NotificationConsumer(JsonFrameConsumer):
    """Relays one user's notifications; joins ``user.<id>``, ``role.<name>`` per role, and ``all``.

    Pushes go out in the order of the user's push stream
    (:mod:`webapp.realtime.stream`): one that comes before its predecessor
    is held; ``GAP_WAIT`` seconds later the missing ones are read from the
    database and sent first. ``GAP_WAIT`` seconds after the last push (and
    on a ``ping``), a socket checks that no push after it was lost.
    """

    accepts = ("ping", "mark_read", "mark_seen", "resume")
    groups_joined: list[str]
    user_id: int
    stream: PushStream
    expiry: asyncio.Task[None] | None = None
    present = False  # counted in delivery.websocket's presence hash
    timer: asyncio.TimerHandle | None = None
    timer_for_gap = False
    fill_task: asyncio.Task[None] | None = None
    admitted = False  # counted in this process' _Sockets
    session_key: str | None = None  # the session the socket was opened with (cookie or ticket), if any
    groups_renewed = 0.0  # time.monotonic() of the last group_add

    async def connect(self) -> None:
        self.groups_joined, self.stream, self.stream_lock = [], PushStream(), asyncio.Lock()
        offered = self.scope.get("subprotocols", [])
        await self.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            detail = self.scope.get("auth_error") or "No credentials: send a ticket, a token or a session cookie."
            await self.close_with(CLOSE_UNAUTHENTICATED, "unauthenticated", detail)
            return
        self.user_id = int(user.pk)
        named = self.scope.get("url_route", {}).get("kwargs", {}).get("user_id")
        if named is not None and named != str(self.user_id):
            await self.close_with(CLOSE_FORBIDDEN, "forbidden", "This path names another user.")
            return
        expires_at = self.scope.get("auth_expires_at")
        if expires_at is not None:
            if expires_at <= time.time():
                await self.close_with(CLOSE_UNAUTHENTICATED, "token_expired", "The token has expired.")
                return
            self.expiry = asyncio.ensure_future(self._expire(expires_at))
        self.session_key = self.scope.get("auth_session_key")
        if not _sockets().admit(self):
            limit = notiflow_settings.WEBSOCKET["MAX_SOCKETS_PER_USER"]
            await self.close_with(
                CLOSE_TOO_MANY_SOCKETS, "too_many_sockets", f"This user has {limit} sockets open here already."
            )
            return
        self.admitted = True
        self.groups_joined = [user_group(self.user_id), BROADCAST_GROUP] + [
            role_group(name) for name in self.scope.get("roles", [])
        ]
        await self.groups_renew()
        # Counted as connected before the hello is read: a notification committed before that read is in the
        # hello; one committed after it finds this socket counted and is pushed (see delivery.websocket).
        await presence_join(self.user_id)
        self.present = True
        cursor, cursor_error = self._query_cursor()
        unread, (latest, seq), recent = await _hello(self.user_id, cursor is not None)
        if cursor is None:  # the hello covers everything up to the inbox's position; a resume sets it itself
            self.stream = PushStream(cursor=latest, seq=seq)
        await self.send_json(
            {"type": "hello", "user_id": self.user_id, "unread_count": unread, "cursor": latest, "recent": recent}
        )
        if cursor_error:
            await self.send_error("invalid_frame", cursor_error)
        if cursor is not None:
            await self.frame_resume({"type": "resume", "cursor": cursor})

    def _query_cursor(self) -> tuple[int | None, str | None]:
        """``?cursor=`` from the URL: ``(cursor, None)``, ``(None, None)`` if absent, ``(None, why)`` if invalid."""
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("cursor")
        if not values:
            return None, None
        raw = values[0]
        if not raw.isdigit() or len(raw) > 19:
            return None, "'cursor' in the URL must be a non-negative integer, the last cursor received."
        return int(raw), None

    async def _expire(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self.close_with(CLOSE_UNAUTHENTICATED, "token_expired", "The token has expired; connect with a new one.")

    async def groups_renew(self) -> None:
        """Join (again) every group of this socket: a membership lapses after the channel layer's
        ``group_expiry`` seconds unless renewed, so that one left behind by a crashed process goes."""
        self.groups_renewed = time.monotonic()
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        if self.closing:  # disconnect() ran meanwhile (a renewal runs beside the socket's own handlers)
            for group in self.groups_joined:
                await self.channel_layer.group_discard(group, self.channel_name)

    def over_rate(self, limits: dict[str, Any]) -> str | None:
        """The socket's bucket, then the user's, shared by all the user's sockets on this process."""
        over = super().over_rate(limits)
        if over is None and self.admitted and not _sockets().take(self.user_id, limits):
            over = f"This user's sockets send more than {limits['USER_RATE']} frames per second together."
        return over

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.expiry is not None:
            self.expiry.cancel()
        if self.timer is not None:
            self.timer.cancel()
        _quiet_check().discard(self)
        if self.admitted:
            self.admitted = False
            _sockets().discard(self)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.present:
            self.present = False
            await presence_leave(self.user_id)

    # -- client frames ------------------------------------------------------
    async def frame_resume(self, frame: dict[str, Any]) -> None:
        """Send every notification above ``cursor``, oldest first, in one ``resumed`` frame (``recovered: false``
        and a ``refetch`` URL when there are more than ``RESUME_LIMIT``, or ``cursor`` is above the latest)."""
        async with self.stream_lock:
            missed, complete, (latest, seq) = await _missed(self.user_id, frame["cursor"])
            if complete:
                await self.send_json({"type": "resumed", "recovered": True, "notifications": missed, "cursor": latest})
            else:
                await self.send_json(_refetch_frame(latest))
            await self._send_notifications(self.stream.advance(cursor=latest, seq=seq))

    async def frame_ping(self, frame: dict[str, Any]) -> None:
        await super().frame_ping(frame)
        if not self.stream.waiting:
            _quiet_check().add(self)  # a push lost with nothing after it shows on the next ping

    async def frame_mark_read(self, frame: dict[str, Any]) -> None:
        await self._mark(frame["ids"], "read")

    async def frame_mark_seen(self, frame: dict[str, Any]) -> None:
        await self._mark(frame["ids"], "seen")

    async def _mark(self, ids: list[int] | None, state: str) -> None:
        change = await _mark(user_id=self.user_id, ids=ids, state=state)
        if not change.changed:
            # Nothing changed (already so, or not the user's), so nothing is pushed to the group:
            # answer this socket alone, echoing what it asked for.
            await self.send_json({**change.frame(), "ids": ids, "all": ids is None})

    # -- the push stream ------------------------------------------------------
    async def _send_notifications(self, notifications: list[dict[str, Any]]) -> None:
        for notification in notifications:
            await self.send_json({"type": "notification", "notification": notification})

    def _arm(self) -> None:
        """After a push: if pushes are held, make sure a gap fill is due ``GAP_WAIT`` seconds after the first was
        held (later pushes do not postpone it); if none is, a quiet check ``GAP_WAIT`` seconds after this push."""
        if self.stream.waiting and self.timer_for_gap and self.timer is not None:
            return
        if self.timer is not None:
            self.timer.cancel()
        wait = float(notiflow_settings.WEBSOCKET["GAP_WAIT"])
        self.timer_for_gap = self.stream.waiting
        self.timer = asyncio.get_running_loop().call_later(wait, self._due)

    def _due(self) -> None:
        self.timer = None
        if self.closing:
            return
        if self.stream.waiting:
            self.fill_soon()
        else:
            _quiet_check().add(self)

    def fill_soon(self) -> None:
        """Start :meth:`stream_fill` (unless one is running), keeping a reference to its task."""
        if self.fill_task is None or self.fill_task.done():
            self.fill_task = asyncio.ensure_future(self.stream_fill())

    async def stream_fill(self) -> None:
        """Send, in order, the user's pushed notifications this socket has not been sent, read from the
        database: the missing numbers below the pushes it holds (a gap), or all after its cursor (a lost last
        push); then what it held. Pages of ``RESUME_LIMIT``, at most :data:`FILL_PAGES`; further behind: a
        ``resumed`` frame with ``recovered: false`` and a ``refetch`` URL, as on a resume."""
        async with self.stream_lock:
            if self.closing:
                return
            try:
                await self._fill()
            except Exception:
                logger.exception("filling the push stream of user %s failed; trying again", self.user_id)
            else:
                # Numbers still missing below a held push are not in the database (deleted): go on without them.
                while self.stream.waiting:
                    await self._send_notifications(self.stream.skip_gap())
            self._arm()

    async def _fill(self) -> None:
        limit = int(notiflow_settings.WEBSOCKET["RESUME_LIMIT"])
        missing, below = self.stream.missing()
        if missing:  # a gap: the numbers not come below the highest held push
            if len(missing) > FILL_PAGES * limit:
                await self._refetch()
                return
            for start in range(0, len(missing), limit):
                page = missing[start : start + limit]
                rows, _ = await _fill_page(self.user_id, self.stream.cursor, page, below, limit)
                for number, payload in rows:
                    await self._send_notifications(self.stream.offer(payload, number))
            return
        for _ in range(FILL_PAGES):  # a lost last push: every pushed one after the cursor
            rows, done = await _fill_page(self.user_id, self.stream.cursor, None, None, limit)
            for number, payload in rows:
                await self._send_notifications(self.stream.offer(payload, number))
            if done:
                return
        await self._refetch()

    async def _refetch(self) -> None:
        """Too far behind to fill: the refetch frame of a resume that missed too many; carry on from the latest."""
        latest, seq = await _inbox_position(self.user_id)
        await self.send_json(_refetch_frame(latest))
        await self._send_notifications(self.stream.advance(cursor=latest, seq=seq))

    #: Channel-layer message types whose handlers never touch the database. Channels (4.2+) runs
    #: ``close_old_connections()`` in a worker thread before every handler, like a request's start; for a
    #: push that is a thread hop per message that reads nothing, so these skip it (:meth:`dispatch`).
    NO_DATABASE = frozenset({"notify.push", "notify.read_state", "notify.broadcast"})

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its database connection check for :attr:`NO_DATABASE` messages."""
        if message["type"] in self.NO_DATABASE:
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    async def notify_push(self, message: dict[str, Any]) -> None:
        """``notify.push``: relay one notification in stream order (:class:`PushStream`), unless this socket was
        sent it already."""
        seq = message.get("seq")
        async with self.stream_lock:
            await self._send_notifications(self.stream.offer(message["notification"], seq))
            if isinstance(seq, int):
                self._arm()

    async def notify_read_state(self, message: dict[str, Any]) -> None:
        """``notify.read_state``: the user's read state changed (any tab, device or the REST API)."""
        await self.send_json(message["frame"])

    async def notify_broadcast(self, message: dict[str, Any]) -> None:
        """``notify.broadcast``: relay an ephemeral message sent to a role or to ``all``."""
        await self.send_json({"type": "broadcast", "payload": message["payload"]})


@database_sync_to_async
def _database_ok() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


class HealthConsumer(JsonFrameConsumer):
    """``/ws/health/``: no auth; reports the server's status on connect and answers ``ping`` with ``pong``.

    ``{"type": "status", "status": "ok" | "degraded", "checks": {"database": "ok" | error,
    "channel_layer": "ok" | error}, "time": epoch seconds}``
    """

    async def connect(self) -> None:
        await self.accept()
        checks = {"database": await self._check(_database_ok()), "channel_layer": await self._check(self._layer_ok())}
        status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        await self.send_json({"type": "status", "status": status, "checks": checks, "time": time.time()})

    async def _layer_ok(self) -> bool:
        await self.channel_layer.group_add("health", self.channel_name)
        await self.channel_layer.group_discard("health", self.channel_name)
        return True

    @staticmethod
    async def _check(probe: Any) -> str:
        try:
            return "ok" if await asyncio.wait_for(probe, timeout=2.0) else "failed"
        except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health check
            return f"{type(exc).__name__}: {exc}"[:200]
