"""Django's SMTP email backend with command pipelining (RFC 2920) where the server offers it.

Python's ``smtplib`` sends each command of a mail transaction and waits for
its reply: ``MAIL``, ``RCPT`` (one per recipient), ``DATA``, then the content,
four round trips for an email to one recipient. A server that announces
``PIPELINING`` in its ``EHLO`` reply accepts the commands of a group in one
write and answers them in order (RFC 2920, section 3.1), so
:class:`PipeliningSMTP` sends ``MAIL``, every ``RCPT`` and ``DATA`` together
and the content after the ``354``: two round trips for any number of
recipients. Against a provider 20 ms away that is 40 ms per email instead of
80 on one connection. On the development machine's loopback, with the local
aiosmtpd server, ten rounds of 300 emails over one connection, each round
sent both ways: time per email 0.86 of ``smtplib``'s (median of the ten
ratios; 0.59 to 0.96), the sender's CPU 0.90, the server's 0.88
(2026-12-07).

The same section lets message content start a group, so the next email's
envelope may follow a content before its verdict is read: one round trip
per email on a connection that carries a batch, and the sender builds the
next email while the server takes the content before it. ``sendmail`` is
three steps for that (:meth:`PipeliningSMTP.mail_begin`, ``mail_transfer``,
``mail_finish``), which :class:`EmailBackend` offers as ``transaction_*``
and ``delivery.email.EmailMethod.send`` interleaves. Sending 1,000 of the
demo's emails to the local server over one connection, two rounds, twice:
1,074, 1,103, 1,095 and 992 emails/s against 805, 790, 757 and 757 with a
verdict awaited before the next envelope (2026-12-07, a throw-away script);
``python -m bench.emails`` measures this backend against Django's (1.55
times its emails/s, the sender's CPU per email 0.73 of it, 2026-12-07).

Every reply is read and checked, as the RFC requires of a pipelining
client: a refused sender or recipient, a refused ``DATA`` or content raise
what ``smtplib.SMTP.sendmail`` raises for them (``SMTPSenderRefused``,
``SMTPRecipientsRefused``, ``SMTPDataError``), after the transaction is
reset (``RSET``; not after a refused content, whose reply ends the
transaction), or the connection closed on a ``421``; a ``DATA``
accepted with no recipient left is ended with a lone ``.`` first (section
3.1). Without ``PIPELINING`` in the ``EHLO`` reply, or for a ``str``
message, it is ``smtplib``'s own ``sendmail``.

``EMAIL_BACKEND = "delivery.smtp.EmailBackend"`` (notiflow's default) uses
it; every setting of Django's SMTP backend applies (TLS, SSL, credentials,
time-out). No maintained synchronous client offers pipelining (Django and
``smtplib`` do not; ``slimta`` needs gevent), hence these few lines.
"""

from __future__ import annotations

import contextlib
import functools
import re
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as DjangoEmailBackend
from django.core.mail.message import sanitize_address

_CRLF = b"\r\n"
_LEADING_PERIOD = re.compile(rb"(?m)^\.")  # RFC 5321 section 4.5.2: a line starting with "." gets one more


def _command(cmd: str, args: str) -> str:
    """``cmd args`` with its CRLF; ``ValueError`` on a line break inside (``smtplib.SMTP.putcmd``'s check)."""
    line = f"{cmd} {args}"
    if "\r" in line or "\n" in line:
        raise ValueError(f"command and arguments contain prohibited newline characters: {line!r}")
    return f"{line}\r\n"


@dataclass
class Transaction:
    """One email between :meth:`PipeliningSMTP.mail_begin` and :meth:`PipeliningSMTP.mail_finish`.

    ``pipelined`` is False when the server does not offer ``PIPELINING``
    (or the message is ``str``): then the whole transaction is ``smtplib``'s
    ``sendmail``, run by ``mail_finish``.
    """

    from_addr: str
    recipients: list[str]
    msg: bytes | str
    mail_options: Sequence[str]
    rcpt_options: Sequence[str]
    pipelined: bool
    refused: dict[str, tuple[int, bytes]] = field(default_factory=dict)


class PipeliningSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` whose ``sendmail`` sends ``MAIL``, ``RCPT`` and ``DATA`` as one group when the server
    offers ``PIPELINING``, in three steps a caller may interleave with the next email's
    (:meth:`mail_begin`, :meth:`mail_transfer`, :meth:`mail_finish`)."""

    def sendmail(  # type: ignore[override]  # typeshed's overloads; the same signature as smtplib's
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: bytes | str,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        """Send ``msg`` (bytes, CRLF line ends) from ``from_addr`` to ``to_addrs``; as ``smtplib.SMTP.sendmail``.

        Returns the refused recipients, ``{address: (code, reply)}``, when at
        least one was accepted. Raises ``SMTPSenderRefused``,
        ``SMTPRecipientsRefused`` (every recipient refused, or a ``421``),
        ``SMTPDataError`` (``DATA`` or the content refused),
        ``SMTPServerDisconnected``, ``SMTPNotSupportedError`` (``SMTPUTF8``
        asked of a server without it), ``ValueError`` (a line break in an
        address or option).
        """
        transaction = self.mail_begin(from_addr, to_addrs, msg, mail_options, rcpt_options)
        self.mail_transfer(transaction)
        return self.mail_finish(transaction)

    def mail_begin(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: bytes | str,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Transaction:
        """Write the envelope (``MAIL``, every ``RCPT``, ``DATA``) in one group and return without reading a reply.

        The previous email's content may still await its reply: RFC 2920
        section 3.1 lets message content start a group, so ``mail_begin`` of
        the next email may come between :meth:`mail_transfer` and
        :meth:`mail_finish` of this one (the server answers in order). Raises
        ``SMTPServerDisconnected``, ``SMTPNotSupportedError``, ``ValueError``
        as :meth:`sendmail` does; nothing is written then.
        """
        self.ehlo_or_helo_if_needed()
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        pipelined = self.has_extn("pipelining") and not isinstance(msg, str) and bool(recipients)
        transaction = Transaction(from_addr, recipients, msg, mail_options, rcpt_options, pipelined)
        if not pipelined:
            return transaction
        mail = [f"size={len(msg)}"] if self.has_extn("size") else []
        mail += mail_options
        if any(option.lower() == "smtputf8" for option in mail_options):
            if not self.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            self.command_encoding = "utf-8"
        rcpt = "".join(f" {option}" for option in rcpt_options)
        group = [_command("mail", f"FROM:{smtplib.quoteaddr(from_addr)}{''.join(f' {o}' for o in mail)}")]
        group += [_command("rcpt", f"TO:{smtplib.quoteaddr(address)}{rcpt}") for address in recipients]
        group.append("data\r\n")
        self.send("".join(group))
        return transaction

    def mail_transfer(self, transaction: Transaction) -> None:
        """Read the envelope's replies and, when ``DATA`` got its ``354``, write the content and its final ``.``.

        Every earlier transaction must be finished (:meth:`mail_finish`): the
        replies are read in order. Raises what :meth:`sendmail` raises for a
        refused sender, recipients or ``DATA``, after resetting the
        transaction (``RSET``), or closing the connection on a ``421``.
        """
        if not transaction.pipelined:
            return
        self._connected()
        # Every reply of the group, in order. A 421 means the server is closing the connection: close it at
        # once and raise what smtplib raises for that command (the later replies will not come).
        mail_code, mail_reply = self.getreply()
        if mail_code == 421:
            self.close()
            raise smtplib.SMTPSenderRefused(mail_code, mail_reply, transaction.from_addr)
        refused = transaction.refused
        for address in transaction.recipients:
            code, reply = self.getreply()
            if code not in (250, 251):
                refused[address] = (code, reply)
            if code == 421:
                self.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        data_code, data_reply = self.getreply()
        if data_code == 421:
            self.close()
            raise smtplib.SMTPDataError(data_code, data_reply)
        if mail_code != 250 or len(refused) == len(transaction.recipients):
            if data_code == 354:  # DATA accepted all the same: end the empty message (RFC 2920 section 3.1)
                self.send(b"." + _CRLF)
                self.getreply()
            self._reset()
            if mail_code != 250:
                raise smtplib.SMTPSenderRefused(mail_code, mail_reply, transaction.from_addr)
            raise smtplib.SMTPRecipientsRefused(refused)
        if data_code != 354:
            self._reset()
            raise smtplib.SMTPDataError(data_code, data_reply)
        assert isinstance(transaction.msg, bytes)  # a str message is never pipelined
        content = _LEADING_PERIOD.sub(b"..", transaction.msg)
        if content[-2:] != _CRLF:
            content += _CRLF
        self.send(content + b"." + _CRLF)

    def mail_finish(self, transaction: Transaction) -> dict[str, tuple[int, bytes]]:
        """Read the server's verdict on the content; returns the refused recipients as :meth:`sendmail` does.

        Raises ``SMTPDataError`` if the content was refused (the connection
        closed on a ``421``), ``SMTPServerDisconnected`` if it was lost. No
        ``RSET`` follows a refusal: the reply to the content ends the
        transaction either way (RFC 5321 section 4.1.1.4), and the next
        email's envelope may be on its way already.
        """
        if not transaction.pipelined:
            return super().sendmail(
                transaction.from_addr,
                transaction.recipients,
                transaction.msg,
                transaction.mail_options,
                transaction.rcpt_options,
            )
        self._connected()
        code, reply = self.getreply()
        if code != 250:
            if code == 421:
                self.close()
            raise smtplib.SMTPDataError(code, reply)
        return transaction.refused

    def _connected(self) -> None:
        """Raise ``SMTPServerDisconnected`` if the connection was closed (after a ``421``): ``smtplib``'s
        ``getreply`` would fail on the missing socket with an ``AttributeError``."""
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("the connection was closed before this reply was read")

    def _reset(self) -> None:
        """Reset the transaction (``RSET``) after a refusal, as ``smtplib`` does; a closed connection is left."""
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            self.rset()


class PipeliningSMTP_SSL(PipeliningSMTP, smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` that pipelines each transaction's commands where the server offers it."""


