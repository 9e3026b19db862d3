"""SMTP command pipelining (``delivery.smtp``) against a real aiosmtpd server, with and without PIPELINING."""

from __future__ import annotations

import contextlib
import mailbox
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.smtp import EmailBackend as DjangoEmailBackend
from django.core.mail.utils import DNS_NAME
from django.utils.translation import gettext_lazy

from delivery.base import Message, Outcome, Recipient
from delivery.email import EmailMethod
from delivery.smtp import EmailBackend, PipeliningSMTP, PipeliningSMTP_SSL
from webapp.mailsink import Maildir
from webapp.stack import free_port

MESSAGE = b"Subject: hello\r\n\r\nfirst line\r\n.a line that starts with a period\r\n..and two\r\nlast\r\n"


class Recorder(Maildir):
    """Our Maildir sink (PIPELINING announced when ``pipelining``), recording each transaction's envelope.

    It refuses as addresses ask: a sender ``refused@``; a recipient
    ``nobody@`` (550), ``busy@`` (421, closing); content holding ``REFUSE``
    (554). ``lying@`` is refused but kept, so ``DATA`` is accepted with no
    recipient the client knows of (a server RFC 2920 section 3.1 warns of).
    """

    def __init__(self, mail_dir: Any, *, pipelining: bool) -> None:
        super().__init__(mail_dir)
        self.pipelining = pipelining
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return lines if self.pipelining else [line for line in lines if line != "250-PIPELINING"]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("refused@"):
            return "550 sender refused"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 no such user"
        if address.startswith("busy@"):
            return "421 closing"  # and does not close (a server that says it and stays)
        if address.startswith("gone@"):  # the reply, then the connection dropped before any other is read
            server.transport.write(b"421 closing\r\n")
            server.transport.abort()
            return "421 closing"
        envelope.rcpt_tos.append(address)
        return "550 refused, kept all the same" if address.startswith("lying@") else "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        if b"REFUSE" in envelope.original_content:
            return "554 content refused"
        return await super().handle_DATA(server, session, envelope)


class Counting(PipeliningSMTP):
    """Counts the writes the client makes (one per ``send``)."""

    writes = 0

    def send(self, s: Any) -> None:
        self.writes += 1
        super().send(s)


@contextlib.contextmanager
def serving(mail_dir: Any, *, pipelining: bool) -> Iterator[tuple[Controller, Recorder]]:
    handler = Recorder(mail_dir, pipelining=pipelining)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def server(request: Any, tmp_path: Any) -> Iterator[tuple[Controller, Recorder]]:
    with serving(tmp_path / "mail", pipelining=request.param) as served:
        yield served


def connect(controller: Controller, cls: type[smtplib.SMTP] = Counting) -> Any:
    client = cls(controller.hostname, controller.port, timeout=10)
    client.ehlo()
    return client


def outcome(client: smtplib.SMTP, sender: str, recipients: list[str], message: bytes) -> Any:
    """What ``sendmail`` returned, or the exception it raised (type and arguments)."""
    try:
        return client.sendmail(sender, recipients, message)
    except smtplib.SMTPException as exc:
        return type(exc), exc.args


def test_an_email_goes_in_two_writes_with_pipelining_and_four_without_and_arrives_intact(server):
    controller, handler = server
    client = connect(controller)
    client.writes = 0

    refused = client.sendmail("alice@example.com", ["bob@example.com", "carol@example.com"], MESSAGE)

    assert refused == {}
    assert client.writes == (2 if handler.pipelining else 5)  # MAIL, 2 RCPT, DATA, content one by one
    assert handler.received == [("alice@example.com", ["bob@example.com", "carol@example.com"], MESSAGE)]
    client.quit()


