"""Order (issue 9): each socket receives its user's notifications in emit order, each once, whatever happens
between the pipeline and the socket.

A job's three status changes (queued, processing, completed) are emitted
back to back, 200 jobs, to one user; the worker's two pool processes store
and push them concurrently. Every socket must show every job's statuses in
emit order, once each: pushes in strictly increasing cursor order with no
gap, also when a socket reconnects mid-run (the README's rule: resume from
the highest cursor seen), when pushes are lost on their way (the relay fills
them from the database), and when a notification is not pushed at all (a
preference turns its push off: the next one must not wait for it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from pipeline import Audience, emit_event
from pipeline.models import Delivery, Event, Notification, Preference
from pipeline.selectors import inbox_position
from tests.support.ws import Socket
from webapp.realtime.client import Listener, ListenerGroup
from webapp.stack import free_port, wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = 200
STATUSES = ("queued", "processing", "completed")
TOTAL = JOBS * len(STATUSES)
WAIT = 90  # seconds to wait for the whole run: generous, a slow run fails on its order, not on a timer
GAP_WAIT = 1.0  # NOTIFLOW["WEBSOCKET"]["GAP_WAIT"], the default (tests/settings.py leaves it)


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a worker thread, closing that thread's database connection after it."""

    def call() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


def emit_jobs(user: Any, event_type: str, jobs: range = range(JOBS)) -> list[tuple[str, int, str]]:
    """Emit each job's statuses in order, one ``emit_event()`` after the other; ``[(event id, job, status)]``."""
    emitted = []
    for job in jobs:
        for status in STATUSES:
            event_id = emit_event(
                event_type=event_type, audience=Audience.users(user), data={"job": job, "status": status}
            )
            emitted.append((str(event_id), job, status))
    return emitted


def describe(notification: dict[str, Any]) -> tuple[int, int, str]:
    return notification["cursor"], notification["data"]["job"], notification["data"]["status"]


def assert_in_emit_order(got: list[dict[str, Any]], emitted: list[tuple[str, int, str]], who: str) -> None:
    """``got`` (notification payloads, in the order a socket received them) is every emitted notification once,
    in emit order, with cursors 1, 2, 3, ... and the event's ``occurred_at``."""
    cursors = [n["cursor"] for n in got]
    ids = [n["id"] for n in got]
    duplicates = sorted({c for c in cursors if cursors.count(c) > 1})
    assert len(ids) == len(set(ids)), f"{who}: notifications received twice (cursors {duplicates})"
    out_of_order = [(a, b) for a, b in itertools.pairwise(cursors) if b != a + 1]
    assert cursors == list(range(1, len(emitted) + 1)), (
        f"{who}: {len(cursors)} pushes; not cursors 1..{len(emitted)} in order: first breaks {out_of_order[:10]}, "
        f"missing {sorted(set(range(1, len(emitted) + 1)) - set(cursors))[:20]}"
    )
    assert [(n["event_id"], n["data"]["job"], n["data"]["status"]) for n in got] == emitted, (
        f"{who}: not in emit order: first differences "
        f"{[(describe(n), e[1:]) for n, e in zip(got, emitted, strict=True) if describe(n)[1:] != e[1:]][:10]}"
    )
    assert [n["title"] for n in got] == [f"Job {job} {status}" for _, job, status in emitted]
    # Each job's statuses, as the socket saw them: queued, processing, completed.
    seen: dict[int, list[str]] = {}
    for n in got:
        seen.setdefault(n["data"]["job"], []).append(n["data"]["status"])
    assert all(statuses == list(STATUSES) for statuses in seen.values()) and len(seen) == len(emitted) // 3
    # occurred_at: the event's, in every payload; emitted one after the other, so never decreasing.
    occurred = dict(Event.objects.filter(pk__in=[e for e, _, _ in emitted]).values_list("pk", "occurred_at"))
    assert all(isinstance(n.get("occurred_at"), str) for n in got), f"{who}: a payload without occurred_at"
    stamps = [datetime.fromisoformat(n["occurred_at"]) for n in got]
    assert stamps == [occurred[uuid.UUID(n["event_id"])] for n in got]
    assert stamps == sorted(stamps)


