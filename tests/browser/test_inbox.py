"""The demo inbox page (/demo/) in Chromium, against the real stack: daphne, worker, Redis.

alice and bob each sign in in their own browser profile. What a person
would see is checked on the page: the toast, the badge, the list.

Needs the demo page on in the stack's settings (``NOTIFLOW_DEMO_PAGE``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, WebSocket, expect

from webapp.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@dataclass
class Inbox:
    """A signed-in demo page and every frame its sockets received (``sockets``: ``[(url, [frame, ...])]``)."""

    page: Page
    sockets: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def ids(self) -> list[int]:
        """The ``data-id`` of every item of the list, top to bottom (duplicates included)."""
        found = self.page.locator("#list li[data-id]").evaluate_all("items => items.map(i => i.dataset.id)")
        return [int(i) for i in found]


@pytest.fixture
def world(stack: Stack) -> dict[str, Any]:
    """The gallery seed's users and artworks (alice, bob, carol, dave, erin, frank; bob's “Blue Heron at Dusk”)."""
    from webapp.gallery.seed import demo_seed

    return demo_seed()


@pytest.fixture
def sign_in(stack: Stack, world: dict[str, Any]) -> Callable[[BrowserContext, str], Inbox]:
    """``sign_in(context, "bob")``: a new page in ``context``, signed in from the demo page's form, socket open."""

    def _sign_in(context: BrowserContext, name: str) -> Inbox:
        page = context.new_page()
        inbox = Inbox(page)

        def record(ws: WebSocket) -> None:
            frames: list[dict[str, Any]] = []
            inbox.sockets.append((ws.url, frames))
            ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

        page.on("websocket", record)
        response = page.goto(f"{stack.web_url}/demo/")
        if response is not None and response.status == 404:
            pytest.fail("/demo/ is off in the stack's settings: NOTIFLOW_DEMO_PAGE must be true in tests.settings")
        if page.locator(f'button[name="username"][value="{name}"]').count():
            page.click(f'button[name="username"][value="{name}"]')
        expect(page.locator("#status")).to_have_text("open", timeout=10_000)
        return inbox

    return _sign_in


