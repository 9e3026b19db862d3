from datetime import UTC, datetime

from pipeline.digests import window_closes_at


def test_hourly_window_closes_on_the_next_hour():
    now = datetime(2026, 11, 21, 14, 37, 5, tzinfo=UTC)
    assert window_closes_at(frequency="hourly", now=now) == datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def test_daily_window_closes_at_midnight_utc():
    now = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
    assert window_closes_at(frequency="daily", now=now) == datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def test_weekly_window_closes_at_monday_midnight():
    saturday = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert window_closes_at(frequency="weekly", now=saturday) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


def test_exactly_on_the_boundary_opens_the_next_window():
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    assert window_closes_at(frequency="hourly", now=now) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
