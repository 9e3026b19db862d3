from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import after_task_publish
from django.contrib.auth import get_user_model

from tests.environment import STACK, VAR_DIR, postgres_sessions_end
from webapp.stack import Stack


@pytest.fixture(scope="session")
def stack(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Stack]:
    """Real Redis, SMTP (aiosmtpd), ASGI server (daphne), Celery worker and celery beat, sharing the test database.

    Each process runs under its own honcho, so fault-injection tests can stop, kill and restart one.
    """
    STACK.start(log_to=VAR_DIR / "stack.log", separately=True)
    try:
        STACK.wait_ready(timeout=120)
        yield STACK
    finally:
        STACK.stop()
        postgres_sessions_end()  # PostgreSQL: none may be left when pytest-django drops the test database


@pytest.fixture
def clean_mail(stack: Stack) -> Stack:
    """The stack, with the SMTP server's Maildir emptied."""
    for f in stack.mail_dir.glob("*/*"):
        f.unlink()
    return stack


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Every task message this process publishes to the broker while the test runs: ``[{"task", "queue"}]``."""
    seen: list[dict[str, Any]] = []

    def record(sender: str | None = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        seen.append({"task": sender, "queue": kwargs.get("routing_key")})

    after_task_publish.connect(record, weak=False)
    yield seen
    after_task_publish.disconnect(record)  # type: ignore[attr-defined]  # missing from celery-types 0.23


@pytest.fixture
def users(db: Any) -> dict[str, Any]:
    User = get_user_model()
    return {
        name: User.objects.create_user(username=name, email=f"{name}@example.com", password="pw")
        for name in ("alice", "bob", "carol", "dave")
    }
