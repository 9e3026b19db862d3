"""The local SMTP server's handler (development, the demo, the tests, the benchmarks): a Maildir writer.

``python -m aiosmtpd -n -l 127.0.0.1:1025 -c webapp.mailsink.Maildir var/mail`` (the ``Procfile``'s
``smtp``). Each message is written as it was received (``envelope.original_content``, bytes) into
``<dir>/tmp/`` and renamed into ``<dir>/new/``, the delivery protocol of D. J. Bernstein's Maildir
(https://cr.yp.to/proto/maildir.html), so ``mailbox.Maildir`` and mail clients read it.

It stands in for a provider (an SMTP relay, SES), so it does as little as a provider's front door
on this machine: aiosmtpd's own ``Mailbox`` handler parses each message, flattens it again and
``fsync``s it, which halved the rate one pool process could send at (85 against 177 emails/s,
500 emails over one connection, measured 2026-11-22 on the 2-core development machine). A crash
of this process may lose the last messages it wrote; that is a property of this stand-in, not of
notiflow's delivery records.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

_sequence = itertools.count()


class PipeliningAnnounced:
    """An aiosmtpd handler mixin whose ``EHLO`` reply announces ``PIPELINING`` (RFC 2920), as providers' servers do.

    aiosmtpd reads one command line at a time from its buffer and answers
    each in order, which is all a pipelining client needs (``delivery.smtp``;
    ``tests/unit/delivery/test_smtp.py`` sends through it).
    """

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's ``EHLO`` hook: its own reply lines with ``250-PIPELINING`` before the last."""
        session.host_name = hostname  # what aiosmtpd does without a hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class Maildir(PipeliningAnnounced):
    """An aiosmtpd handler: ``handle_DATA`` stores the message in ``mail_dir`` and answers ``250``; ``EHLO``
    announces ``PIPELINING``."""

    def __init__(self, mail_dir: str | os.PathLike[str]) -> None:
        self.mail_dir = Path(mail_dir)
        for sub in ("tmp", "new", "cur"):
            (self.mail_dir / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(_sequence)}.{self.host}"
        temporary = self.mail_dir / "tmp" / name
        temporary.write_bytes(content)
        os.rename(temporary, self.mail_dir / "new" / name)
        return "250 Message accepted for delivery"

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> Maildir:
        """``-c webapp.mailsink.Maildir <dir>``: aiosmtpd's command line passes the folder."""
        if len(args) != 1:
            parser.error("webapp.mailsink.Maildir takes one argument: the Maildir folder")
        return cls(args[0])
