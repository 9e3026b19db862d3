"""The REST API with JWT bearer auth: list (cursor-paginated), unread count, mark read."""

import base64

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from pipeline import Audience
from pipeline.models import Event, Notification
from webapp.tokens import token_issue

pytestmark = pytest.mark.django_db


def notify(user, n):
    """``n`` stored notifications for ``user``, cursors 1..n, titles n1..nN."""
    created = []
    for i in range(1, n + 1):
        event = Event.objects.create(
            event_type="announcement.posted", audience=Audience.users(user).as_json(), occurred_at="2026-01-01T00:00Z"
        )
        created.append(
            Notification.objects.create(
                event=event,
                recipient=user,
                event_type="announcement.posted",
                category="announcements",
                title=f"n{i}",
                cursor=i,
                occurred_at=event.occurred_at,
            )
        )
    return created


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_issue(user_id=user.pk)}")
    return client


def test_anonymous_and_forged_requests_are_refused(users):
    assert APIClient().get("/api/notifications/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer nonsense")
    assert client.get("/api/notifications/").status_code == 401


def test_list_is_newest_first_with_cursor_pagination(users):
    notify(users["bob"], 5)
    notify(users["carol"], 2)
    client = client_for(users["bob"])
    first = client.get("/api/notifications/?page_size=3").json()
    assert [n["title"] for n in first["results"]] == ["n5", "n4", "n3"]
    second = client.get(first["next"]).json()
    assert [n["title"] for n in second["results"]] == ["n2", "n1"]
    assert second["next"] is None


def test_unread_count_and_mark_read(users):
    mine = notify(users["bob"], 3)
    theirs = notify(users["carol"], 1)
    client = client_for(users["bob"])
    assert client.get("/api/notifications/unread-count/").json() == {"unread_count": 3}

    response = client.post(f"/api/notifications/{mine[0].pk}/read/")
    assert response.status_code == 200
    assert response.json() == {"unread_count": 2}
    assert Notification.objects.get(pk=mine[0].pk).state == "read"

    # Another user's notification: 404, and it stays unread.
    assert client.post(f"/api/notifications/{theirs[0].pk}/read/").status_code == 404
    assert Notification.objects.get(pk=theirs[0].pk).state == "unseen"

    assert client.post("/api/notifications/read-all/").json() == {"marked": 2, "unread_count": 0}
    assert Notification.objects.filter(recipient=users["carol"], state="unseen").count() == 1


@pytest.fixture
def throttles(stack, settings):
    """The stack's Redis as Django's cache (the throttles count there), emptied; rates small enough to reach."""
    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "3/min", "ws-ticket": "2/min"},
    }
    yield
    cache.clear()


def basic(username, password, address="127.0.0.1"):
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
    return client


def test_password_guesses_are_throttled_per_address_before_authentication(users, throttles):
    """Issue 10: DRF throttles a view after authenticating it, so wrong passwords were never counted."""
    for _ in range(3):
        assert basic("bob", "wrong").post("/api/token/").status_code in (401, 403)  # refused, and counted

    refused = basic("bob", "pw").post("/api/token/")  # the right password, from the guessing address
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert basic("bob", "pw", address="10.0.0.2").post("/api/token/").status_code == 200


def test_websocket_tickets_are_throttled_per_user(users, throttles):
    bob = client_for(users["bob"])
    assert [bob.post("/api/ws-ticket/").status_code for _ in range(3)] == [200, 200, 429]
    assert client_for(users["carol"]).post("/api/ws-ticket/").status_code == 200


def test_token_endpoint_needs_a_password(users, stack):
    cache.clear()
    client = APIClient()
    assert client.post("/api/token/").status_code in (401, 403)
    client.login(username="bob", password="pw")
    body = client.post("/api/token/").json()
    assert body["expires_in"] == 3600
    assert client_for(users["bob"]).get("/api/notifications/unread-count/").status_code == 200
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert api.get("/api/notifications/unread-count/").json() == {"unread_count": 0}


@pytest.mark.parametrize("notification_id", ["9223372036854775808", "99999999999999999999999999"])
def test_an_id_beyond_any_row_is_not_found_not_a_server_error(users, notification_id):
    """Issue 10: an id past the database's integers raised OverflowError (500)."""
    response = client_for(users["bob"]).post(f"/api/notifications/{notification_id}/read/")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "position",
    ["abc", "1e3", "99999999999999999999999", "-1' OR 1=1", ""],
    ids=["text", "float", "huge", "sql", "empty"],
)
def test_a_tampered_pagination_cursor_is_not_found_not_a_server_error(users, position):
    """Issue 10: a cursor whose position is not a cursor number raised ValueError (500) in the query."""
    notify(users["bob"], 3)
    query = f"p={position}" if position else "r=1"
    cursor = base64.b64encode(query.encode()).decode()
    response = client_for(users["bob"]).get("/api/notifications/", {"cursor": cursor, "page_size": 1})
    assert response.status_code in (200, 404)  # a plain "r=1" cursor is valid: the first page, backwards
    if position:
        assert response.status_code == 404


def test_a_genuine_next_cursor_still_pages(users):
    notify(users["bob"], 3)
    client = client_for(users["bob"])
    first = client.get("/api/notifications/", {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    assert [n["title"] for n in first["results"] + second["results"]] == ["n3", "n2", "n1"]
