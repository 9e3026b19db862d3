"""The demo inbox page's views: the on/off switch, password-less sign-in, CSRF, and the events it triggers."""

import json

import pytest
from django.test import Client

from pipeline.models import Event
from webapp.gallery.models import Critique, Like
from webapp.gallery.seed import demo_seed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(settings):
    settings.NOTIFLOW_DEMO_PAGE = True
    return demo_seed()


def signed_in(name):
    """A client that enforces CSRF like a browser, signed in as ``name``, with its CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.get("/demo/")
    token = client.cookies["csrftoken"].value
    response = client.post("/demo/sign-in/", {"username": name, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    client.get("/demo/")  # signing in rotates the CSRF token
    return client, client.cookies["csrftoken"].value


@pytest.mark.parametrize(
    ("setting", "debug", "status"),
    [(False, True, 404), (True, False, 200), (None, True, 200), (None, False, 404)],
)
def test_the_page_is_served_only_when_enabled(settings, setting, debug, status):
    settings.DEBUG = debug
    if setting is None:
        del settings.NOTIFLOW_DEMO_PAGE  # then DEBUG decides
    else:
        settings.NOTIFLOW_DEMO_PAGE = setting
    assert Client().get("/demo/").status_code == status
    for url in ("/demo/sign-in/", "/demo/sign-out/", "/demo/events/critique/", "/demo/critiques/"):
        assert (Client().post(url, {"username": "bob"}).status_code == 404) == (status == 404), url


def test_only_the_demo_users_can_be_signed_in_as(world):
    page = Client().get("/demo/").content.decode()
    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        assert f'value="{name}"' in page
    assert 'value="admin"' not in page

    client = Client()
    refused = client.post("/demo/sign-in/", {"username": "admin"})
    assert refused.status_code == 400
    assert "_auth_user_id" not in client.session


def test_the_signed_in_page_carries_the_inbox_for_the_client(world):
    client, _ = signed_in("bob")
    response = client.get("/demo/")
    page = response.content.decode()
    assert 'id="badge"' in page and 'id="list"' in page and 'id="mark-all-read"' in page
    assert "/static/notiflow/notiflow.js" in page
    initial = json.loads(page.split('id="notiflow-initial" type="application/json">')[1].split("</script>")[0])
    assert initial == {"notifications": [], "unread_count": 0, "cursor": 0}
    assert "“Night Market” by dave" in page  # someone else's artwork to critique
    assert "by bob" not in page  # not his own

    client.post("/demo/sign-out/", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert "_auth_user_id" not in client.session


def test_posts_need_the_csrf_token_and_a_session(world):
    client = Client(enforce_csrf_checks=True)
    client.get("/demo/")
    token = client.cookies["csrftoken"].value
    assert client.post("/demo/events/critique/").status_code == 403  # no CSRF token
    signed_out = client.post("/demo/events/critique/", HTTP_X_CSRFTOKEN=token)
    assert signed_out.status_code == 403
    assert signed_out.json() == {"detail": "Sign in first."}
    assert not Event.objects.exists()


def test_demo_events_notify_the_signed_in_user_from_someone_else(stack, world):
    client, token = signed_in("bob")
    bob, admin = world["users"]["bob"], world["users"]["admin"]
    expected = {"critique": "critique.created", "like": "like.created", "announcement": "announcement.posted"}
    for kind, event_type in expected.items():
        response = client.post(f"/demo/events/{kind}/", HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 202, response.content
        event = Event.objects.get(pk=response.json()["event_id"])
        assert event.event_type == event_type
        assert event.actor_id != bob.pk
        if kind == "announcement":
            assert event.audience == {"kind": "everyone"}
            assert event.actor_id == admin.pk
        else:
            assert event.audience == {"kind": "users", "user_ids": [bob.pk]}
    # Every other demo user can like bob's work once; after that a new artwork of his gets the likes.
    for _ in range(6):
        assert client.post("/demo/events/like/", HTTP_X_CSRFTOKEN=token).status_code == 202
    assert Like.objects.filter(artwork__owner=bob).count() == 7
    assert bob.artworks.count() == 2
    assert client.post("/demo/events/dance/", HTTP_X_CSRFTOKEN=token).status_code == 404


def test_a_user_critiques_another_users_artwork(stack, world):
    client, token = signed_in("alice")
    heron, alice = world["artworks"]["bob"], world["users"]["alice"]
    own = alice.artworks.create(title="Mine")
    posted = client.post("/demo/critiques/", {"artwork": heron.pk, "text": " Fine work. "}, HTTP_X_CSRFTOKEN=token)
    assert posted.status_code == 202
    critique = Critique.objects.get()
    assert (critique.author, critique.artwork, critique.text) == (alice, heron, "Fine work.")
    assert Event.objects.get(pk=posted.json()["event_id"]).audience["user_ids"] == [heron.owner_id]

    for data in ({"artwork": own.pk, "text": "Me"}, {"artwork": heron.pk, "text": "  "}, {"text": "x"}):
        assert client.post("/demo/critiques/", data, HTTP_X_CSRFTOKEN=token).status_code == 400
    assert Critique.objects.count() == 1
