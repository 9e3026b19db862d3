"""One socket's place in its user's push stream: which pushes it may send now, and which it must hold.

The pipeline numbers each recipient's notifications that go to sockets
(``Notification.push_seq``: 1, 2, 3, ... in cursor order, with no gaps;
notifications no socket is sent, such as those whose push a preference turns
off, get none) and every ``notify.push`` carries its number as ``seq``. A
socket sends push ``seq`` only right after ``seq - 1``: a push that comes
early (its predecessor was lost by the channel layer, dropped, or is late from
another worker) is held, and after ``NOTIFLOW["WEBSOCKET"]["GAP_WAIT"]``
seconds the consumer reads the missing ones from the database and sends them
first (:class:`PushStream` is the bookkeeping; the consumer does the I/O).
A notification is sent to a socket at most once: whatever has a number at or
below the stream's position, or a cursor at or below its cursor, was sent
already (by a push, the ``hello``, a resume or a gap fill).

The idea is TCP's: sequence numbers per stream, an out-of-order queue, and
retransmission from the sender's copy (here the database) after a timeout.
"""

from __future__ import annotations

from typing import Any


class PushStream:
    """The position ``(cursor, seq)`` up to which a socket has been sent its user's notifications, and the pushes
    it holds until the ones before them come.

    ``cursor`` is the highest cursor sent (or covered by the ``hello`` or a
    resume); ``seq`` the highest push stream number sent, every lower one
    included. Not thread-safe; the consumer serialises its calls.
    """

    def __init__(self, *, cursor: int = 0, seq: int = 0) -> None:
        self.cursor = cursor
        self.seq = seq
        self.held: dict[int, dict[str, Any]] = {}

    @property
    def waiting(self) -> bool:
        """Pushes are held for a missing predecessor."""
        return bool(self.held)

    def offer(self, notification: dict[str, Any], seq: int | None) -> list[dict[str, Any]]:
        """A push came: return the notifications to send now, in order (this one, and those it held that now
        follow on), or none if it was sent already or must wait for its predecessor.

        A push without ``seq`` (one from before push numbers, or a test's
        own) is not part of the stream: it is sent unless its cursor was.
        """
        cursor = notification.get("cursor")
        sent_already = isinstance(cursor, int) and cursor <= self.cursor
        if seq is None:
            return [] if sent_already else [notification]
        if sent_already or seq <= self.seq:
            return []
        self.held[seq] = notification
        return self.release()

    def missing(self) -> tuple[list[int], int]:
        """The numbers not come yet below the highest held push, and that push's cursor (the fill's bound);
        ``([], 0)`` when nothing is held."""
        if not self.held:
            return [], 0
        top = max(self.held)
        cursor = self.held[top].get("cursor")
        return [n for n in range(self.seq + 1, top) if n not in self.held], cursor if isinstance(cursor, int) else 0

    def advance(self, *, cursor: int, seq: int) -> list[dict[str, Any]]:
        """Everything up to ``(cursor, seq)`` was sent by other means (a resume, a gap fill): forget the held
        pushes it covers; return the held ones that now follow on."""
        self.cursor = max(self.cursor, cursor)
        self.seq = max(self.seq, seq)
        for number in [n for n in self.held if n <= self.seq]:
            del self.held[number]
        return self.release()

    def skip_gap(self) -> list[dict[str, Any]]:
        """Give up on the missing numbers below the first held push (they are not in the database: deleted)
        and return what follows on from it."""
        if self.held:
            self.seq = max(self.seq, min(self.held) - 1)
        return self.release()

    def release(self) -> list[dict[str, Any]]:
        """The held pushes that follow on from ``seq``, in order; the position moves past them."""
        out: list[dict[str, Any]] = []
        while self.seq + 1 in self.held:
            self.seq += 1
            notification = self.held.pop(self.seq)
            cursor = notification.get("cursor")
            if isinstance(cursor, int):
                self.cursor = max(self.cursor, cursor)
            out.append(notification)
        return out
