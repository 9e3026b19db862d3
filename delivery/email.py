"""The ``email`` delivery method: Django's email framework, templates per event type.

For a message whose ``template_dir`` is ``D`` the subject is ``D/email_subject.txt``
rendered, else the message's title; the text is ``D/email_body.txt`` rendered,
else the message's body; ``D/body.html``, when present, is the HTML
alternative. A message's title and body are ``D/title.txt`` and ``D/body.txt``
as the pipeline rendered them for its recipient (stored with the notification,
the title cut at 255 characters), so an email without templates of its own
renders one template, not three: rendering the subject and text again cost a
tenth of the email sender's CPU per email. One SMTP connection serves
the whole batch; through notiflow's backend (``delivery.smtp``) the emails
overlap, each envelope written before the verdict on the email before it.

Failures are classified as RFC 5321 does: a 4xx reply, a refused or dropped
connection, or a time-out is transient (retry); a 5xx reply, a recipient
with no address, or a template that does not render is permanent.
"""

from __future__ import annotations

import contextlib
import email.charset
import email.header
import smtplib
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from email.policy import Compat32
from typing import Any

from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.utils import DNS_NAME
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader import render_to_string

from delivery.base import DeliveryMethod, DeliveryResult, Message
from delivery.smtp import EmailBackend, Transaction
from delivery.templates import text_render_optional

_TRANSIENT_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, socket.timeout, ConnectionError, OSError)


#: RFC 2047 encoded words for a subject that is not ASCII: base64 ("B"), whose length Python computes in
#: constant time, where UTF-8's default (the shorter of base64 and quoted-printable) makes
#: ``email.charset.Charset.header_encode_lines`` measure the quoted-printable form of every prefix of the
#: subject, one Python generator step per byte.
_SUBJECT_CHARSET = email.charset.Charset("utf-8")
_SUBJECT_CHARSET.header_encoding = email.charset.BASE64


class EncodedWords(str):
    """A ``Subject`` value of RFC 2047 encoded words separated by two spaces (:func:`subject_encoded`'s), which
    :class:`HeaderPolicy` writes one word per line: what ``compat32`` makes of it, without its formatter."""


def subject_encoded(subject: str) -> str:
    """``subject`` as a header value: as it is if ASCII, else RFC 2047 base64 encoded words of UTF-8
    (:class:`EncodedWords`), the first at most 67 characters and the others 75, so that each fits on a
    line of 78 after ``Subject:`` or a continuation's indent; separated by two spaces (a reader joins them
    back: RFC 2047 section 6.2), so the value has no line break for Django to refuse."""
    if subject.isascii():
        return subject
    return EncodedWords(email.header.Header(subject, _SUBJECT_CHARSET, header_name="Subject").encode(linesep=" "))


class HeaderPolicy(Compat32):
    """Python's ``compat32`` email policy (Django's), writing a header that needs no folding or encoding as it is.

    ``compat32`` passes every header through an ``email.header.Header`` and
    its line-folding formatter, a few dozen Python calls per header, thirteen
    headers per email. Building and writing one of the demo's emails took
    0.56 ms of CPU with ``compat32`` and 0.46 ms with this policy (1,000
    emails, five rounds each, 2026-12-07). A value
    that is printable ASCII (no line break, no tab, no control character)
    and fits on one line with its name (``max_line_length``, 78) comes out of
    that formatter unchanged, so it is written directly; any other value
    goes through ``compat32``. Same bytes for every header: compared on
    200,000 random ASCII values with spaces at either end, ``;``, ``,``,
    quotes and runs of spaces. An :class:`EncodedWords` subject is written a
    word per line, as ``compat32`` writes it (same bytes for 20,000 random
    subjects of 1 to 200 characters, ASCII and not; a test compares more).
    """

    def fits(self, name: str, value: Any) -> bool:
        """Whether ``value`` is written as it is: printable ASCII text that fits on one line after ``name: ``."""
        return (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and (not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length)
        )

    def _unfolded(self, name: str, value: Any) -> str | None:
        if isinstance(value, EncodedWords) and self.max_line_length:
            return f"{name}: {value.replace('  ', self.linesep + '  ')}{self.linesep}"
        if self.fits(name, value):
            return f"{name}: {value}{self.linesep}"
        return None

    def fold(self, name: str, value: Any) -> str:
        unfolded = self._unfolded(name, value)
        return super().fold(name, value) if unfolded is None else unfolded

    def fold_binary(self, name: str, value: Any) -> bytes:
        unfolded = self._unfolded(name, value)
        return super().fold_binary(name, value) if unfolded is None else unfolded.encode("ascii")


