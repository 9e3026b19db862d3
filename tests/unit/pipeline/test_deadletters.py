"""Dead letters: recording a failed delivery, replaying it once, and keeping its history when it fails again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from delivery.base import DeliveryResult
from pipeline import services
from pipeline.deadletters import dead_letter_record, dead_letters_select
from pipeline.management.commands.deadletters import parse_since
from pipeline.models import DeadLetter, Delivery, Event, Notification
from pipeline.publishing import dead_letters_replay

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery(users):
    event = Event.objects.create(
        event_type="critique.created",
        audience={"kind": "users", "user_ids": [users["bob"].pk]},
        occurred_at=timezone.now(),
        published_at=timezone.now(),
    )
    notification = Notification.objects.create(
        event=event,
        recipient=users["bob"],
        event_type=event.event_type,
        category="critiques",
        title="t",
        cursor=1,
        occurred_at=event.occurred_at,
    )
    return Delivery.objects.create(notification=notification, method="email", next_attempt_at=timezone.now())


def record(delivery, result, *, final=False, retry_in=7.0):
    return services.delivery_record(
        delivery=delivery, result=result, final=final, retry_in=retry_in, task_id="task-1", traceback="tb"
    )


def test_a_sent_delivery_is_recorded_and_makes_no_dead_letter(delivery):
    assert record(delivery, DeliveryResult.sent()) is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 1, "")
    assert delivery.sent_at is not None
    assert not DeadLetter.objects.exists()


def test_a_transient_failure_is_retried_with_its_next_attempt_time(delivery):
    before = timezone.now()
    assert record(delivery, DeliveryResult.retry("SMTP 451: try later"), retry_in=7.0) is True
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("retrying", 1, "SMTP 451: try later")
    assert before + timedelta(seconds=7) <= delivery.next_attempt_at <= timezone.now() + timedelta(seconds=7)
    assert delivery.claimed_by == ""
    assert not DeadLetter.objects.exists()


def test_a_permanent_failure_becomes_a_dead_letter_with_everything_needed_to_replay(delivery, users):
    assert record(delivery, DeliveryResult.failed("SMTP 550: no such user")) is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("failed", "permanent failure")
    letter = DeadLetter.objects.get()
    assert letter.kind == "delivery"
    assert letter.status == "dead"
    assert letter.task == "notiflow.deliveries_send"
    assert letter.args == ["email", [delivery.pk]]
    assert (letter.event_id, letter.recipient, letter.method) == (delivery.notification.event_id, users["bob"], "email")
    assert letter.delivery == delivery
    assert letter.attempts == 1
    assert letter.task_id == "task-1"
    assert letter.traceback == "tb"
    assert "SMTP 550: no such user" in letter.exception


def test_a_transient_failure_on_the_last_attempt_becomes_a_dead_letter(delivery):
    delivery.attempts = 7
    assert record(delivery, DeliveryResult.retry("timed out"), final=True) is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason, delivery.attempts) == ("dead", "gave up after 8 attempts", 8)
    assert DeadLetter.objects.get().attempts == 8


def test_replaying_twice_replays_once(delivery, django_capture_on_commit_callbacks):
    record(delivery, DeliveryResult.failed("550"))
    letter = DeadLetter.objects.get()

    with django_capture_on_commit_callbacks() as first_callbacks:
        first = dead_letters_replay(letters=[letter], replayed_by="tester")
    with django_capture_on_commit_callbacks() as second_callbacks:
        second = dead_letters_replay(letters=[letter], replayed_by="tester")

    assert (first.replayed, first.skipped) == ([letter.pk], [])
    assert (second.replayed, second.skipped) == ([], [letter.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("queued", "replayed")
    letter.refresh_from_db()
    assert (letter.status, letter.replayed_by) == ("replayed", "tester")
    assert letter.replayed_at is not None
    assert len(first_callbacks) == 1  # the publish of the replayed work
    assert len(second_callbacks) == 1  # registered, with nothing to publish


def test_work_that_fails_again_after_a_replay_is_a_new_dead_letter_with_its_history(delivery):
    record(delivery, DeliveryResult.failed("550 first"))
    first = DeadLetter.objects.get()
    dead_letters_replay(letters=[first])
    delivery.refresh_from_db()
    record(delivery, DeliveryResult.failed("550 again"))

    second = DeadLetter.objects.exclude(pk=first.pk).get()
    assert second.status == "dead"
    assert second.replay_of == first
    assert [d.pk for d in second.history()] == [second.pk, first.pk]
    assert list(dead_letters_select()) == [second]  # only the new one waits for an operator


def test_a_step_dead_letter_is_linked_to_the_replayed_step_of_the_same_arguments(delivery):
    args = [str(delivery.notification.event_id)]
    kwargs = {"task": "notiflow.events_drain", "exception": "TemplateDoesNotExist: x", "args": args}
    first = dead_letter_record(kind="step", event_id=delivery.notification.event_id, **kwargs)
    dead_letters_replay(letters=[first])
    second = dead_letter_record(kind="step", event_id=delivery.notification.event_id, **kwargs)
    assert second.replay_of == first


def test_select_filters_by_method_event_type_and_age(delivery):
    record(delivery, DeliveryResult.failed("550"))
    letter = DeadLetter.objects.get()
    assert list(dead_letters_select(method="email", event_type="critique.created")) == [letter]
    assert list(dead_letters_select(method="websocket")) == []
    assert list(dead_letters_select(event_type="announcement.posted")) == []
    assert list(dead_letters_select(since=timezone.now() + timedelta(minutes=1))) == []
    assert list(dead_letters_select(since=timezone.now() - timedelta(minutes=1))) == [letter]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", datetime(2026, 11, 21, 11, 58, 30, tzinfo=UTC)),
        ("30m", datetime(2026, 11, 21, 11, 30, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 14, 12, 0, tzinfo=UTC)),
        ("1w", datetime(2026, 11, 14, 12, 0, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T08:15:00", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T08:15:00+01:00", datetime(2026, 11, 20, 7, 15, tzinfo=UTC)),
    ],
)
def test_since_takes_an_age_or_an_iso_date(value, expected):
    assert parse_since(value, now=datetime(2026, 11, 21, 12, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize("value", ["yesterday", "5y", "-2h", ""])
def test_since_refuses_anything_else(value):
    with pytest.raises(CommandError, match="--since"):
        parse_since(value)


def test_the_command_lists_shows_and_replays(delivery, django_capture_on_commit_callbacks):
    record(delivery, DeliveryResult.failed("SMTP 550: no such user"))
    letter = DeadLetter.objects.get()

    out = StringIO()
    call_command("deadletters", "list", stdout=out)
    assert f"{letter.pk:>6}" in out.getvalue() and "SMTP 550: no such user" in out.getvalue()

    out = StringIO()
    call_command("deadletters", "show", str(letter.pk), stdout=out)
    assert "notiflow.deliveries_send" in out.getvalue()
    assert f'["email", [{delivery.pk}]]' in out.getvalue()

    with pytest.raises(CommandError, match="Say what to replay"):
        call_command("deadletters", "replay")
    with pytest.raises(CommandError, match="no dead letter 999999"):
        call_command("deadletters", "replay", "999999")

    out = StringIO()
    with django_capture_on_commit_callbacks():
        call_command("deadletters", "replay", "--method", "email", "--since", "1h", stdout=out)
    assert "Replayed 1 dead letter(s)." in out.getvalue()
    out = StringIO()
    call_command("deadletters", "replay", str(letter.pk), stdout=out)
    assert (
        "Replayed 0 dead letter(s)." in out.getvalue() and f"Skipped 1 already replayed: {letter.pk}" in out.getvalue()
    )
    out = StringIO()
    call_command("deadletters", "list", stdout=out)
    assert out.getvalue().strip() == "No dead letters."


def test_the_admin_replay_action_replays_the_selected_dead_letters(
    delivery, client, django_capture_on_commit_callbacks
):
    from django.contrib.auth import get_user_model

    record(delivery, DeliveryResult.failed("550"))
    letter = DeadLetter.objects.get()
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)

    with django_capture_on_commit_callbacks():
        response = client.post(
            "/admin/pipeline/deadletter/",
            {"action": "replay", "_selected_action": [letter.pk]},
            follow=True,
        )

    assert response.status_code == 200
    assert "Replayed 1 dead letter(s)." in response.content.decode()
    letter.refresh_from_db()
    assert (letter.status, letter.replayed_by) == ("replayed", "root (admin)")
    delivery.refresh_from_db()
    assert delivery.status == "queued"