def assert_stored_in_emit_order(user: Any, emitted: list[tuple[str, int, str]], *, pushed: bool = True) -> None:
    """The database numbers the user's notifications in emit order: cursor 1, 2, 3, ... (and push_seq likewise)."""
    rows = list(Notification.objects.filter(recipient=user).order_by("cursor"))
    assert [(str(n.event_id), n.data["job"], n.data["status"]) for n in rows] == emitted
    assert [n.cursor for n in rows] == list(range(1, len(emitted) + 1))
    if pushed:
        assert [n.push_seq for n in rows] == list(range(1, len(emitted) + 1))
    assert inbox_position(user_id=user.pk) == (len(emitted), len(emitted) if pushed else 0)


def received(listener: Any) -> list[dict[str, Any]]:
    return [n for _, n in listener.notifications()]


def other_frames(listener: Any) -> list[dict[str, Any]]:
    """Frames other than the hello and the pushes (a ``resumed`` refetch, an error): there should be none."""
    return [f for _, f in list(listener.frames) if f.get("type") not in ("hello", "notification")]


def wait_for_all(listeners: dict[str, Any], count: int, *, since: float | None = None) -> None:
    """Wait until every socket has ``count`` pushes (``since``: when the emitting started, for the message)."""

    def finished() -> bool:
        # Every socket has them all, or one was sent something else (a refetch, an error): that fails below.
        return all(len(received(listener)) >= count or other_frames(listener) for listener in listeners.values())

    wait_for(finished, timeout=WAIT)
    done = all(len(received(listener)) >= count for listener in listeners.values())
    # A push repeated late (a gap fill after the pushes) would come within GAP_WAIT: wait that long for it.
    time.sleep(GAP_WAIT + 0.5)
    assert done, "not all received: " + "; ".join(
        f"{name}: {timeline(listener, since=since)}" for name, listener in listeners.items()
    )


def timeline(listener: Any, *, since: float | None = None) -> str:
    """What a socket received, for a failure message: pushes as runs of cursors, other frames in full, each with
    its arrival in seconds after ``since`` (the first frame's by default)."""
    frames = list(listener.frames)
    start = since if since is not None else (frames[0][0] if frames else 0.0)
    parts: list[str] = []
    run: list[int] = []
    run_at = 0.0
    for at, frame in frames:
        if frame.get("type") == "notification" and run and frame["notification"]["cursor"] == run[-1] + 1:
            run.append(frame["notification"]["cursor"])
            continue
        if run:
            parts.append(f"+{run_at - start:.2f}s pushes {run[0]}..{run[-1]}")
            run = []
        if frame.get("type") == "notification":
            run, run_at = [frame["notification"]["cursor"]], at
        elif frame.get("type") != "hello":
            parts.append(f"+{at - start:.2f}s {frame}")
    if run:
        parts.append(f"+{run_at - start:.2f}s pushes {run[0]}..{run[-1]}")
    return f"{len(listener.notifications())} pushes: " + ", ".join(parts)


def test_two_sockets_receive_every_job_status_in_emit_order_once(stack, users, connect):
    bob = users["bob"]
    sockets = connect(phone=bob, laptop=bob)
    started = time.time()
    emitted = emit_jobs(bob, "test.job")
    wait_for_all(sockets, TOTAL, since=started)

    for name, listener in sockets.items():
        assert other_frames(listener) == [], name
        assert_in_emit_order(received(listener), emitted, name)
    assert_stored_in_emit_order(bob, emitted)
    assert wait_for(lambda: Delivery.objects.filter(method="websocket", status="sent").count() == TOTAL, timeout=30)