SCENARIOS = {
    "sender refused": ("refused@example.com", ["bob@example.com"], MESSAGE),
    "one recipient refused": ("alice@example.com", ["nobody@example.com", "bob@example.com"], MESSAGE),
    "every recipient refused": ("alice@example.com", ["nobody@example.com", "nobody@example.org"], MESSAGE),
    "content refused": ("alice@example.com", ["bob@example.com"], MESSAGE + b"REFUSE\r\n"),
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_a_refusal_raises_or_returns_what_smtplib_does_and_the_next_email_still_goes(server, scenario):
    controller, handler = server
    sender, recipients, message = SCENARIOS[scenario]
    ours, theirs = connect(controller), connect(controller, smtplib.SMTP)

    expected = outcome(theirs, sender, recipients, message)
    got = outcome(ours, sender, recipients, message)

    assert got == expected
    assert isinstance(expected, dict) == (scenario == "one recipient refused")
    # the replies were all read: the same connection carries the next email, which arrives
    handler.received.clear()
    assert ours.sendmail("alice@example.com", ["bob@example.com"], MESSAGE) == {}
    assert handler.received == [("alice@example.com", ["bob@example.com"], MESSAGE)]
    ours.quit()
    theirs.quit()


@pytest.mark.parametrize("closing", ["busy@example.com", "gone@example.com"])
def test_a_421_closes_the_connection_as_smtplib_does(server, closing):
    controller, _ = server
    ours, theirs = connect(controller), connect(controller, smtplib.SMTP)
    recipients = ["bob@example.com", closing]

    assert outcome(ours, "alice@example.com", recipients, MESSAGE) == outcome(
        theirs, "alice@example.com", recipients, MESSAGE
    )
    assert ours.sock is None and theirs.sock is None


def test_data_accepted_with_no_recipient_left_is_ended_with_a_lone_period(tmp_path):
    """Only a pipelining client has sent DATA by then (smtplib stops when every RCPT is refused)."""
    with serving(tmp_path / "mail", pipelining=True) as (controller, handler):
        client = connect(controller)

        got = outcome(client, "alice@example.com", ["lying@example.com"], MESSAGE)

        assert got == (smtplib.SMTPRecipientsRefused, ({"lying@example.com": (550, b"refused, kept all the same")},))
        assert handler.received == [("alice@example.com", ["lying@example.com"], b"")]  # no content went
        assert client.sendmail("alice@example.com", ["bob@example.com"], MESSAGE) == {}
        assert handler.received[-1] == ("alice@example.com", ["bob@example.com"], MESSAGE)
        client.quit()


def test_a_line_break_in_an_option_is_refused_before_anything_is_sent(server):
    controller, handler = server
    client = connect(controller)
    client.writes = 0

    with pytest.raises(ValueError, match="newline"):
        client.sendmail("alice@example.com", ["bob@example.com"], MESSAGE, ["BODY=8BITMIME\r\nRCPT TO:<eve@x.org>"])
    with pytest.raises(ValueError, match="newline"):
        client.sendmail("alice@example.com", ["bob@example.com"], MESSAGE, (), ["NOTIFY=NEVER\r\nRSET"])
    assert client.writes == (0 if handler.pipelining else 1)  # smtplib sent MAIL before it met the bad RCPT
    assert handler.received == []


def test_djangos_backend_sends_through_the_pipelining_client(server, settings):
    controller, handler = server
    settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
    backend = get_connection("delivery.smtp.EmailBackend")
    assert isinstance(backend, EmailBackend)
    assert backend.connection_class is PipeliningSMTP
    assert EmailBackend(use_ssl=True).connection_class is PipeliningSMTP_SSL

    with backend:
        sent = backend.send_messages(
            [EmailMessage("hi", "body\n.dot\n", "alice@example.com", [f"u{i}@example.com"]) for i in range(3)]
        )
        assert isinstance(backend.connection, PipeliningSMTP)

    assert sent == 3
    assert [(r[1], b"\n.dot\n" in r[2].replace(b"\r\n", b"\n")) for r in handler.received] == [
        ([f"u{i}@example.com"], True) for i in range(3)
    ]


class Envelopes:
    """A connection that records what a backend hands to ``sendmail``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []

    def sendmail(self, from_addr: str, to_addrs: list[str], msg: bytes) -> dict[str, Any]:
        self.sent.append((from_addr, to_addrs, msg))
        return {}


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("notiflow <notifications@localhost>", "bob@example.com"),
        ("Zoë Ωμέγα <zoe@example.com>", "Björn <bjorn@exämple.org>"),
        ('"Name, with comma" <a@example.com>', "漢字 <kanji@example.jp>"),
        (gettext_lazy("lazy@example.com"), "bob@example.com"),
    ],
)
def test_the_backend_hands_smtp_the_addresses_djangos_backend_does(sender, recipient):
    ours, theirs = EmailBackend(), DjangoEmailBackend()
    for backend in (ours, theirs):
        backend.connection = Envelopes()
        email = EmailMessage("s", "b", sender, [recipient], headers={"Message-ID": "<fixed@example.com>"})
        email.extra_headers["Date"] = "Mon, 07 Dec 2026 10:00:00 -0000"
        assert backend._send(email) is True
        assert backend._send(email) is True  # the second time from what was remembered
    assert ours.connection.sent == theirs.connection.sent


def test_an_invalid_address_is_refused_as_django_refuses_it_every_time():
    backend = EmailBackend()
    backend.connection = Envelopes()
    for _ in range(2):
        with pytest.raises(ValueError, match="Invalid address"):
            backend._send(EmailMessage("s", "b", "alice@example.com", ["not an address <"]))
    assert backend.connection.sent == []


# -- EmailMethod.send: each email's envelope before the previous one's verdict --------------------------------


class Logged(PipeliningSMTP):
    """Logs, in order, each write (``W`` and its first word) and each reply read (``R`` and its code)."""

    log: list[str] = []

    def send(self, s: Any) -> None:
        data = s if isinstance(s, bytes) else s.encode()
        word = data.split(b" ", 1)[0].split(b"\r\n", 1)[0].decode(errors="replace").upper()
        self.log.append(f"W {word if word in ('EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'QUIT') else 'content'}")
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        code, reply = super().getreply()
        self.log.append(f"R {code}")
        return code, reply


class LoggedBackend(EmailBackend):
    """notiflow's backend on :class:`Logged` connections."""

    @property
    def connection_class(self) -> Any:
        return Logged


def email_message(n: int, address: str = "bob@example.com", excerpt: str = "lovely") -> Message:
    return Message(
        delivery_id=n,
        notification_id=n,
        event_type="critique.created",
        category="critiques",
        recipient=Recipient(id=2, username="bob", email=address),
        title=f"alice critiqued your artwork “artwork {n}”",  # title.txt and body.txt, as the pipeline renders them
        body=f"alice wrote: “{excerpt}”",
        template_dir="notiflow/events/critique_created",
        context={
            "data": {"artwork_title": f"artwork {n}", "excerpt": excerpt},
            "actor": {"id": 1, "username": "alice"},
            "recipient": {"id": 2, "username": "bob"},
        },
        key=f"delivery-{n}",
    )


@pytest.fixture
def email_method(server, settings):
    controller, handler = server
    settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
    Logged.log = []
    return EmailMethod(alias="email", options={"backend": f"{__name__}.LoggedBackend"}), handler


def stored(handler: Recorder) -> list[str]:
    """The Message-IDs in the Maildir, sorted."""
    return sorted(
        m["Message-ID"] for m in mailbox.Maildir(handler.mail_dir, factory=None, create=False) if m["Message-ID"]
    )


def test_each_envelope_goes_before_the_previous_verdict_is_read_and_every_email_arrives_whole(email_method):
    method, handler = email_method

    results = list(method.send([email_message(n) for n in range(3)]))

    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert [b"artwork %d" % n in content for n, (_, _, content) in enumerate(handler.received)] == [True] * 3
    assert stored(handler) == sorted(f"<notiflow.delivery-{n}@{DNS_NAME}>" for n in range(3))
    greeting, goodbye = ["R 220", "W EHLO", "R 250"], ["W QUIT", "R 221"]
    if handler.pipelining:
        # One write holds MAIL, RCPT and DATA; the next one goes right after a content, before its verdict.
        first = ["W MAIL", "R 250", "R 250", "R 354", "W content"]
        next_one = ["W MAIL", "R 250 (verdict on the one before)", "R 250", "R 250", "R 354", "W content"]
        expected = greeting + first + next_one * 2 + ["R 250"] + goodbye
        assert Logged.log == [entry.split(" (")[0] for entry in expected]
    else:  # smtplib's sendmail: a command, then its reply
        one = ["W MAIL", "R 250", "W RCPT", "R 250", "W DATA", "R 354", "W content", "R 250"]
        assert Logged.log == greeting + one * 3 + goodbye


def test_refusals_in_the_middle_of_a_batch_keep_each_result_in_its_place(email_method):
    method, handler = email_method
    batch = [
        email_message(0),
        email_message(1, address="nobody@example.com"),  # RCPT refused (550)
        email_message(2, excerpt="REFUSE"),  # content refused (554)
        email_message(3, address=""),  # no address: nothing sent
        email_message(4),
    ]

    results = list(method.send(batch))

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.FAILED, Outcome.FAILED, Outcome.FAILED, Outcome.SENT]
    assert "nobody@example.com" in results[1].reason and "554" in results[2].reason
    assert results[3].reason == "recipient has no email address"
    assert stored(handler) == [f"<notiflow.delivery-{n}@{DNS_NAME}>" for n in (0, 4)]