def test_a_critique_alice_posts_reaches_bob_within_two_seconds(
    new_context: Callable[[], BrowserContext], sign_in: Callable[..., Inbox], artifact: Callable[[str], Path]
) -> None:
    alice = sign_in(new_context(), "alice")
    bob = sign_in(new_context(), "bob")
    expect(bob.page.locator("#badge")).to_have_text("0")

    alice.page.select_option("#critique-artwork", label="“Blue Heron at Dusk” by bob")
    alice.page.fill("#critique-text", "The reeds frame the heron beautifully.")
    clicked = time.monotonic()
    alice.page.click("#post-critique")
    toast = bob.page.locator(".toast", has_text="alice critiqued your artwork “Blue Heron at Dusk”")
    expect(toast).to_be_visible(timeout=2000)
    expect(bob.page.locator("#badge")).to_have_text("1", timeout=2000)
    elapsed = time.monotonic() - clicked
    print(f"click → toast and badge: {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0

    expect(alice.page.locator("#feedback")).to_contain_text("posted")
    expect(bob.page.locator("#list li[data-id]").first).to_contain_text("The reeds frame the heron beautifully.")
    assert len(bob.ids()) == 1
    expect(alice.page.locator("#badge")).to_have_text("0")  # the actor is not notified
    alice.page.screenshot(path=artifact("alice.png"))
    bob.page.screenshot(path=artifact("bob.png"))


def test_bob_marks_a_notification_read_in_one_tab_and_his_other_tab_follows(
    new_context: Callable[[], BrowserContext],
    sign_in: Callable[..., Inbox],
    world: dict[str, Any],
    artifact: Callable[[str], Path],
) -> None:
    from pipeline.models import Notification
    from webapp.gallery.services import critique_create

    context = new_context()
    first = sign_in(context, "bob")
    second = sign_in(context, "bob")  # the same session: already signed in
    users, heron = world["users"], world["artworks"]["bob"]
    critique_create(author=users["alice"], artwork=heron, text="Lovely.")
    for tab in (first, second):
        expect(tab.page.locator("#badge")).to_have_text("1", timeout=10_000)

    first.page.click("#list button[data-mark-read]")
    expect(second.page.locator("#badge")).to_have_text("0", timeout=2000)
    expect(second.page.locator("#list li[data-id]")).to_have_attribute("data-state", "read")
    expect(second.page.locator("#list button[data-mark-read]")).to_have_count(0)
    expect(first.page.locator("#badge")).to_have_text("0")
    assert list(Notification.objects.filter(recipient=users["bob"]).values_list("state", flat=True)) == ["read"]
    second.page.screenshot(path=artifact("second-tab.png"))


def test_notifications_emitted_while_bob_is_cut_off_arrive_once_after_he_reconnects(
    new_context: Callable[[], BrowserContext],
    sign_in: Callable[..., Inbox],
    world: dict[str, Any],
    artifact: Callable[[str], Path],
) -> None:
    from pipeline.models import Notification
    from webapp.gallery.services import announcement_publish, critique_create, like_create

    users, heron = world["users"], world["artworks"]["bob"]
    critique_create(author=users["alice"], artwork=heron, text="Before the cut.")
    context = new_context()
    bob = sign_in(context, "bob")
    expect(bob.page.locator("#list li[data-id]")).to_have_count(1, timeout=10_000)
    cursor = bob.page.evaluate("window.notiflowClient.cursor")
    assert cursor == 1

    # The network goes away. Chromium keeps an open socket alive through offline emulation (its frames
    # wait), so the client drops it itself, as its heartbeat would after two silent beats.
    context.set_offline(True)
    bob.page.evaluate("window.notiflowClient.reconnect()")
    expect(bob.page.locator("#status")).not_to_have_text("open")

    critique_create(author=users["carol"], artwork=heron, text="Missed one.")
    like_create(user=users["dave"], artwork=heron)
    announcement_publish(author=users["admin"], text="Missed three.")
    missed = wait_for(
        lambda: list(
            Notification.objects.filter(recipient=users["bob"], cursor__gt=cursor).values_list("pk", flat=True)
        )
        if Notification.objects.filter(recipient=users["bob"], cursor__gt=cursor).count() == 3
        else []
    )
    assert len(missed) == 3
    time.sleep(0.5)  # the pushes of the three have gone out to nowhere by now
    sockets_before = len(bob.sockets)

    context.set_offline(False)  # the browser's "online" event: the client reconnects at once
    for pk in missed:
        expect(bob.page.locator(f'#list li[data-id="{pk}"]')).to_have_count(1, timeout=10_000)
    expect(bob.page.locator("#status")).to_have_text("open")
    expect(bob.page.locator("#badge")).to_have_text("4")
    time.sleep(0.5)  # nothing arrives twice later on
    ids = bob.ids()
    assert sorted(ids) == sorted({*ids}) and len(ids) == 4
    for pk in missed:
        assert ids.count(pk) == 1

    # They came from the resume: the new socket asked for what followed cursor 1, and the server replayed them.
    resumed_on = [(url, frames) for url, frames in bob.sockets[sockets_before:] if frames]
    assert len(resumed_on) == 1
    url, frames = resumed_on[0]
    assert url.endswith(f"?cursor={cursor}")
    resumed = [f for f in frames if f["type"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["recovered"] is True
    assert sorted(n["id"] for n in resumed[0]["notifications"]) == sorted(missed)
    bob.page.screenshot(path=artifact("bob-after-reconnect.png"))


def test_markup_and_non_latin_text_show_as_written_pushed_and_after_a_reload(
    new_context: Callable[[], BrowserContext], sign_in: Callable[..., Inbox], world: dict[str, Any]
) -> None:
    from webapp.gallery.services import critique_create

    users, heron = world["users"], world["artworks"]["bob"]
    tricky = 'Tom & Jerry\'s "<b>bold</b>" <img src=x onerror="window.pwned=1"> Ωμέγα 漢字'
    users["alice"].username = 'o\'neil<&>"Zoë"'  # not a valid username for the sign-up form, but a model allows it
    users["alice"].save(update_fields=["username"])
    bob = sign_in(new_context(), "bob")

    critique_create(author=users["alice"], artwork=heron, text=tricky)

    item = bob.page.locator("#list li[data-id]").first
    for page_state in ("pushed", "reloaded"):
        expect(item.locator("strong")).to_have_text(
            f"{users['alice'].username} critiqued your artwork “Blue Heron at Dusk”"
        )
        expect(item.locator("p")).to_have_text(f"{users['alice'].username} wrote: “{tricky}”")
        assert item.locator("b, img").count() == 0, page_state
        assert bob.page.evaluate("window.pwned") is None, page_state
        bob.page.reload()
        expect(bob.page.locator("#status")).to_have_text("open", timeout=10_000)
