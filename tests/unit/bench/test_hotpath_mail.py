"""The benchmark's own reading of the emails it waits for (``bench.hotpath.subject_read``), and where its SMTP
server keeps them (``bench.hotpath.bench_mail_dir``)."""

from email import message_from_bytes, policy
from pathlib import Path

import pytest

from bench.hotpath import SUBJECT_TAG, bench_mail_dir, subject_read
from delivery.base import Message, Recipient
from delivery.email import EmailMethod


def built(subject: str) -> bytes:
    message = Message(
        delivery_id=1,
        notification_id=1,
        event_type="critique.created",
        category="critiques",
        recipient=Recipient(id=2, username="bob", email="bob@example.com"),
        title="alice critiqued your artwork “t”",  # title.txt and body.txt, as the pipeline renders them
        body="alice wrote: “Subject: not this”",
        template_dir="notiflow/events/critique_created",
        context={"actor": {"username": "alice"}, "data": {"artwork_title": "t", "excerpt": "Subject: not this"}},
        key="delivery-1",
    )
    email = EmailMethod(alias="email", options={}).build(message)
    email.subject = subject
    return email.message().as_bytes()


@pytest.mark.parametrize(
    "subject",
    [
        "alice critiqued your artwork “hotpath b-12”",  # non-ASCII: RFC 2047 words on two folded lines
        "plain ASCII subject hotpath c-7",
        "Zoë critiqued your artwork “" + "a long title " * 12 + "Ωμέγα 漢字 hotpath d-3”",
    ],
)
def test_the_subject_reads_as_the_email_parser_reads_it_with_lf_or_crlf_line_ends(subject):
    raw = built(subject)
    for form in (raw, raw.replace(b"\n", b"\r\n")):
        expected = str(message_from_bytes(form, policy=policy.default)["Subject"]).strip()

        assert subject_read(form).strip() == expected == subject
        assert SUBJECT_TAG.search(subject_read(form)).group(1) == SUBJECT_TAG.search(subject).group(1)


def test_a_subject_line_in_the_body_is_not_read_and_no_subject_reads_empty():
    assert subject_read(b"From: a@example.com\n\nSubject: in the body\n") == ""
    assert subject_read(b"From: a@example.com\r\nsubject: lower case\r\n\r\nbody") == "lower case"


def test_each_benchmark_folder_gets_its_own_maildir_in_memory_when_there_is_dev_shm(tmp_path):
    first, second = bench_mail_dir(tmp_path / "a" / "hotpath-sqlite"), bench_mail_dir(tmp_path / "b" / "hotpath-sqlite")
    assert first != second
    if Path("/dev/shm").is_dir():
        assert first.parent == Path("/dev/shm") and first.name.startswith("notiflow-hotpath-sqlite-")