@functools.lru_cache(maxsize=4096)
def address_sanitized(address: str | tuple[str, str], encoding: str) -> str:
    """Django's ``sanitize_address(address, encoding)``, remembered for the last 4,096 addresses.

    Django parses every address of every email with the email package's
    RFC 5322 parser: 9 % of the sending process's samples at full load
    (py-spy, 2026-12-07), the same sender address each time. Django's
    ``_send`` of an email to one of 50 recipients (the sanitising, the MIME
    message and its bytes, no network) took 0.39 ms of CPU, this backend's
    0.23 ms (1,000 emails, median of five rounds, 2026-12-07). Raises
    ``ValueError`` for an invalid address, as Django does (not remembered).
    """
    return str(sanitize_address(address, encoding))


class EmailBackend(DjangoEmailBackend):
    """Django's SMTP email backend, sending through :class:`PipeliningSMTP` (or its SSL form), with each
    address sanitised once (:func:`address_sanitized`)."""

    @property
    def connection_class(self) -> Any:
        return PipeliningSMTP_SSL if self.use_ssl else PipeliningSMTP

    def _send(self, email_message: EmailMessage) -> bool:
        """Django 5.2's ``_send``, with :func:`address_sanitized` for ``sanitize_address``."""
        if not email_message.recipients():
            return False
        connection: Any = self.connection  # opened by send_messages() before it calls this
        try:
            connection.sendmail(*self._envelope(email_message))
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True

    def transaction_begin(self, email_message: EmailMessage) -> Transaction:
        """Write ``email_message``'s envelope on the open connection (:meth:`PipeliningSMTP.mail_begin`).

        For :meth:`transaction_transfer` then :meth:`transaction_finish`;
        between the two, the next email's ``transaction_begin`` may go, so
        the server reads an envelope while the caller builds the email after
        it and no email waits a round trip for its own ``354``. Raises
        ``ValueError`` for an email with no recipient or an invalid address
        (before anything is written) and what ``mail_begin`` raises;
        ``fail_silently`` does not apply.
        """
        if not email_message.recipients():
            raise ValueError("the email has no recipient")
        connection: Any = self.connection
        return connection.mail_begin(*self._envelope(email_message))

    def transaction_transfer(self, transaction: Transaction) -> None:
        """The envelope's replies read and the content written (:meth:`PipeliningSMTP.mail_transfer`)."""
        connection: Any = self.connection
        connection.mail_transfer(transaction)

    def transaction_finish(self, transaction: Transaction) -> dict[str, tuple[int, bytes]]:
        """The server's verdict on the content (:meth:`PipeliningSMTP.mail_finish`): the refused recipients,
        or the exception raised."""
        connection: Any = self.connection
        return connection.mail_finish(transaction)

    def transaction_abandon(self) -> None:
        """Drop the connection without ``QUIT``: an envelope whose ``DATA`` may have been accepted is on it, and
        only a lost connection discards it unsent (a lone ``.`` would send an empty email)."""
        connection: Any = self.connection
        if connection is not None:
            connection.close()
        self.connection = None

    def _envelope(self, email_message: EmailMessage) -> tuple[str, list[str], bytes]:
        """``(sender, recipients, message bytes with CRLF line ends)`` as Django's ``_send`` hands them to
        ``sendmail``, the addresses sanitised by :func:`address_sanitized`."""
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        from_email = address_sanitized(_hashable(email_message.from_email), encoding)
        recipients = [address_sanitized(_hashable(a), encoding) for a in email_message.recipients()]
        return from_email, recipients, email_message.message().as_bytes(linesep="\r\n")


def _hashable(address: Any) -> str | tuple[str, str]:
    """An address as Django takes it (a ``(name, address)`` pair, or text, lazy text included), hashable."""
    return (str(address[0]), str(address[1])) if isinstance(address, tuple) else str(address)
