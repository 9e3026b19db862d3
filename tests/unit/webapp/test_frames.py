"""Validation of client frames and the per-socket token bucket."""

from __future__ import annotations

import json

import pytest

from webapp.realtime.frames import MAX_IDS, FrameError, TokenBucket, frame_parse


@pytest.mark.parametrize(
    ("frame", "parsed"),
    [
        ({"type": "ping"}, {"type": "ping", "id": None}),
        ({"type": "ping", "id": "a"}, {"type": "ping", "id": "a"}),
        ({"type": "mark_read", "ids": [3, 1, 3]}, {"type": "mark_read", "ids": [1, 3]}),
        ({"type": "mark_read", "all": True}, {"type": "mark_read", "ids": None}),
        ({"type": "mark_seen", "ids": [7]}, {"type": "mark_seen", "ids": [7]}),
        ({"type": "resume", "cursor": 0}, {"type": "resume", "cursor": 0}),
    ],
)
def test_valid_frames_are_parsed_to_their_commands(frame, parsed):
    assert frame_parse(json.dumps(frame)) == parsed


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{nope", "bad_json"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
        ("[1]", "invalid_frame"),
        ('{"type": 1}', "invalid_frame"),
        ('{"type": "subscribe"}', "unknown_type"),
        ('{"type": "ping", "extra": 1}', "invalid_frame"),
        ('{"type": "ping", "id": {"a": 1}}', "invalid_frame"),
        ('{"type": "mark_read"}', "invalid_frame"),
        ('{"type": "mark_read", "all": false}', "invalid_frame"),
        ('{"type": "mark_read", "all": true, "ids": [1]}', "invalid_frame"),
        ('{"type": "mark_read", "ids": []}', "invalid_frame"),
        ('{"type": "mark_read", "ids": [0]}', "invalid_frame"),
        ('{"type": "mark_read", "ids": [true]}', "invalid_frame"),
        ('{"type": "mark_read", "ids": [1.5]}', "invalid_frame"),
        ('{"type": "mark_read", "ids": [9223372036854775808]}', "invalid_frame"),
        (json.dumps({"type": "mark_seen", "ids": list(range(1, MAX_IDS + 2))}), "invalid_frame"),
        ('{"type": "resume"}', "invalid_frame"),
        ('{"type": "resume", "cursor": "5"}', "invalid_frame"),
        ('{"type": "resume", "cursor": -1}', "invalid_frame"),
    ],
)
def test_invalid_frames_raise_frame_error_with_the_reply_code(text, code):
    with pytest.raises(FrameError) as raised:
        frame_parse(text)
    assert raised.value.code == code
    assert raised.value.detail


def test_the_token_bucket_allows_its_burst_then_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=20, burst=50, clock=lambda: now[0])
    assert [bucket.take() for _ in range(51)] == [True] * 50 + [False]
    now[0] += 0.5  # 10 tokens back
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 3600  # never more than the burst
    assert sum(bucket.take() for _ in range(100)) == 50


def test_a_token_bucket_needs_a_positive_rate_and_a_burst():
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=5)