def test_a_socket_that_reconnects_mid_run_with_its_highest_cursor_misses_nothing_and_repeats_nothing(
    stack, users, connect
):
    """The README's rule, literally: keep the highest cursor seen, reconnect with ``?cursor=<it>``.

    The socket leaves once it has read cursor 295 of the first 300 (the 5 after it are pushed while it leaves
    or is away), 9 more are emitted while it is away, and the rest from the moment it is greeted again, so
    that pushes overlap the resume. It misses fewer than RESUME_LIMIT (25 in the test settings), so the resume
    is complete (``recovered: true``); the steady second socket is unaffected.
    """
    bob = users["bob"]
    steady = connect(steady=bob)  # keeps bob present: pushes go out while the other socket is away
    url = f"{stack.ws_url}/ws/notifications/"
    token = token_issue(user_id=bob.pk, ttl=300)
    leave_after = 295
    greeted, away, back = threading.Event(), threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    async def client() -> None:
        first = await Socket.open(url, token=token)
        result["hello"] = await first.next()
        greeted.set()
        highest = 0
        while highest < leave_after:
            frame = await first.next(timeout=WAIT)
            if frame["type"] == "notification":
                highest = max(highest, frame["notification"]["cursor"])
        await first.close()
        result["before"] = list(first.frames)
        away.set()
        # Away until the 9 emitted meanwhile are stored (their pushes go to the steady socket only).
        await in_thread(wait_for, lambda: Notification.objects.filter(recipient=bob).count() >= 309, timeout=WAIT)
        again = await Socket.open(f"{url}?cursor={highest}", token=token)
        result["rehello"] = await again.next()
        back.set()
        latest = highest
        while latest < TOTAL:
            frame = await again.next(timeout=WAIT)
            for n in frame.get("notifications", []) + ([frame["notification"]] if "notification" in frame else []):
                latest = max(latest, n["cursor"])
        await again.drain(GAP_WAIT + 0.5)
        await again.close()
        result["after"] = list(again.frames)

    def run_client() -> None:
        try:
            asyncio.run(client())
        except BaseException as exc:  # reported by the test
            result["error"] = exc
            for step in (greeted, away, back):
                step.set()
        finally:
            connection.close()

    thread = threading.Thread(target=run_client, daemon=True)
    thread.start()
    assert greeted.wait(30)
    emitted = emit_jobs(bob, "test.job", range(100))
    assert away.wait(WAIT), "the socket never saw cursor 295"
    emitted += emit_jobs(bob, "test.job", range(100, 103))
    assert back.wait(WAIT)
    emitted += emit_jobs(bob, "test.job", range(103, JOBS))
    thread.join(WAIT + 10)
    assert "error" not in result, f"client failed: {result.get('error')!r}; frames {result}"
    assert not thread.is_alive()

    before, after = result["before"], result["after"]
    assert result["hello"]["cursor"] == 0
    pushed_before = [f["notification"] for f in before if f["type"] == "notification"]
    highest = max(n["cursor"] for n in pushed_before)
    assert highest == leave_after
    rehello = result["rehello"]
    assert rehello["type"] == "hello" and rehello["recent"] == []  # resuming: the resume carries them
    kinds = [f["type"] for f in after]
    assert kinds[0] == "hello" and kinds.count("resumed") == 1, kinds
    resumed = after[kinds.index("resumed")]
    assert resumed["recovered"] is True, resumed
    # Nothing but pushes after the resumed frame: it came before any push of this socket.
    assert set(kinds[kinds.index("resumed") + 1 :]) <= {"notification"}, kinds
    assert "notification" not in kinds[: kinds.index("resumed")]
    missed = resumed["notifications"]
    assert len(missed) >= 309 - leave_after  # the 5 in flight and the 9 emitted while away, at least
    assert [n["cursor"] for n in missed] == list(range(highest + 1, highest + 1 + len(missed)))
    assert resumed["cursor"] == missed[-1]["cursor"]
    pushed_after = [f["notification"] for f in after if f["type"] == "notification"]
    assert_in_emit_order(pushed_before + missed + pushed_after, emitted, "reconnecting socket")

    wait_for_all(steady, TOTAL)
    assert other_frames(steady["steady"]) == []
    assert_in_emit_order(received(steady["steady"]), emitted, "steady socket")
    assert_stored_in_emit_order(bob, emitted)


