import random
import smtplib
from email import message_from_bytes, policy
from email.generator import BytesGenerator
from io import BytesIO

import pytest
from django.utils.html import escape

from delivery.base import Message, Outcome, Recipient
from delivery.email import EmailMethod, HeaderPolicy, classify_smtp_error, subject_encoded
from delivery.templates import text_render


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


# Markup characters and non-Latin text, in the event's data and in usernames (issue 10).
TRICKY = 'Tom & Jerry\'s "<b>bold</b>" Ωμέγα 漢字'
TRICKY_NAME = 'o\'neil<&>"Zoë"'


def tricky_message(template_dir: str = "notiflow/events/critique_created", context: dict | None = None) -> Message:
    """A message as the pipeline makes it: its title and body rendered from ``title.txt`` and ``body.txt``."""
    if context is None:
        context = {
            "data": {"artwork_title": TRICKY, "excerpt": TRICKY},
            "actor": {"id": 1, "username": TRICKY_NAME},
            "recipient": {"id": 2, "username": TRICKY_NAME},
        }
    return Message(
        delivery_id=1,
        notification_id=1,
        event_type="critique.created",
        category="critiques",
        recipient=Recipient(id=2, username=TRICKY_NAME, email="bob@example.com"),
        title=text_render(f"{template_dir}/title.txt", context).strip(),
        body=text_render(f"{template_dir}/body.txt", context).strip(),
        template_dir=template_dir,
        context=context,
    )


def test_subject_and_text_are_plain_text_and_only_the_html_is_escaped():
    email = EmailMethod(alias="email", options={}).build(tricky_message())

    assert email.subject == f"{TRICKY_NAME} critiqued your artwork “{TRICKY}”"
    assert email.body == f"{TRICKY_NAME} wrote: “{TRICKY}”\n"
    html = email.alternatives[0][0]
    assert escape(TRICKY) in html and escape(TRICKY_NAME) in html
    assert "<b>" not in html and TRICKY_NAME not in html
    # and on the wire: the subject survives RFC 2047 encoding, the text part its transfer encoding.
    parsed = message_from_bytes(email.message().as_bytes(), policy=policy.default)
    # (a long subject is folded before its first RFC 2047 word, which a reader decodes to one leading space)
    assert parsed["Subject"].strip() == email.subject
    assert parsed.get_body(preferencelist=("plain",)).get_content() == email.body


def test_a_subject_that_is_not_ascii_goes_as_base64_words_on_short_lines_and_reads_back_the_same():
    """Mostly ASCII, as most subjects are: UTF-8's default would pick quoted-printable, measured per prefix."""
    long = "Zoë critiqued your artwork “" + "a long title " * 12 + "Ωμέγα 漢字”"
    for subject in (long, "plain ASCII stays as it is", "alice critiqued your artwork “hotpath b-12”"):
        message = tricky_message()
        built = EmailMethod(alias="email", options={}).build(message)
        built.subject = subject

        raw = built.message().as_bytes()

        header = raw.split(b"\n\n", 1)[0].decode("ascii")
        lines = header.split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith("Subject:"))
        end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "\t")))
        words = " ".join(lines[start:end])  # the Subject header with its continuation lines
        assert all(len(line) <= 78 for line in lines)
        if subject.isascii():
            assert "=?" not in words and subject in words
        else:
            assert "=?utf-8?b?" in words and "?q?" not in words
        assert message_from_bytes(raw, policy=policy.default)["Subject"].strip() == subject
        assert built.subject == subject  # the attribute stays the text


