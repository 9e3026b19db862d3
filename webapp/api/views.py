"""Thin API views over :mod:`pipeline.selectors` and :mod:`pipeline.services`."""

from __future__ import annotations

from typing import cast

import redis
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from pipeline.conf import notiflow_settings
from pipeline.selectors import notification_payload, notifications_for_user, notifications_unread_count
from pipeline.services import notification_mark_read, notifications_mark_all_read
from webapp.realtime.frames import MAX_INT
from webapp.realtime.tickets import ticket_issue
from webapp.tokens import Identity, token_issue


def _user_id(request: Request) -> int:
    """The authenticated user's id (every view here requires authentication)."""
    return cast(int, request.user.pk)


class NotificationCursorPagination(CursorPagination):
    """Newest first by the per-recipient cursor; ``?page_size=`` up to 100."""

    ordering = "-cursor"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's decoding, and a position that must be a cursor number: a tampered one (text, a float, past
        ``bigint``) reached the query and raised ``ValueError`` or ``OverflowError`` (a 500). 404 instead, as DRF
        answers a cursor it cannot decode."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = str(cursor.position)
            if not position.isascii() or not position.isdigit() or int(position) > MAX_INT:
                raise NotFound(self.invalid_cursor_message)
        return cursor


class NotificationListView(APIView):
    """``GET /api/notifications/``: the user's notifications, cursor-paginated, newest first."""

    def get(self, request: Request) -> Response:
        paginator = NotificationCursorPagination()
        page = paginator.paginate_queryset(notifications_for_user(user_id=_user_id(request)), request, view=self)
        return paginator.get_paginated_response([notification_payload(n) for n in page or []])


class UnreadCountView(APIView):
    """``GET /api/notifications/unread-count/``: ``{"unread_count": int}``."""

    def get(self, request: Request) -> Response:
        return Response({"unread_count": notifications_unread_count(user_id=_user_id(request))})


class MarkReadView(APIView):
    """``POST /api/notifications/<id>/read/``: 404 unless the notification is the user's.

    Every socket of the user is sent a ``read_state`` frame (see :func:`pipeline.services.notifications_mark`).
    """

    def post(self, request: Request, notification_id: int) -> Response:
        if notification_id > MAX_INT:  # no row has it; the database would raise OverflowError (a 500)
            return Response({"detail": "Not found."}, status=404)
        if not notification_mark_read(user_id=_user_id(request), notification_id=notification_id):
            return Response({"detail": "Not found."}, status=404)
        return Response({"unread_count": notifications_unread_count(user_id=_user_id(request))})


class MarkAllReadView(APIView):
    """``POST /api/notifications/read-all/``: ``{"marked": int, "unread_count": 0}``."""

    def post(self, request: Request) -> Response:
        marked = notifications_mark_all_read(user_id=_user_id(request))
        return Response({"marked": marked, "unread_count": notifications_unread_count(user_id=_user_id(request))})


class _LiveRate:
    """A throttle's rate read from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]`` when each request is
    checked (DRF reads it once, at import), so the setting can change at run time and in tests."""

    scope: str | None

    def get_rate(self) -> str | None:
        return cast(str | None, api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or ""))


class ClientThrottle(_LiveRate, SimpleRateThrottle):
    """Requests per client address (``X-Forwarded-For`` as far as DRF's ``NUM_PROXIES`` trusts it), at the rate
    ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``. It never looks at ``request.user``, so it can run
    before authentication and count the failed attempts too."""

    scope = "token"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserThrottle(_LiveRate, ScopedRateThrottle):
    """DRF's scoped throttle (per user, per address when anonymous), its rate read live."""


class TokenView(APIView):
    """``POST /api/token/`` (session or basic auth): ``{"token": jwt, "expires_in": seconds}``.

    Throttled per client address **before** authentication (``ClientThrottle``, scope ``token``, 10 a minute by
    default): DRF checks a view's throttles after authenticating, and a wrong password ends the request there,
    so password guesses would never be counted. 429 with ``Retry-After`` past the rate.
    """

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        throttle = ClientThrottle()
        if not throttle.allow_request(request, self):
            self.throttled(request, throttle.wait() or 1.0)
        super().initial(request, *args, **kwargs)

    def post(self, request: Request) -> Response:
        ttl = int(notiflow_settings.JWT["TTL"])
        return Response({"token": token_issue(user_id=_user_id(request), ttl=ttl), "expires_in": ttl})


class TicketView(APIView):
    """``POST /api/ws-ticket/``: ``{"ticket": str, "expires_in": seconds}``, a one-time WebSocket credential.

    Authenticated by a Bearer token or the session (with its CSRF token). A
    socket opened with the ticket closes with 4401 when the Bearer token it
    was issued against expires; a session's ticket carries no expiry. 503 if
    Redis cannot store it. Throttled per user (scope ``ws-ticket``, 30 a minute by default): 429 past it.
    """

    throttle_classes = [UserThrottle]
    throttle_scope = "ws-ticket"

    def post(self, request: Request) -> Response:
        if isinstance(request.auth, Identity):  # a Bearer token
            identity = request.auth
        else:  # the session: its socket closes when the session signs out
            identity = Identity(user_id=_user_id(request), session_key=request.session.session_key)
        try:
            ticket, ttl = ticket_issue(identity=identity)
        except redis.RedisError:
            return Response({"detail": "Tickets are unavailable: Redis cannot be reached."}, status=503)
        return Response({"ticket": ticket, "expires_in": ttl}, headers={"Cache-Control": "no-store"})