def test_a_connection_closed_in_the_middle_of_a_batch_leaves_the_rest_to_retry(email_method):
    method, handler = email_method

    results = list(method.send([email_message(0), email_message(1, address="gone@example.com"), email_message(2)]))

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.RETRY, Outcome.RETRY]
    assert stored(handler) == [f"<notiflow.delivery-0@{DNS_NAME}>"]


def test_a_caller_that_stops_after_a_result_sends_nothing_more(email_method):
    method, handler = email_method
    results = iter(method.send([email_message(n) for n in range(3)]))

    assert next(results).outcome is Outcome.SENT
    results.close()  # the caller stops (a claim lost, a stop signal)

    time.sleep(0.2)  # the server has had time to take anything that was on its way
    assert stored(handler) == [f"<notiflow.delivery-0@{DNS_NAME}>"]
    assert len(handler.received) == 1
    if handler.pipelining:  # the second envelope was written; dropping the connection discarded it
        assert Logged.log.count("W MAIL") == 2 and Logged.log.count("W content") == 1
        assert "W QUIT" not in Logged.log


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("a context value that cannot be printed")


def test_an_unexpected_error_building_an_email_comes_after_the_verdict_on_the_one_before(email_method):
    method, handler = email_method
    broken = email_message(1)
    broken = Message(**{**broken.__dict__, "context": {**broken.context, "data": {"artwork_title": Unprintable()}}})
    results = iter(method.send([email_message(0), broken, email_message(2)]))

    assert next(results).outcome is Outcome.SENT  # read before the error goes up to the caller
    with pytest.raises(RuntimeError, match="cannot be printed"):
        next(results)
    assert stored(handler) == [f"<notiflow.delivery-0@{DNS_NAME}>"]