def dropped_pushes(user_id: int) -> list[dict[str, Any]]:
    path = Path(settings.NOTIFLOW["DELIVERY_METHODS"]["websocket_lossy"]["OPTIONS"]["path"])
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["recipient"] == user_id]


def forget_dropped_pushes() -> None:
    Path(settings.NOTIFLOW["DELIVERY_METHODS"]["websocket_lossy"]["OPTIONS"]["path"]).unlink(missing_ok=True)


def test_pushes_lost_on_the_way_are_filled_in_order_from_the_database(stack, users, connect):
    bob = users["bob"]
    forget_dropped_pushes()
    sockets = connect(phone=bob, laptop=bob)
    started = time.time()
    emitted = emit_jobs(bob, "test.job.lossy")
    wait_for_all(sockets, TOTAL, since=started)

    # Every fifth push of each pool process never reached the channel layer, yet the database says sent.
    assert wait_for(
        lambda: Delivery.objects.filter(method="websocket_lossy", status="sent").count() == TOTAL, timeout=30
    )
    dropped = dropped_pushes(bob.pk)
    assert len(dropped) >= TOTAL // 5 - 10, len(dropped)
    for name, listener in sockets.items():
        assert other_frames(listener) == [], name
        assert_in_emit_order(received(listener), emitted, name)
        assert {d["cursor"] for d in dropped} <= {n["cursor"] for n in received(listener)}
    assert_stored_in_emit_order(bob, emitted)


