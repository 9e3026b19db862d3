"""The scenario ``make demo`` plays on a running stack (see ``webapp.stack``).

It seeds the demo world, connects real WebSocket clients for bob, alice and
carol, emits events through the gallery services (which call
``emit_event()``), waits for every expected push, email and digest, and
prints a table. Returns 0 only if everything expected arrived and nothing
unexpected did.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from django.utils import timezone

from pipeline import publishing
from pipeline.models import Delivery, DigestEntry, Notification
from webapp.gallery import services
from webapp.gallery.seed import MODERATORS, demo_seed
from webapp.realtime.client import Listener, ListenerGroup
from webapp.stack import wait_for
from webapp.tokens import token_issue

CONNECTED = ("bob", "alice", "carol")
WAIT = 30.0  # seconds to wait for each step's deliveries


@dataclass
class Step:
    label: str
    event_ids: list[uuid.UUID]
    emitted_at: dict[uuid.UUID, float]
    pushes: dict[str, int]  # expected pushes per connected client
    emails_to: list[str]  # expected immediate emails (recipient usernames)
    notes: list[str] = field(default_factory=list)


def _email_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


def play(stack: Any) -> int:
    world = demo_seed()
    users, artworks = world["users"], world["artworks"]
    listeners = {
        name: Listener(
            name=name, url=f"{stack.ws_url}/ws/notifications/", token=token_issue(user_id=users[name].pk, ttl=600)
        )
        for name in CONNECTED
    }
    group = ListenerGroup(list(listeners.values()))
    group.start()
    missing: list[str] = []
    steps: list[Step] = []

    def pushes_for(step: Step, name: str) -> list[tuple[float, dict[str, Any]]]:
        ids = {str(e) for e in step.event_ids}
        return [(t, n) for t, n in listeners[name].notifications() if n.get("event_id") in ids]

    def emit(label: str, pushes: dict[str, int], emails_to: list[str], *calls: Callable[[], uuid.UUID]) -> Step:
        step = Step(label=label, event_ids=[], emitted_at={}, pushes=pushes, emails_to=emails_to)
        for call in calls:
            started = time.time()
            event_id = call()
            step.event_ids.append(event_id)
            step.emitted_at[event_id] = started
        steps.append(step)
        # One step at a time, so each latency is the pipeline's, not a queue of our own making.
        wait_for(lambda: all(len(pushes_for(step, n)) >= want for n, want in pushes.items()), timeout=WAIT)
        return step

    def emails_now() -> list[EmailMessage]:
        return stack.emails()

    posted: dict[str, Any] = {}

    def critique_bobs_artwork() -> uuid.UUID:
        posted["critique"], event_id = services.critique_create(
            author=users["alice"], artwork=artworks["bob"], text="The reflections on the water are superb."
        )
        return event_id

    try:
        emit(
            "alice critiques bob's artwork",
            {"bob": 1},
            ["bob"],
            critique_bobs_artwork,
        )
        emit(
            "carol marks alice's critique helpful",
            {"alice": 1},
            ["alice"],
            lambda: services.critique_mark_helpful(critique=posted["critique"], by=users["carol"]),
        )
        emit(
            "five people like bob's artwork",
            {"bob": 5},
            [],
            *[
                (lambda n=n: services.like_create(user=users[n], artwork=artworks["bob"])[1])
                for n in ("alice", "carol", "dave", "erin", "frank")
            ],
        )
        emit(
            "alice critiques dave's artwork (dave: email off)",
            {},
            [],
            lambda: services.critique_create(author=users["alice"], artwork=artworks["dave"], text="Lovely light.")[1],
        )
        emit(
            "admin announces to moderators",
            {"carol": 1},
            [],
            lambda: services.announcement_publish(author=users["admin"], text="Queue review at 5pm.", role=MODERATORS),
        )
        emit(
            "admin announces to everyone",
            {"bob": 1, "alice": 1, "carol": 1},
            [],
            lambda: services.announcement_publish(author=users["admin"], text="New gallery opens Monday."),
        )

        expected_pushes = {name: sum(s.pushes.get(name, 0) for s in steps) for name in CONNECTED}
        expected_emails = sum(len(s.emails_to) for s in steps)
        wait_for(
            lambda: all(len(listeners[n].notifications()) >= expected_pushes[n] for n in CONNECTED)
            and len(emails_now()) >= expected_emails,
            timeout=WAIT,
        )
        # Every websocket delivery is recorded before we look for strays.
        wait_for(lambda: not Delivery.objects.filter(method="websocket", status="queued").exists(), timeout=WAIT)
        time.sleep(0.5)

        # Digest: five like emails wait in bob's hourly window; close it as celery beat would.
        like_ids = steps[2].event_ids
        in_window = lambda: DigestEntry.objects.filter(delivery__notification__event_id__in=like_ids).count()  # noqa: E731
        wait_for(lambda: in_window() == 5, timeout=WAIT)
        immediate_like_emails = [m for m in emails_now() if "liked" in (m["Subject"] or "")]
        publishing.task_send(
            task="notiflow.digests_flush_due",
            kwargs={"as_of": (timezone.now() + timedelta(hours=1, seconds=1)).isoformat()},
        )
        wait_for(lambda: any("digest" in (m["Subject"] or "") for m in emails_now()), timeout=WAIT)
        time.sleep(1.0)  # a second digest, if one were sent by mistake, would arrive here
        emails = emails_now()
    finally:
        group.stop()

    digests = [m for m in emails if "digest" in (m["Subject"] or "")]
    immediate = [m for m in emails if m not in digests]

    # ---- checks -----------------------------------------------------------------
    latencies: list[float] = []
    rows = []
    for step in steps:
        for name in CONNECTED:
            got = pushes_for(step, name)
            want = step.pushes.get(name, 0)
            if len(got) != want:
                missing.append(f"{step.label}: {name} received {len(got)} push(es), expected {want}")
            for arrived, payload in got:
                latencies.append((arrived - step.emitted_at[uuid.UUID(payload["event_id"])]) * 1000)
        stored = Notification.objects.filter(event_id__in=step.event_ids).select_related("event", "recipient")
        step_emails = [
            m for m in immediate if any(m["To"] == users[u].email for u in step.emails_to) and _matches(step, m)
        ]
        if len(step_emails) != len(step.emails_to):
            missing.append(
                f"{step.label}: {len(step_emails)} email(s) to {step.emails_to}, expected {len(step.emails_to)}"
            )
        for n in stored:
            if n.event.actor_id == n.recipient_id:
                missing.append(f"{step.label}: the actor {n.recipient} was notified of their own action")
        rows.append(
            (
                step.label,
                stored.count(),
                ", ".join(f"{n}:{len(pushes_for(step, n))}" for n in CONNECTED),
                "; ".join(str(m["Subject"]).strip() for m in step_emails) or "-",
            )
        )
    if immediate_like_emails:
        missing.append(f"bob received {len(immediate_like_emails)} immediate like email(s); expected 0 (hourly digest)")
    dave = Delivery.objects.filter(notification__recipient=users["dave"], notification__event_id__in=steps[3].event_ids)
    if not dave.filter(method="email", status="skipped").exists():
        missing.append("dave's critique email delivery is not 'skipped'")
    if not Notification.objects.filter(recipient=users["dave"], event_id__in=steps[3].event_ids).exists():
        missing.append("dave has no in-app notification for the critique")
    if any(m["To"] == users["dave"].email for m in emails):
        missing.append("dave received an email although email is off for critiques")
    if len(digests) != 1:
        missing.append(f"bob received {len(digests)} digest email(s), expected 1")
    digest_text = _email_text(digests[0]) if digests else ""
    if digests and digest_text.count("liked") != 5:
        missing.append(f"the digest lists {digest_text.count('liked')} likes, expected 5")
    unexpected = len(immediate) - sum(len(s.emails_to) for s in steps)
    if unexpected > 0:
        missing.append(f"{unexpected} unexpected email(s): {[m['Subject'] for m in immediate]}")

    _print_table(rows, digests, digest_text, latencies)
    if missing:
        print("\nMISSING OR WRONG:")
        for line in missing:
            print(f"  - {line}")
        return 1
    print("\nEvery expected delivery arrived.")
    return 0


def _matches(step: Step, message: EmailMessage) -> bool:
    subject = str(message["Subject"] or "")
    return ("critiqued" in subject and "critiques" in step.label) or ("helpful" in subject and "helpful" in step.label)


def _print_table(
    rows: list[tuple[str, int, str, str]], digests: list[EmailMessage], text: str, lat: list[float]
) -> None:
    widths = [max(len(str(r[i])) for r in [("event", "stored", "pushes", "emails (subject)"), *rows]) for i in range(4)]
    header = ("event", "stored", "pushes", "emails (subject)")
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\nDigest emails:", len(digests))
    for message in digests:
        print(f"  To {message['To']}: {message['Subject']}")
        for item in text.strip().splitlines():
            print(f"    {item}")
    if lat:
        print(
            f"\nemit → push latency over {len(lat)} pushes: p50 {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms"
        )
