import smtplib

import pytest

from delivery.base import Outcome
from delivery.email import classify_smtp_error


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (smtplib.SMTPServerDisconnected("gone"), Outcome.RETRY),
        (ConnectionRefusedError(111, "refused"), Outcome.RETRY),
        (TimeoutError("slow"), Outcome.RETRY),
        (smtplib.SMTPResponseException(421, b"try later"), Outcome.RETRY),
        (smtplib.SMTPResponseException(554, b"rejected"), Outcome.FAILED),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no such user")}), Outcome.FAILED),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"mailbox busy")}), Outcome.RETRY),
        (ValueError("bad header"), Outcome.FAILED),
    ],
)
def test_smtp_failures_are_classified(exc, outcome):
    assert classify_smtp_error(exc).outcome is outcome
