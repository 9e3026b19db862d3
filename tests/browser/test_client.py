"""notiflow.js in Chromium against a scripted server: a fake WebSocket and fetch (support/harness.js).

Each test drives the protocol frame by frame and checks what the client
does: what it offers and sends, the events it fires, its list, count,
cursor and status. No stack is needed; the real relay is in test_inbox.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route

from webapp.stack import ROOT

ORIGIN = "http://notiflow.test"
FILES = {
    "/harness.js": Path(__file__).parent / "support" / "harness.js",
    "/static/notiflow/notiflow.js": ROOT / "pipeline" / "static" / "notiflow" / "notiflow.js",
}
HTML = '<!doctype html><meta charset="utf-8"><script type="module" src="/harness.js"></script>'


@pytest.fixture
def page(new_context: Callable[[], BrowserContext]) -> Page:
    """A page at a made-up origin whose only files are the client and the harness (nothing leaves the browser)."""

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path == "/":
            route.fulfill(body=HTML, content_type="text/html")
        elif path in FILES:
            route.fulfill(path=FILES[path], content_type="text/javascript")
        else:
            route.fulfill(status=404, body="")

    context = new_context()
    context.route(f"{ORIGIN}/**", serve)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("window.harnessReady === true", timeout=5000)
    return page


def run(page: Page, body: str) -> Any:
    """Run ``body`` as an async function in the page; returns what it returns."""
    return page.evaluate(f"async () => {{ {body} }}")


def test_a_fresh_ticket_is_offered_on_every_connect_and_the_reconnect_resumes_from_the_cursor(page: Page) -> None:
    got = run(
        page,
        """
        let issued = 0;
        const { client } = make({ getTicket: async () => `t${++issued}` });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 2, cursor: 5, recent: [N(5), N(4)] });
        const status = client.status;
        FakeSocket.last.drop(1006);
        await until(() => FakeSocket.all.length === 2);
        return { status, protocols: FakeSocket.all.map((s) => s.protocols), urls: FakeSocket.all.map((s) => s.url),
                 unread: client.unreadCount, ids: client.notifications.map((n) => n.id) };
        """,
    )
    assert got["protocols"] == [["notiflow", "ticket.t1"], ["notiflow", "ticket.t2"]]
    assert got["urls"] == ["ws://notiflow.test/ws/notifications/", "ws://notiflow.test/ws/notifications/?cursor=5"]
    assert got["status"] == "open"
    assert got["unread"] == 2
    assert got["ids"] == [105, 104]


def test_without_token_or_get_ticket_the_ticket_comes_from_the_session_api_with_the_csrf_token(page: Page) -> None:
    got = run(
        page,
        """
        api.routes["POST /api/ws-ticket/"] = { status: 200, body: { ticket: "s1", expires_in: 30 } };
        const { client } = make({ csrfToken: "csrf-1" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        return { protocols: FakeSocket.last.protocols, call: api.calls[0] };
        """,
    )
    assert got["protocols"] == ["notiflow", "ticket.s1"]
    assert got["call"]["url"] == "/api/ws-ticket/"
    assert got["call"]["method"] == "POST"
    assert got["call"]["credentials"] == "same-origin"
    assert got["call"]["headers"]["X-CSRFToken"] == "csrf-1"


def test_a_refused_ticket_request_stops_the_client(page: Page) -> None:
    got = run(
        page,
        """
        api.routes["POST /api/ws-ticket/"] = { status: 403, body: { detail: "Not signed in." } };
        const { client, only } = make();
        client.connect();
        await until(() => client.status === "closed");
        await sleep(60);
        return { sockets: FakeSocket.all.length, errors: only("error"), tickets: api.calls.length };
        """,
    )
    assert got["sockets"] == 0
    assert got["tickets"] == 1
    assert got["errors"][0][0]["code"] == "unauthenticated"
    assert got["errors"][0][0]["status"] == 403


@pytest.mark.parametrize(
    ("auth", "code", "reconnects", "error"),
    [
        ("token", 4401, False, "unauthenticated"),  # a static token cannot be renewed here
        ("ticket", 4401, True, None),  # a new ticket is fetched
        ("ticket", 4403, False, "forbidden"),
        ("ticket", 4413, True, None),
        ("ticket", 1011, True, None),
    ],
)
def test_close_codes(page: Page, auth: str, code: int, reconnects: bool, error: str | None) -> None:
    got = run(
        page,
        f"""
        let issued = 0;
        const auth = {auth!r} === "token" ? {{ token: "jwt-1" }} : {{ getTicket: async () => `t${{++issued}}` }};
        const {{ client, only }} = make(auth);
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({{ type: "hello", user_id: 7, unread_count: 0, cursor: 0, recent: [] }});
        FakeSocket.last.drop({code});
        await sleep(150);
        return {{ sockets: FakeSocket.all.map((s) => s.protocols[1]), status: client.status,
                 errors: only("error").map(([e]) => e.code) }};
        """,
    )
    if reconnects:
        assert got["sockets"][:2] == ["ticket.t1", "ticket.t2"]
        assert got["status"] in ("open", "reconnecting", "connecting")
    else:
        assert len(got["sockets"]) == 1
        assert got["status"] == "closed"
    assert got["errors"] == ([error] if error else [])
    if auth == "token":
        assert got["sockets"][0] == "jwt.jwt-1"


def test_each_notification_is_reported_once_whichever_way_it_arrives(page: Page) -> None:
    got = run(
        page,
        """
        const { client, only } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 2, cursor: 5, recent: [N(5), N(4)] });
        FakeSocket.last.receive({ type: "notification", notification: N(5) });
        FakeSocket.last.receive({ type: "notification", notification: N(6) });
        FakeSocket.last.receive({ type: "notification", notification: N(6) });
        FakeSocket.last.drop(1006);
        await until(() => FakeSocket.all.length === 2);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 4, cursor: 7, recent: [] });
        FakeSocket.last.receive({ type: "resumed", recovered: true, notifications: [N(6), N(7)], cursor: 7 });
        FakeSocket.last.receive({ type: "notification", notification: N(7) });
        return { reported: only("notification").map(([n, meta]) => [n.id, meta.source]),
                 ids: client.notifications.map((n) => n.id), url: FakeSocket.last.url };
        """,
    )
    assert got["reported"] == [[104, "recent"], [105, "recent"], [106, "push"], [107, "resume"]]
    assert got["ids"] == [107, 106, 105, 104]
    assert got["url"].endswith("?cursor=6")


def test_the_resume_cursor_only_advances_past_notifications_all_seen(page: Page) -> None:
    """Pushes can overtake each other; resuming after the highest cursor seen would skip the one still on its way."""
    got = run(
        page,
        """
        const { client } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        const cursors = [];
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 5, recent: [] });
        cursors.push(client.cursor);
        FakeSocket.last.receive({ type: "notification", notification: N(7) });
        cursors.push(client.cursor);
        FakeSocket.last.receive({ type: "notification", notification: N(6) });
        cursors.push(client.cursor);
        FakeSocket.last.receive({ type: "notification", notification: N(9) });
        cursors.push(client.cursor);
        FakeSocket.last.drop(1006);
        await until(() => FakeSocket.all.length === 2);
        // Resuming, the hello's cursor is not trusted until the resumed frame vouches for it.
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 9, recent: [] });
        cursors.push(client.cursor);
        FakeSocket.last.receive({ type: "resumed", recovered: true, notifications: [N(8), N(9)], cursor: 9 });
        cursors.push(client.cursor);
        return { cursors, url: FakeSocket.last.url, ids: client.notifications.map((n) => n.cursor) };
        """,
    )
    assert got["cursors"] == [5, 5, 7, 7, 7, 9]
    assert got["url"].endswith("?cursor=7")
    assert got["ids"] == [9, 8, 7, 6]


def test_an_unrecovered_resume_refetches_the_newest_page(page: Page) -> None:
    got = run(
        page,
        """
        const page = [N(62, { state: "read" }), N(61), N(60)];
        api.routes["GET /api/notifications/"] = { body: { next: null, previous: null, results: page } };
        api.routes["GET /api/notifications/unread-count/"] = { body: { unread_count: 41 } };
        const { client, only } = make({ getTicket: async () => "t", cursor: 2, notifications: [N(2)] });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 41, cursor: 62, recent: [] });
        FakeSocket.last.receive(
          { type: "resumed", recovered: false, notifications: [], cursor: 62, refetch: "/api/notifications/" });
        await until(() => only("resync").length === 1);
        return { url: FakeSocket.all[0].url, calls: api.calls.map((c) => c.url), resync: only("resync")[0][0],
                 reported: only("notification").map(([n, m]) => [n.cursor, m.source]), cursor: client.cursor,
                 unread: client.unreadCount, list: client.notifications.map((n) => [n.cursor, n.state]) };
        """,
    )
    assert got["url"].endswith("?cursor=2")
    assert sorted(got["calls"]) == ["/api/notifications/?page_size=50", "/api/notifications/unread-count/"]
    assert [n["cursor"] for n in got["resync"]["notifications"]] == [62, 61, 60]
    assert got["reported"] == [[60, "fetch"], [61, "fetch"], [62, "fetch"]]
    assert got["cursor"] == 62
    assert got["unread"] == 41
    assert got["list"] == [[62, "read"], [61, "unseen"], [60, "unseen"], [2, "unseen"]]


def test_read_state_pushes_update_the_list_and_mark_read_over_the_socket_resolves_on_them(page: Page) -> None:
    got = run(
        page,
        """
        const { client, only } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        const ws = FakeSocket.last;
        ws.receive({ type: "hello", user_id: 7, unread_count: 3, cursor: 3, recent: [N(3), N(2), N(1)] });
        const marked = client.markRead([101, 101]);
        const sent = [...ws.sent];
        ws.receive({ type: "read_state", ids: [101], all: false, state: "read", unread_count: 2 });
        const resolved = await marked;
        ws.receive({ type: "read_state", ids: [102], all: false, state: "seen", unread_count: 2 });
        const states = client.notifications.map((n) => [n.id, n.state]);
        ws.receive({ type: "read_state", ids: null, all: true, state: "read", unread_count: 0 });
        const again = await client.markRead([101, 102]);  // all read already: nothing to send
        return { sent, resolved, states, read: only("read").map(([r]) => r), seen: only("seen").map(([s]) => s),
                 unread: only("unread").map(([u]) => u), after: client.notifications.map((n) => n.state),
                 again, sentAfter: ws.sent.length };
        """,
    )
    assert got["sent"] == [{"type": "mark_read", "ids": [101]}]
    assert got["resolved"] == {"ids": [101], "all": False, "unread_count": 2}
    assert got["states"] == [[103, "unseen"], [102, "seen"], [101, "read"]]
    assert got["read"] == [
        {"ids": [101], "all": False, "unread_count": 2},
        {"ids": None, "all": True, "unread_count": 0},
    ]
    assert got["seen"] == [{"ids": [102], "all": False, "unread_count": 2}]
    assert got["unread"] == [3, 2, 0]
    assert got["after"] == ["read", "read", "read"]
    assert got["again"] == {"ids": [], "all": False, "unread_count": 0}
    assert got["sentAfter"] == 1


def test_without_a_socket_marks_go_over_rest_with_the_session_or_the_token(page: Page) -> None:
    got = run(
        page,
        """
        api.routes["POST /api/notifications/105/read/"] = { body: { unread_count: 4 } };
        api.routes["POST /api/notifications/read-all/"] = { body: { marked: 4, unread_count: 0 } };
        const session = make({ csrfToken: "c1", notifications: [N(5)] });
        const one = await session.client.markRead([105]);
        const all = await session.client.markAllRead();
        const bearer = make({ token: "jwt-2" });
        await bearer.client.markRead([105]);
        return { one, all, calls: api.calls, state: session.client.notifications[0].state,
                 read: session.only("read").map(([r]) => r) };
        """,
    )
    session_one, session_all, bearer = got["calls"]
    assert (session_one["method"], session_one["url"]) == ("POST", "/api/notifications/105/read/")
    assert session_one["headers"]["X-CSRFToken"] == "c1"
    assert session_one["credentials"] == "same-origin"
    assert "Authorization" not in session_one["headers"]
    assert session_all["url"] == "/api/notifications/read-all/"
    assert bearer["headers"]["Authorization"] == "Bearer jwt-2"
    assert bearer["credentials"] == "omit"
    assert "X-CSRFToken" not in bearer["headers"]
    assert got["one"] == {"ids": [105], "all": False, "unread_count": 4}
    assert got["all"] == {"ids": None, "all": True, "unread_count": 0}
    assert got["state"] == "read"
    assert got["read"] == [got["one"], got["all"]]


def test_a_mark_the_server_does_not_confirm_is_repeated_over_rest(page: Page) -> None:
    got = run(
        page,
        """
        api.routes["POST /api/notifications/101/read/"] = { body: { unread_count: 0 } };
        const { client } = make({ getTicket: async () => "t", ackTimeout: 40 });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 1, cursor: 1, recent: [N(1)] });
        const result = await client.markRead([101]);
        return { result, sent: FakeSocket.last.sent, calls: api.calls.map((c) => c.url) };
        """,
    )
    assert got["sent"] == [{"type": "mark_read", "ids": [101]}]
    assert got["calls"] == ["/api/notifications/101/read/"]
    assert got["result"] == {"ids": [101], "all": False, "unread_count": 0}


def test_backoff_is_full_jitter_capped(page: Page) -> None:
    got = run(
        page,
        """
        const { backoffDelay } = notiflow;
        const policy = { base: 500, cap: 30000 };
        return { high: [0, 1, 2, 3, 5, 6, 10].map((n) => Math.round(backoffDelay(n, policy, () => 0.999999))),
                 low: backoffDelay(4, policy, () => 0) };
        """,
    )
    assert got["high"] == [500, 1000, 2000, 4000, 16000, 30000, 30000]
    assert got["low"] == 0


@pytest.mark.parametrize("code", [4429, 4409])  # over the rate; too many sockets of this user
def test_reconnect_waits_grow_and_a_rate_limited_close_waits_at_least_half_the_cap(page: Page, code: int) -> None:
    got = run(
        page,
        """
        const { client } = make({ getTicket: async () => "t", backoff: { base: 20, cap: 300 }, random: () => 0.999 });
        client.connect();
        const waits = [];
        for (let i = 0; i < 3; i++) {
          await until(() => FakeSocket.all.length === i + 1);
          if (i > 0) waits.push(FakeSocket.all[i].createdAt - FakeSocket.all[i - 1].droppedAt);
          FakeSocket.last.drop(1006);  // no hello: a failed connect
        }
        await until(() => FakeSocket.all.length === 4);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 0, recent: [] });
        FakeSocket.last.drop(CODE);
        await until(() => FakeSocket.all.length === 5);
        waits.push(FakeSocket.all[4].createdAt - FakeSocket.all[3].droppedAt);
        return waits;
        """.replace("CODE", str(code)),
    )
    first, second, rate_limited = got
    assert 15 <= first < 20 + 50
    assert 35 <= second < 40 + 50
    assert rate_limited >= 150


def test_without_websocket_it_polls_the_rest_api(page: Page) -> None:
    got = run(
        page,
        """
        let polls = 0;
        api.routes["GET /api/notifications/"] = () => ({ body: { results: ++polls === 1 ? [N(1)] : [N(2), N(1)] } });
        api.routes["GET /api/notifications/unread-count/"] = () => ({ body: { unread_count: polls } });
        const { client, only } = make({ WebSocket: undefined, pollInterval: 40 });
        client.connect();
        await until(() => polls >= 3);
        const result = { status: client.status, reported: only("notification").map(([n, m]) => [n.id, m.source]),
                         unread: client.unreadCount, cursor: client.cursor };
        client.close();
        const stopped = polls;
        await sleep(100);
        return { ...result, pollsAfterClose: polls - stopped };
        """,
    )
    assert got["status"] == "polling"
    assert got["reported"] == [[101, "poll"], [102, "poll"]]
    assert got["unread"] >= 2
    assert got["cursor"] == 2
    assert got["pollsAfterClose"] == 0


def test_after_failed_connects_it_polls_and_keeps_trying_the_socket_until_a_hello(page: Page) -> None:
    got = run(
        page,
        """
        api.routes["GET /api/notifications/"] = { body: { results: [N(1)] } };
        api.routes["GET /api/notifications/unread-count/"] = { body: { unread_count: 1 } };
        const { client, only } = make({ getTicket: async () => "t", pollAfter: 3, pollInterval: 20,
                                        backoff: { base: 5, cap: 10 } });
        client.connect();
        for (let i = 0; i < 4; i++) {
          await until(() => FakeSocket.all.length === i + 1);
          if (i < 3) FakeSocket.last.drop(1006);
        }
        const whilePolling = client.status;
        await until(() => api.calls.length >= 2);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 1, cursor: 1, recent: [] });
        const calls = api.calls.length;
        await sleep(80);
        return { whilePolling, statuses: only("status").map(([s]) => s), after: client.status,
                 callsAfterHello: api.calls.length - calls };
        """,
    )
    assert got["whilePolling"] == "polling"
    assert got["statuses"] == ["connecting", "polling", "open"]
    assert got["after"] == "open"
    assert got["callsAfterHello"] == 0


def test_close_is_clean_and_final(page: Page) -> None:
    got = run(
        page,
        """
        const { client, only } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 0, recent: [] });
        client.close();
        await sleep(80);
        const statuses = only("status").map(([s]) => s);
        return { closed: FakeSocket.last.closed, sockets: FakeSocket.all.length, statuses };
        """,
    )
    assert got["closed"] == {"code": 1000, "reason": "client closed"}
    assert got["sockets"] == 1
    assert got["statuses"] == ["connecting", "open", "closed"]


def test_the_online_event_retries_at_once(page: Page) -> None:
    got = run(
        page,
        """
        const slow = { base: 60000, cap: 60000 };
        const { client } = make({ getTicket: async () => "t", backoff: slow, random: () => 0.99 });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.drop(1006);
        await sleep(30);
        const before = FakeSocket.all.length;
        window.dispatchEvent(new Event("online"));
        await until(() => FakeSocket.all.length === 2, 500);
        client.close();
        return before;
        """,
    )
    assert got == 1


def test_a_silent_socket_is_pinged_then_replaced_and_one_without_hello_times_out(page: Page) -> None:
    got = run(
        page,
        """
        const { client } = make({ getTicket: async () => "t", heartbeat: 30, connectTimeout: 60 });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        const first = FakeSocket.last;
        first.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 0, recent: [] });
        await until(() => FakeSocket.all.length === 2, 1000);  // silence: pinged, then dropped
        const second = FakeSocket.last;
        await until(() => FakeSocket.all.length === 3, 1000);  // no hello within connectTimeout
        client.close();
        return { pings: first.sent, firstClosed: first.closed, secondClosed: second.closed };
        """,
    )
    assert {"type": "ping"} in got["pings"]
    assert got["firstClosed"]["code"] == 4000
    assert got["secondClosed"]["code"] == 4000


def test_ping_resolves_on_pong_and_server_errors_and_broadcasts_are_events(page: Page) -> None:
    got = run(
        page,
        """
        const { client, only } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        const ws = FakeSocket.last;
        const early = await client.ping().then(() => "resolved", (e) => e.message);
        ws.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 0, recent: [] });
        const pinged = client.ping();
        ws.receive({ type: "pong" });
        const rtt = await pinged;
        ws.receive({ type: "error", code: "unknown_type", detail: "nope" });
        ws.receive({ type: "broadcast", payload: { text: "hi" } });
        ws.receive("{not json");
        ws.receive({ type: "from_the_future" });
        return { early, rtt: typeof rtt, sent: ws.sent, errors: only("error").map(([e]) => e.code),
                 broadcasts: only("broadcast").map(([p]) => p), status: client.status };
        """,
    )
    assert got["early"] == "notiflow: not connected"
    assert got["rtt"] == "number"
    assert got["sent"] == [{"type": "ping"}]
    assert got["errors"] == ["unknown_type", "bad_frame"]
    assert got["broadcasts"] == [{"text": "hi"}]
    assert got["status"] == "open"


def test_mark_seen_waits_for_a_socket_and_listener_errors_do_not_break_the_client(page: Page) -> None:
    got = run(
        page,
        """
        const { client, only } = make({ getTicket: async () => "t" });
        client.on("notification", () => { throw new Error("a listener's bug"); });
        await client.markSeen([101]);
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 1, cursor: 1, recent: [N(1)] });
        FakeSocket.last.receive({ type: "notification", notification: N(2) });
        return { sent: FakeSocket.last.sent, reported: only("notification").map(([n]) => n.id) };
        """,
    )
    assert got["sent"] == [{"type": "mark_seen", "ids": [101]}]
    assert got["reported"] == [101, 102]


def test_reconnect_drops_the_socket_and_resumes_at_once_with_a_new_ticket(page: Page) -> None:
    got = run(
        page,
        """
        let issued = 0;
        const { client } = make({ getTicket: async () => `t${++issued}`, backoff: { base: 60000, cap: 60000 } });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 0, cursor: 4, recent: [] });
        client.reconnect();
        await until(() => FakeSocket.all.length === 2, 500);
        return { closed: FakeSocket.all[0].closed, url: FakeSocket.last.url, protocols: FakeSocket.last.protocols };
        """,
    )
    assert got["closed"] == {"code": 1000, "reason": "reconnecting"}
    assert got["url"].endswith("?cursor=4")
    assert got["protocols"] == ["notiflow", "ticket.t2"]


def test_pushed_notifications_add_to_the_unread_count_unless_the_server_counted_them_already(page: Page) -> None:
    got = run(
        page,
        """
        const { client } = make({ getTicket: async () => "t" });
        client.connect();
        await until(() => FakeSocket.all.length === 1);
        const counts = [];
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 2, cursor: 5, recent: [N(5), N(4)] });
        counts.push(client.unreadCount);
        FakeSocket.last.receive({ type: "notification", notification: N(7) });
        FakeSocket.last.receive({ type: "notification", notification: N(6) });
        FakeSocket.last.receive({ type: "notification", notification: N(6) });
        counts.push(client.unreadCount);
        FakeSocket.last.drop(1006);
        await until(() => FakeSocket.all.length === 2);
        // The hello's count (cursor 9) includes the replayed 8 and 9; 10 committed after it did not.
        FakeSocket.last.receive({ type: "hello", user_id: 7, unread_count: 6, cursor: 9, recent: [] });
        FakeSocket.last.receive({ type: "resumed", recovered: true, notifications: [N(8), N(9), N(10)], cursor: 10 });
        counts.push(client.unreadCount);
        FakeSocket.last.receive({ type: "notification", notification: N(11, { state: "read" }) });
        counts.push(client.unreadCount);
        return counts;
        """,
    )
    assert got == [2, 4, 7, 7]


def test_a_ticket_that_does_not_come_in_time_counts_as_a_failed_connect(page: Page) -> None:
    got = run(
        page,
        """
        let asked = 0;
        const getTicket = () => (++asked === 1 ? new Promise(() => {}) : Promise.resolve("t2"));
        const { client, only } = make({ getTicket, connectTimeout: 40 });
        client.connect();
        await until(() => FakeSocket.all.length === 1, 1000);
        client.close();
        return { asked, protocols: FakeSocket.last.protocols, errors: only("error").map(([e]) => e.code) };
        """,
    )
    assert got == {"asked": 2, "protocols": ["notiflow", "ticket.t2"], "errors": ["ticket_failed"]}
