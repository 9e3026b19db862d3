"""The demo inbox page: sign in as a demo user, trigger events, watch notifications arrive live.

Signing in takes no password, so every view answers 404 unless the setting
``NOTIFLOW_DEMO_PAGE`` is true (dev and test settings; ``DEBUG`` if undefined). Only the gallery seed's
users can be signed in as (:func:`webapp.demo.selectors.demo_users`), never
``admin`` or anyone else.

=====================================  ==============================================================
``GET  /demo/``                         signed out: the sign-in form; signed in: the inbox page
``POST /demo/sign-in/``                 form field ``username``; redirects to ``/demo/``
``POST /demo/sign-out/``                redirects to ``/demo/``
``POST /demo/events/<kind>/``           ``kind``: critique | like | announcement, each notifying the
                                        signed-in user; 202 ``{"event_id", "kind"}``
``POST /demo/critiques/``               form fields ``artwork``, ``text``: the signed-in user critiques
                                        another user's artwork; 202 ``{"event_id"}``
=====================================  ==============================================================

The POSTs are CSRF-protected (the page sends ``X-CSRFToken``) and need the
session; JSON errors are ``{"detail": str}`` with 400 (invalid input), 403
(signed out) or 404 (unknown kind).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import login, logout
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from webapp.demo.selectors import demo_artworks_to_critique, demo_inbox, demo_users
from webapp.demo.services import DEMO_EVENT_KINDS, demo_critique_post, demo_event_trigger

View = Callable[..., HttpResponse]


def demo_page_enabled() -> bool:
    """``settings.NOTIFLOW_DEMO_PAGE`` (on in dev and test settings, off in base and prod); ``DEBUG`` in a
    project whose settings do not define it."""
    return bool(getattr(settings, "NOTIFLOW_DEMO_PAGE", settings.DEBUG))


def demo_only(view: View) -> View:
    """Answer 404 unless the demo page is enabled (it signs users in without a password)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not demo_page_enabled():
            raise Http404("The demo page is off: set NOTIFLOW_DEMO_PAGE = True.")
        return view(request, *args, **kwargs)

    return wrapper


def _signed_in_json(view: View) -> View:
    """403 ``{"detail"}`` for a request without a signed-in user."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"detail": "Sign in first."}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


@demo_only
@require_GET
@ensure_csrf_cookie
def inbox(request: HttpRequest) -> HttpResponse:
    """``GET /demo/``: the sign-in form, or the signed-in user's inbox."""
    if not request.user.is_authenticated:
        return render(request, "demo/sign_in.html", {"users": demo_users()})
    user_id: int = request.user.pk
    return render(
        request,
        "demo/inbox.html",
        {
            "initial": demo_inbox(user_id=user_id),
            "artworks": demo_artworks_to_critique(user=request.user),
            "event_kinds": DEMO_EVENT_KINDS,
        },
    )


@demo_only
@require_POST
def sign_in(request: HttpRequest) -> HttpResponse:
    """``POST /demo/sign-in/``: sign in as the demo user named by ``username``, without a password."""
    user = demo_users().filter(username=request.POST.get("username", "")).first()
    if user is None:
        return render(request, "demo/sign_in.html", {"users": demo_users(), "error": "No such demo user."}, status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("demo:inbox")


@demo_only
@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    """``POST /demo/sign-out/``."""
    logout(request)
    return redirect("demo:inbox")


@demo_only
@require_POST
@_signed_in_json
def event_trigger(request: HttpRequest, kind: str) -> HttpResponse:
    """``POST /demo/events/<kind>/``: something happens that notifies the signed-in user."""
    if kind not in DEMO_EVENT_KINDS:
        return JsonResponse({"detail": f"Unknown demo event {kind!r}."}, status=404)
    try:
        event_id = demo_event_trigger(user=request.user, kind=kind)
    except ValidationError as exc:
        return JsonResponse({"detail": " ".join(exc.messages)}, status=400)
    return JsonResponse({"event_id": str(event_id), "kind": kind}, status=202)


@demo_only
@require_POST
@_signed_in_json
def critique_post(request: HttpRequest) -> HttpResponse:
    """``POST /demo/critiques/``: the signed-in user critiques another user's artwork."""
    try:
        artwork_id = int(request.POST.get("artwork", ""))
    except ValueError:
        return JsonResponse({"detail": "Choose an artwork."}, status=400)
    try:
        event_id = demo_critique_post(author=request.user, artwork_id=artwork_id, text=request.POST.get("text", ""))
    except ValidationError as exc:
        return JsonResponse({"detail": " ".join(exc.messages)}, status=400)
    return JsonResponse({"event_id": str(event_id)}, status=202)