@pytest.fixture
def second_asgi(stack: Any) -> Iterator[str]:
    """A second ASGI process (daphne) beside the stack's, on its own port, with the stack's settings, channel
    layer and database: the ``ws://`` base URL of it. Stopped after the test."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "webapp.asgi:application"],
        env={**os.environ, **stack.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        assert wait_for(listening, timeout=30), "the second daphne did not start"
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sockets_on_two_asgi_processes_each_receive_every_push_in_order_once_pushes_lost_or_not(
    stack, users, second_asgi
):
    """Issue 9: "this holds with several ASGI processes and several workers". bob has one socket on each of two
    daphne processes (the worker's two pool processes store and push); half the jobs go through the push that
    loses one in five, so both processes fill gaps from the database on their own."""
    bob = users["bob"]
    forget_dropped_pushes()
    token = token_issue(user_id=bob.pk, ttl=300)
    sockets = {
        "first": Listener(name="first", url=f"{stack.ws_url}/ws/notifications/", token=token),
        "second": Listener(name="second", url=f"{second_asgi}/ws/notifications/", token=token),
    }
    group = ListenerGroup(list(sockets.values()))
    group.start()
    try:
        started = time.time()
        emitted = emit_jobs(bob, "test.job", range(JOBS // 2)) + emit_jobs(
            bob, "test.job.lossy", range(JOBS // 2, JOBS)
        )
        wait_for_all(sockets, TOTAL, since=started)
    finally:
        group.stop()

    assert dropped_pushes(bob.pk), "no push was lost: the lossy half did not go through the dropping method"
    for name, listener in sockets.items():
        assert other_frames(listener) == [], name
        assert_in_emit_order(received(listener), emitted, name)
    assert_stored_in_emit_order(bob, emitted)


def test_a_lost_last_push_is_filled_by_the_quiet_check(stack, users):
    """Nothing comes after the lost push to show the gap: GAP_WAIT after the socket's last push it reads the
    inbox, sees a push it was not sent, and sends it.

    Each push is emitted as soon as the one before it arrived, so the lost one comes within GAP_WAIT of the
    socket's last push (the README: one lost with nothing before it within GAP_WAIT waits for the next push,
    ``ping`` or resume). A first push through the loss-free method makes sure there is one before it.
    """
    bob = users["bob"]
    forget_dropped_pushes()
    url = f"{stack.ws_url}/ws/notifications/"

    def emit_and_wait_until_sent(event_type: str, job: int) -> Notification:
        event_id = emit_event(event_type=event_type, audience=[bob.pk], data={"job": job, "status": "queued"})
        assert wait_for(
            lambda: Delivery.objects.filter(notification__event_id=event_id, status="sent").exists(), timeout=30
        )
        return Notification.objects.get(event_id=event_id)

    async def until_a_push_is_lost() -> tuple[list[dict[str, Any]], dict[str, Any], float, list[dict[str, Any]]]:
        sock = await Socket.open(url, token=token_issue(user_id=bob.pk))
        await sock.next()  # hello
        got: list[dict[str, Any]] = []
        await in_thread(emit_and_wait_until_sent, "test.job", 0)
        got.append((await sock.until(lambda f: f["type"] == "notification", timeout=30))["notification"])
        for job in range(1, 20):  # a pool process drops its fifth push: with two, one of 9 in a row at most
            stored = await in_thread(emit_and_wait_until_sent, "test.job.lossy", job)
            lost = [d for d in await in_thread(dropped_pushes, bob.pk) if d["notification"] == stored.pk]
            if lost:
                break
            got.append((await sock.until(lambda f: f["type"] == "notification", timeout=30))["notification"])
        else:
            pytest.fail("no push was dropped")
        started = time.monotonic()
        filled = await sock.until(lambda f: f["type"] == "notification", timeout=GAP_WAIT + 15)
        waited = time.monotonic() - started
        extra = await sock.drain(GAP_WAIT + 0.5)
        await sock.close()
        return got, {**filled["notification"], "lost": lost[0]}, waited, extra

    try:
        got, filled, waited, extra = asyncio.run(until_a_push_is_lost())
    finally:
        connection.close()
    assert [n["cursor"] for n in got] == list(range(1, len(got) + 1))
    # The lost push came, after the ones before it (filled from the database, GAP_WAIT after the last push).
    assert (filled["cursor"], filled["id"]) == (len(got) + 1, filled["lost"]["notification"]), waited
    assert filled["lost"]["cursor"] == len(got) + 1
    assert [f for f in extra if f["type"] == "notification"] == []  # once


def test_a_notification_not_pushed_by_preference_does_not_hold_up_the_next(stack, users, connect):
    """A's push is off (bob's preference): A has no push_seq, so B follows on from the push before A at once."""
    bob = users["bob"]
    Preference.objects.create(user=bob, category="announcements", method="websocket", setting="off")
    sockets = connect(laptop=bob)
    laptop = sockets["laptop"]

    def emit(event_type: str, data: dict[str, Any]) -> tuple[str, float]:
        at = time.time()
        return str(emit_event(event_type=event_type, audience=Audience.users(bob), data=data)), at

    first, _ = emit("test.job", {"job": 0, "status": "queued"})
    assert wait_for(lambda: len(received(laptop)) == 1, timeout=30)
    a, _ = emit("announcement.posted", {"text": "muted on sockets"})
    b, b_emitted = emit("test.job", {"job": 0, "status": "processing"})
    assert wait_for(lambda: len(received(laptop)) >= 2, timeout=30)
    b_arrived = next(t for t, n in laptop.notifications() if n["event_id"] == b)
    time.sleep(GAP_WAIT + 0.5)  # A would come by now, from a gap fill or the quiet check

    assert [n["event_id"] for n in received(laptop)] == [first, b]
    assert [n["cursor"] for n in received(laptop)] == [1, 3]
    assert other_frames(laptop) == []
    muted = Notification.objects.get(event_id=a)
    assert (muted.cursor, muted.push_seq) == (2, None)
    assert Notification.objects.get(event_id=b).push_seq == 2
    assert Delivery.objects.get(notification=muted, method="websocket").status == "skipped"
    # B was not held for the GAP_WAIT (1 s) a missing predecessor would cost.
    assert b_arrived - b_emitted < 0.8, f"B arrived {b_arrived - b_emitted:.3f} s after it was emitted"
