"""Who may open a socket, and that no user ever sees another's notifications or state (real daphne, real Redis)."""

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

import jwt
import pytest
from django.contrib.auth.models import Group
from django.test import Client

from pipeline import Audience, emit_event
from pipeline.models import Notification
from tests.environment import IDENTITY_PROVIDER
from tests.support.identity_provider import AUDIENCE, ISSUER, IdentityProvider
from tests.support.ws import Socket, close_code, handshake_status
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def hs256(sub, *, secret=None, ttl=60, **claims):
    """An HS256 token like notiflow's own, with claims to override (``None`` drops one)."""
    from django.conf import settings

    now = int(time.time())
    body = {
        "sub": str(sub),
        "iat": now,
        "exp": now + ttl,
        "iss": ISSUER,
        "aud": AUDIENCE,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret or settings.NOTIFLOW["JWT"]["SECRET"], algorithm="HS256")


def post(url, *, token=None, headers=None):
    request = urllib.request.Request(url, method="POST", data=b"", headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


async def first_frame(url, **kwargs):
    sock = await Socket.open(url, **kwargs)
    try:
        return await sock.next()
    finally:
        await sock.close()


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "forged", "expired", "wrong audience", "wrong issuer", "no issuer", "unknown key", "none"],
)
def test_a_socket_without_a_valid_token_is_accepted_then_closed_with_4401(stack, users, case):
    bob = users["bob"].pk
    token = {
        "missing": None,
        "garbage": "not.a.jwt",
        "forged": hs256(bob, secret="not-the-secret-but-long-enough-for-hs256"),
        "expired": hs256(bob, ttl=-10),
        "wrong audience": IDENTITY_PROVIDER.token(sub=bob, aud="another-api"),
        "wrong issuer": IDENTITY_PROVIDER.token(sub=bob, iss="https://evil.example/"),
        "no issuer": hs256(bob, iss=None),
        "unknown key": IdentityProvider(port=0).token(sub=bob),  # same kid, another provider's key
        "none": jwt.encode({"sub": str(bob), "exp": int(time.time()) + 60}, None, algorithm="none"),
    }[case]
    assert asyncio.run(close_code(f"{stack.ws_url}/ws/notifications/", token=token)) == 4401


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_rs256_and_es256_tokens_from_the_identity_providers_jwks_are_accepted(stack, users, kid):
    token = IDENTITY_PROVIDER.token(sub=users["bob"].pk, kid=kid)
    hello = asyncio.run(first_frame(f"{stack.ws_url}/ws/notifications/", token=token))
    assert (hello["type"], hello["user_id"]) == ("hello", users["bob"].pk)


def test_junk_kids_cost_at_most_one_jwks_fetch_and_do_not_hold_up_a_valid_handshake(stack, users):
    """Twenty handshakes with tokens naming unknown ``kid`` values, at once, against a JWKS that takes 0.25 s an
    answer: at most one fetch between them, and a valid client connects meanwhile. Handled one after another, with
    a fetch each, the junk would hold the valid client up for 20 x 0.25 = 5 s; the bound is 2 s."""
    url = f"{stack.ws_url}/ws/notifications/"
    run = uuid.uuid4().hex[:8]
    junk = [IDENTITY_PROVIDER.token(sub=users["bob"].pk, header_kid=f"junk-{run}-{n}") for n in range(20)]
    valid = IDENTITY_PROVIDER.token(sub=users["carol"].pk, kid="rsa-1")

    async def storm():
        junk_codes = [asyncio.create_task(close_code(url, token=token)) for token in junk]
        await asyncio.sleep(0.2)  # the junk handshakes reach daphne first
        started = time.monotonic()
        hello = await first_frame(url, token=valid)
        took = time.monotonic() - started
        return hello, took, await asyncio.gather(*junk_codes)

    before = IDENTITY_PROVIDER.requests
    IDENTITY_PROVIDER.delay = 0.25
    try:
        hello, took, codes = asyncio.run(storm())
    finally:
        IDENTITY_PROVIDER.delay = 0.0
    assert codes == [4401] * 20
    assert IDENTITY_PROVIDER.requests - before <= 1
    assert (hello["type"], hello["user_id"]) == ("hello", users["carol"].pk)
    assert took < 2.0, f"the valid handshake took {took:.2f} s"


def test_the_authorization_header_and_the_session_cookie_authenticate(stack, users):
    by_header = asyncio.run(
        first_frame(
            f"{stack.ws_url}/ws/notifications/",
            headers={"Authorization": f"Bearer {token_issue(user_id=users['bob'].pk)}"},
        )
    )
    browser = Client()
    browser.force_login(users["carol"])
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    origin = stack.web_url.replace("127.0.0.1", "localhost")
    by_session = asyncio.run(
        first_frame(f"{stack.ws_url}/ws/notifications/", headers={"Cookie": cookie}, origin=origin)
    )
    assert (by_header["type"], by_header["user_id"]) == ("hello", users["bob"].pk)
    assert (by_session["type"], by_session["user_id"]) == ("hello", users["carol"].pk)