_HEADER_POLICY = HeaderPolicy()


class _Email(EmailMultiAlternatives):
    """Django's email with a cheaper subject and the MIME boundary set before the message is written.

    A subject that is not ASCII is encoded by :func:`subject_encoded`
    (``email.subject`` stays the text): Django's encoding of it as UTF-8
    cost 3-12 % of the sending process's CPU per email with the demo's
    subject (“…” quotes; 400 emails to the local SMTP server, three rounds:
    1.38 → 1.21, 1.01 → 0.93, 1.09 → 1.06 ms, 2026-12-07). That value, or
    an ASCII subject that fits on one line, is set on the message after
    Django has built it: Django passes every subject through
    ``email.header.Header`` to fold it, and ``compat32`` then folds it again
    when it is written (together 10 to 13 % of the email sender's Python
    CPU, py-spy ``--gil``, 2026-12-07); :class:`HeaderPolicy` writes it in
    the same bytes without either. Newlines are refused as Django refuses
    them (``BadHeaderError``). A longer ASCII subject goes Django's way.
    Without a boundary, Python's generator makes one per
    message and compiles a regular expression from it to look for it in the
    parts (``email.generator.Generator._make_boundary``): about a tenth of
    the CPU per email (1.36-1.38 ms each against 1.44-1.63 ms, 2026-12-07).
    The boundary here holds 128 random bits (``uuid4``), which no part can
    hold unless it was written after this one was drawn. The message is
    written with :class:`HeaderPolicy`.
    """

    def message(self) -> Any:
        subject = str(self.subject)
        if "\n" in subject or "\r" in subject:
            raise BadHeaderError(f"Header values can't contain newlines (got {subject!r} for header 'Subject')")
        value = subject_encoded(subject)
        direct = isinstance(value, EncodedWords) or _HEADER_POLICY.fits("Subject", value)
        kept, self.subject = self.subject, "" if direct else value
        try:
            msg = super().message()
        finally:
            self.subject = kept
        if direct:
            msg.replace_header("Subject", value)  # written by the policy as it is, or a word per line
        if msg.is_multipart():
            msg.set_boundary(f"=_notiflow_{uuid.uuid4().hex}")
        msg.policy = _HEADER_POLICY  # the generator writes the parts' headers with the root's policy
        return msg


