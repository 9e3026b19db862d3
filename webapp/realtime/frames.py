"""Validation of client → server frames, and the per-socket token bucket.

Every frame a client sends is a JSON object with a ``type``:

``{"type": "ping", "id"?: str | int}``
``{"type": "mark_read", "ids": [int, ...]}`` or ``{"type": "mark_read", "all": true}``
``{"type": "mark_seen", "ids": [int, ...]}`` or ``{"type": "mark_seen", "all": true}``
``{"type": "resume", "cursor": int}``

:func:`frame_parse` turns the text of a frame into one of these dicts, or
raises :class:`FrameError` with the ``code`` of the error frame the client
gets back (``bad_json``, ``invalid_frame``, ``unknown_type``). Unknown
fields are refused, not ignored, so a typo (``"idz"``) is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

#: The most ids one ``mark_read``/``mark_seen`` frame may carry.
MAX_IDS = 500
#: The largest id or cursor accepted (a signed 64-bit integer, the database's).
MAX_INT = 2**63 - 1
MAX_PING_ID_CHARS = 64

CLIENT_TYPES = ("ping", "mark_read", "mark_seen", "resume")


class FrameError(ValueError):
    """A frame the server cannot use: ``code`` (``bad_json``, ``invalid_frame``, ``unknown_type``) and ``detail``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _only(frame: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(frame) - allowed - {"type"})
    if extra:
        raise FrameError("invalid_frame", f"Unknown field(s) for {frame['type']!r}: {', '.join(extra)}.")


def _marks(frame: dict[str, Any]) -> dict[str, Any]:
    _only(frame, {"ids", "all"})
    if ("ids" in frame) == ("all" in frame):
        raise FrameError("invalid_frame", f"{frame['type']!r} takes either 'ids' (a list of ids) or 'all': true.")
    if "all" in frame:
        if frame["all"] is not True:
            raise FrameError("invalid_frame", "'all' must be true.")
        return {"type": frame["type"], "ids": None}
    ids = frame["ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
        raise FrameError("invalid_frame", f"'ids' must be a list of 1 to {MAX_IDS} notification ids.")
    if not all(_is_int(i) and 0 < i <= MAX_INT for i in ids):
        raise FrameError("invalid_frame", "'ids' must hold positive integers.")
    return {"type": frame["type"], "ids": sorted(set(ids))}


def frame_parse(text: str) -> dict[str, Any]:
    """The validated command in a text frame (shapes in the module docstring); raises :class:`FrameError`."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError("bad_json", "The frame is not valid JSON.") from exc
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError("invalid_frame", 'A frame is a JSON object with a "type", e.g. {"type": "ping"}.')
    kind = frame["type"]
    if kind == "ping":
        _only(frame, {"id"})
        ping_id = frame.get("id")
        if ping_id is not None and not (
            (isinstance(ping_id, str) and len(ping_id) <= MAX_PING_ID_CHARS)
            or (_is_int(ping_id) and abs(ping_id) <= MAX_INT)
        ):
            raise FrameError(
                "invalid_frame", f"'id' must be a string of at most {MAX_PING_ID_CHARS} characters or an integer."
            )
        return {"type": "ping", "id": ping_id}
    if kind in ("mark_read", "mark_seen"):
        return _marks(frame)
    if kind == "resume":
        _only(frame, {"cursor"})
        cursor = frame.get("cursor")
        if not isinstance(cursor, int) or isinstance(cursor, bool) or not 0 <= cursor <= MAX_INT:
            raise FrameError("invalid_frame", "'cursor' must be a non-negative integer, the last cursor received.")
        return {"type": "resume", "cursor": cursor}
    shown = kind if len(kind) <= 40 else kind[:40] + "..."
    raise FrameError("unknown_type", f"Unknown frame type {shown!r}; expected one of {', '.join(CLIENT_TYPES)}.")


class TokenBucket:
    """A token bucket: holds up to ``burst`` tokens, refilled at ``rate`` tokens per second.

    :meth:`take` spends one token and returns ``False`` when none is left.
    ``clock`` returns seconds (``time.monotonic``).
    """

    __slots__ = ("burst", "clock", "rate", "tokens", "updated")

    def __init__(self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