def test_a_ticket_opens_one_socket_and_a_spent_ticket_is_refused_with_4401(stack, users):
    status, body = post(f"{stack.web_url}/api/ws-ticket/", token=token_issue(user_id=users["bob"].pk))
    assert status == 200
    assert body["expires_in"] == 30
    url = f"{stack.ws_url}/ws/notifications/"
    hello = asyncio.run(first_frame(url, ticket=body["ticket"]))
    assert (hello["type"], hello["user_id"]) == ("hello", users["bob"].pk)
    assert asyncio.run(close_code(url, ticket=body["ticket"])) == 4401
    assert asyncio.run(close_code(f"{url}?ticket={body['ticket']}")) == 4401
    _, second = post(f"{stack.web_url}/api/ws-ticket/", token=token_issue(user_id=users["bob"].pk))
    by_query = asyncio.run(first_frame(f"{url}?ticket={second['ticket']}"))
    assert by_query["user_id"] == users["bob"].pk
    assert post(f"{stack.web_url}/api/ws-ticket/")[0] in (401, 403)


def test_a_foreign_origin_is_refused_and_an_allowed_one_accepted(stack, users):
    url = f"{stack.ws_url}/ws/notifications/"
    token = token_issue(user_id=users["bob"].pk)
    assert asyncio.run(handshake_status(url, token=token, origin="https://evil.example")) == 403
    assert asyncio.run(handshake_status(url, token=token, origin="null")) == 403
    assert asyncio.run(handshake_status(url, token=token, origin=stack.web_url)) == 101


def test_a_socket_whose_token_expires_while_open_is_closed_with_4401_at_expiry(stack, users):
    async def until_closed():
        sock = await Socket.open(f"{stack.ws_url}/ws/notifications/", token=hs256(users["bob"].pk, ttl=2))
        opened = time.monotonic()
        await sock.next()  # hello
        code = await sock.closed_with(timeout=10)
        return code, time.monotonic() - opened, sock.frames[-1]

    code, lasted, last = asyncio.run(until_closed())
    assert code == 4401
    assert last["code"] == "token_expired"
    assert 0.5 < lasted < 4.0


def test_the_per_user_path_must_name_the_authenticated_user(stack, users):
    token = token_issue(user_id=users["bob"].pk)
    own = asyncio.run(first_frame(f"{stack.ws_url}/ws/notifications/{users['bob'].pk}/", token=token))
    assert own["user_id"] == users["bob"].pk
    for other in (users["alice"].pk, "0", "abc", f"{users['bob'].pk}0"):
        assert asyncio.run(close_code(f"{stack.ws_url}/ws/notifications/{other}/", token=token)) == 4403


def test_two_users_side_by_side_never_see_each_others_notifications_or_state(stack, users):
    alice, bob = users["alice"], users["bob"]
    editors = Group.objects.create(name="editors")
    alice.groups.add(editors)
    base = f"{stack.ws_url}/ws/notifications/"
    alice_token, bob_token = token_issue(user_id=alice.pk), token_issue(user_id=bob.pk)

    async def side_by_side():
        alice_default = await Socket.open(base, token=alice_token)
        alice_path = await Socket.open(f"{base}{alice.pk}/", token=alice_token)
        bob_default = await Socket.open(base, token=bob_token)
        bob_path = await Socket.open(f"{base}{bob.pk}/", token=bob_token)
        sockets = [alice_default, alice_path, bob_default, bob_path]
        for sock in sockets:
            await sock.next()
        # Alice's notifications: to her alone, and to a role bob does not hold.
        await asyncio.to_thread(
            emit_event, event_type="announcement.posted", audience=Audience.users(alice), data={"text": "a1"}
        )
        await asyncio.to_thread(
            emit_event, event_type="announcement.posted", audience=Audience.role("editors"), data={"text": "a2"}
        )
        for sock in (alice_default, alice_path):
            await sock.until(lambda f: f["type"] == "notification" and f["notification"]["body"].endswith("a2"))
        alice_ids = await asyncio.to_thread(
            lambda: list(Notification.objects.filter(recipient=alice).values_list("pk", flat=True))
        )
        # Bob tries every path to them: marking her ids, resuming with her cursors, her path.
        for sock in (bob_default, bob_path):
            await sock.send({"type": "mark_read", "ids": alice_ids})
            await sock.send({"type": "mark_seen", "ids": alice_ids})
            await sock.send({"type": "resume", "cursor": 0})
        forbidden = await close_code(f"{base}{alice.pk}/", token=bob_token)
        bob_frames = await bob_default.drain(1.5) + await bob_path.drain(0.5)
        alice_frames = await alice_default.drain(0.5) + await alice_path.drain(0.5)
        for sock in sockets:
            await sock.close()
        return alice_ids, bob_frames, alice_frames, forbidden

    alice_ids, bob_frames, alice_frames, forbidden = asyncio.run(side_by_side())
    assert len(alice_ids) == 2
    assert forbidden == 4403
    seen_by_bob = json.dumps(bob_frames)
    assert not [f for f in bob_frames if f["type"] == "notification"]
    assert all(f["type"] in ("read_state", "resumed") for f in bob_frames)
    assert all(f.get("unread_count", 0) == 0 and f.get("notifications", []) == [] for f in bob_frames)
    assert "a1" not in seen_by_bob and "a2" not in seen_by_bob
    assert [f for f in alice_frames if f["type"] == "read_state"] == []
    assert Notification.objects.filter(recipient=alice, state=Notification.State.UNSEEN).count() == 2
    assert not Notification.objects.filter(recipient=bob).exists()