def classify_smtp_error(exc: BaseException) -> DeliveryResult:
    """Map an exception raised while sending to RETRY (transient) or FAILED (permanent)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return DeliveryResult.failed(f"recipient refused: {exc.recipients}")
        return DeliveryResult.retry(f"recipient deferred: {exc.recipients}")
    if isinstance(exc, smtplib.SMTPResponseException):
        if 500 <= exc.smtp_code < 600:
            return DeliveryResult.failed(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        return DeliveryResult.retry(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    if isinstance(exc, _TRANSIENT_ERRORS):
        return DeliveryResult.retry(f"{type(exc).__name__}: {exc}")
    return DeliveryResult.failed(f"{type(exc).__name__}: {exc}")


class EmailMethod(DeliveryMethod):
    """Send each message as one multipart email.

    OPTIONS: ``from_email`` (default ``settings.DEFAULT_FROM_EMAIL``),
    ``backend`` (a Django email backend path; default ``settings.EMAIL_BACKEND``).
    """

    key = "email"
    supports_digest = True

    def render(self, message: Message) -> tuple[str, str, str | None]:
        """``(subject, text, html or None)``: the subject and text unescaped (plain text), the HTML escaped by
        Django's autoescaping. Without ``email_subject.txt`` the subject is ``message.title``, without
        ``email_body.txt`` the text is ``message.body``; the subject on one line, whitespace runs as one
        space. Raises Django template errors."""
        d = message.template_dir
        context: dict[str, Any] = {**message.context, "title": message.title, "body": message.body}
        subject = text_render_optional(f"{d}/email_subject.txt", context)
        text = text_render_optional(f"{d}/email_body.txt", context)
        if subject is None:
            subject = message.title  # title.txt as the pipeline rendered it for this recipient
        if text is None:
            text = message.body  # body.txt, the same
        try:
            html: str | None = render_to_string(f"{d}/body.html", context)
        except TemplateDoesNotExist:
            html = None
        return " ".join(subject.split()), text.strip() + "\n", html

    def build(self, message: Message) -> EmailMultiAlternatives:
        """The email of one message; raises Django template errors. Its ``Message-ID`` derives from
        ``message.key``, so a resend after a crash is recognisable as the same email (RFC 1047)."""
        subject, text, html = self.render(message)
        headers = {"Message-ID": f"<notiflow.{message.key}@{DNS_NAME}>"} if message.key else {}
        email = _Email(
            subject=subject,
            body=text,
            from_email=self.options.get("from_email"),
            to=[message.recipient.email],
            headers=headers,
        )
        if html is not None:
            email.attach_alternative(html, "text/html")
        return email

    def send(self, batch: Sequence[Message]) -> Iterator[DeliveryResult]:
        """Yield each message's result, in order, once the SMTP server has answered for it.

        One connection serves the batch; if it cannot be opened, every
        message that has an address and renders gets that failure's outcome.
        Through notiflow's backend (:class:`delivery.smtp.EmailBackend`) the
        emails overlap: the envelope of the next one is written before the
        verdict on this one is read, and it is built while the server takes
        this one's content. Its content goes only when the caller asks for
        its result, so a caller that stops after a result has sent nothing
        more (the connection is then dropped, which discards the envelope).
        """
        connection: Any = None
        connection_error: DeliveryResult | None = None
        in_flight: Transaction | None = None  # an email whose content is written and whose verdict is unread
        begun: Transaction | None = None  # an email whose envelope is written and whose content is not
        try:
            for message in batch:
                error: Exception | None = None
                try:
                    result, email = self._prepared(message)
                except Exception as exc:  # noqa: BLE001 - re-raised below, once the email before has its verdict
                    result, email, error = None, None, exc  # not this message's failure: the batch stops
                if email is not None and connection is None and connection_error is None:
                    connection, connection_error = self._connected()
                if email is not None and connection_error is not None:
                    result = connection_error
                elif email is not None and isinstance(connection, EmailBackend):
                    try:
                        begun = connection.transaction_begin(email)
                    except Exception as exc:  # noqa: BLE001 - classified per message
                        result = classify_smtp_error(exc)
                if in_flight is not None:
                    transaction, in_flight = in_flight, None
                    yield _verdict(connection.transaction_finish, transaction)
                if error is not None:
                    raise error
                if result is not None:
                    yield result
                elif begun is None:  # a backend that sends one email at a time
                    assert email is not None  # set whenever result is not
                    email.connection = connection
                    yield _verdict(email.send)
                else:
                    transaction, begun = begun, None
                    try:
                        connection.transaction_transfer(transaction)
                    except Exception as exc:  # noqa: BLE001 - classified per message
                        yield classify_smtp_error(exc)
                    else:
                        in_flight = transaction
            if in_flight is not None:
                transaction, in_flight = in_flight, None
                yield _verdict(connection.transaction_finish, transaction)
        finally:
            if connection is not None:
                if begun is not None or in_flight is not None:
                    connection.transaction_abandon()  # stopped early: send nothing more
                # The messages' results are known already; a failed QUIT changes none of them.
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    connection.close()

    def _prepared(self, message: Message) -> tuple[DeliveryResult | None, EmailMultiAlternatives | None]:
        """``(None, email)``, or ``(failure, None)`` for a recipient with no address or a template that fails."""
        if not message.recipient.email:
            return DeliveryResult.failed("recipient has no email address"), None
        try:
            return None, self.build(message)
        except (TemplateDoesNotExist, TemplateSyntaxError) as exc:
            return DeliveryResult.failed(f"template error: {exc}"), None

    def _connected(self) -> tuple[Any, DeliveryResult | None]:
        """``(open connection, None)`` of the configured backend, or ``(None, the failure classified)``."""
        connection = get_connection(self.options.get("backend"), fail_silently=False)
        try:
            connection.open()
        except Exception as exc:  # noqa: BLE001 - classified, never swallowed
            return None, classify_smtp_error(exc)
        return connection, None


def _verdict(call: Callable[..., Any], *args: Any) -> DeliveryResult:
    """``sent`` if ``call(*args)`` returns, else its exception classified (:func:`classify_smtp_error`)."""
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001 - classified per message
        return classify_smtp_error(exc)
    return DeliveryResult.sent()