def test_a_subject_is_written_in_the_bytes_django_and_compat32_would_write():
    """The subject skips Django's folding and compat32's formatter; the bytes must not change."""
    from django.core.mail import BadHeaderError
    from django.core.mail.message import forbid_multi_line_headers

    rnd = random.Random(7)
    alphabet = "abcdefghij klmnop;,.'\"&<>()“”…ΩμέγαΖοë漢字"
    method = EmailMethod(alias="email", options={})
    for _ in range(2000):
        subject = " ".join("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 200))).split()) or "x"
        built = method.build(tricky_message())
        built.subject = subject
        for linesep in ("\n", "\r\n"):
            raw = built.message().as_bytes(linesep=linesep)
            # what Django's message() sets, and compat32 writes
            value = forbid_multi_line_headers("Subject", subject_encoded(subject), "utf-8")[1]
            expected = policy.compat32.clone(linesep=linesep).fold_binary("Subject", value)
            start = raw.index(b"\nSubject: ") + 1
            end = raw.index(b"\nFrom: ", start) + 1
            assert raw[start:end] == expected, subject
    built.subject = "two\nlines"
    with pytest.raises(BadHeaderError):
        built.message()


def test_a_digest_subject_and_text_are_not_escaped():
    context = {"frequency": "daily", "count": 1, "items": [{"title": TRICKY}], "recipient": {"username": TRICKY_NAME}}
    message = tricky_message("notiflow/digest", context)
    subject, text, html = EmailMethod(alias="email", options={}).render(message)

    assert subject == "Your daily digest: 1 new notification"
    assert f"Hi {TRICKY_NAME}, here is what happened:" in text
    assert f"- {TRICKY}" in text
    assert html is not None and escape(TRICKY) in html and "<b>" not in html


def test_without_templates_of_its_own_an_email_is_the_title_and_body_as_stored_not_rendered_again():
    stored = Message(**{**tricky_message().__dict__, "title": "Stored   title\n", "body": "Stored body"})

    subject, text, html = EmailMethod(alias="email", options={}).render(stored)

    assert (subject, text) == ("Stored title", "Stored body\n")  # title.txt and body.txt would say otherwise
    assert html is not None and escape(TRICKY) in html  # body.html is the email's own: rendered


def test_an_email_subject_and_body_template_win_over_the_title_and_body_and_can_use_them():
    stored = Message(
        **{**tricky_message().__dict__, "template_dir": "notiflow/events/emailed", "title": "T & T", "body": "B"}
    )

    subject, text, html = EmailMethod(alias="email", options={}).render(stored)

    assert subject == f"[gallery] T & T from {TRICKY_NAME}"  # plain text: no escaping
    assert text == f"B\n\n-- sent to {TRICKY_NAME}\n"
    assert html is None  # no body.html in that folder


def test_an_email_template_that_exists_but_fails_is_a_template_error_not_a_fallback():
    from django.template import TemplateDoesNotExist

    broken = Message(**{**tricky_message().__dict__, "template_dir": "notiflow/events/emailed_broken"})

    with pytest.raises(TemplateDoesNotExist):
        EmailMethod(alias="email", options={}).render(broken)


def test_each_multipart_email_gets_its_own_boundary_and_both_parts_survive_it():
    method = EmailMethod(alias="email", options={})
    first, second = (method.build(tricky_message()).message() for _ in range(2))

    boundaries = {first.get_boundary(), second.get_boundary()}
    assert len(boundaries) == 2 and all(b.startswith("=_notiflow_") for b in boundaries)
    parsed = message_from_bytes(first.as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(preferencelist=("html",)).get_content().startswith("<p>Hi ")


def test_the_header_policy_writes_every_header_as_compat32_does():
    """Its shortcut (a value written as it is) must give compat32's bytes, folded or not, CRLF or LF."""
    rng = random.Random(8)
    values = ["", " ", "a", " lead", "trail ", "two  spaces", 'x; boundary="=_b"', "a@b.example, c@d.example"]
    values += ["".join(rng.choice('ab c;,  ="<>@.:\txyzé') for _ in range(rng.randint(0, 90))) for _ in range(3000)]
    for linesep in ("\n", "\r\n"):
        ours, theirs = HeaderPolicy(linesep=linesep), policy.compat32.clone(linesep=linesep)
        for name in ("Subject", "To", "Content-Type", "X-Long-Header-Name-For-Folding"):
            for value in values:
                assert ours.fold_binary(name, value) == theirs.fold_binary(name, value), (name, value)
                assert ours.fold(name, value) == theirs.fold(name, value)


def test_an_email_is_written_with_the_header_policy_and_gives_compat32s_bytes():
    message = EmailMethod(alias="email", options={}).build(tricky_message()).message()
    assert isinstance(message.policy, HeaderPolicy)

    written = message.as_bytes(linesep="\r\n")
    old = BytesIO()
    BytesGenerator(old, mangle_from_=False, policy=policy.compat32.clone(linesep="\r\n")).flatten(message)
    assert written == old.getvalue()
