"""Markup characters and non-Latin text on every surface a notification reaches, on the real stack (issue 10).

``& ' " < >`` and non-Latin text, in the event's data and in usernames, must
arrive as written in every plain-text surface (email subject and text, a
digest's subject and text, the in-app title and body over REST and over the
WebSocket) and escaped only where the output is HTML (the email's HTML part).
The demo page is checked in Chromium by ``tests/browser/test_inbox.py``.
"""

import json
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils.html import escape

from pipeline import Audience, emit_event
from pipeline.models import DigestEntry, DigestWindow, Preference
from pipeline.tasks import digests_flush_due
from webapp.stack import wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TRICKY = 'Tom & Jerry\'s "<b>bold</b>" Ωμέγα 漢字'
TRICKY_NAME = 'o\'neil<&>"Zoë"'  # not a valid username for Django's form validator, but a model allows it


@pytest.fixture
def tricky_actor(db):
    return get_user_model().objects.create_user(username=TRICKY_NAME, email="oneil@example.com", password="x")


def critique(actor, recipient):
    return emit_event(
        event_type="critique.created",
        actor=actor,
        audience=Audience.users(recipient),
        data={"artwork_title": TRICKY, "excerpt": TRICKY},
    )


def test_every_text_surface_shows_the_text_as_written(users, tricky_actor, connect, clean_mail):
    stack = clean_mail
    bob = users["bob"]
    socket = connect(bob=bob)["bob"]
    title = f"{TRICKY_NAME} critiqued your artwork “{TRICKY}”"
    body = f"{TRICKY_NAME} wrote: “{TRICKY}”"

    critique(tricky_actor, bob)

    pushes = wait_for(socket.notifications)
    assert (pushes[0][1]["title"], pushes[0][1]["body"]) == (title, body)

    request = urllib.request.Request(
        f"{stack.web_url}/api/notifications/", headers={"Authorization": f"Bearer {token_issue(user_id=bob.pk)}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = json.loads(response.read())["results"]
    assert [(n["title"], n["body"]) for n in listed] == [(title, body)]

    emails = wait_for(stack.emails)
    assert emails[0]["Subject"].strip() == title
    assert emails[0].get_body(preferencelist=("plain",)).get_content().strip() == body
    html = emails[0].get_body(preferencelist=("html",)).get_content()
    assert escape(TRICKY) in html and escape(TRICKY_NAME) in html
    assert "<b>bold</b>" not in html


def test_a_digest_shows_the_text_as_written(users, tricky_actor, clean_mail):
    stack = clean_mail
    bob = users["bob"]
    Preference.objects.create(user=bob, category="critiques", method="email", setting="daily")
    event_id = critique(tricky_actor, bob)
    assert wait_for(lambda: DigestEntry.objects.filter(delivery__notification__event_id=event_id).exists())
    window = DigestWindow.objects.get(user=bob)

    digests_flush_due.delay(as_of=(window.closes_at + timedelta(seconds=1)).isoformat())

    emails = wait_for(stack.emails)
    assert emails[0]["Subject"] == "Your daily digest: 1 new notification"
    text = emails[0].get_body(preferencelist=("plain",)).get_content()
    assert f"- {TRICKY_NAME} critiqued your artwork “{TRICKY}”" in text.splitlines()
    html = emails[0].get_body(preferencelist=("html",)).get_content()
    assert escape(TRICKY) in html and "<b>bold</b>" not in html
