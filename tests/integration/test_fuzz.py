"""Property-based fuzzing of the relay (hypothesis): arbitrary frames never crash it or disturb other clients."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from pipeline import Audience, emit_event
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

#: What the server may answer a frame with; anything else (a "server_error" too) fails the property.
REPLIES = {"error", "pong", "read_state", "resumed"}
#: The only ways the server may close a fuzzed socket: both documented, both the client's doing.
DOCUMENTED_CLOSES = {4413, 4429}

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=64)  # no lone surrogates: not UTF-8
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=20,
)
huge_numbers = st.integers(min_value=2**63 - 2, max_value=2**200) | st.integers(max_value=-(2**63) + 2)
frame_types = st.sampled_from(["ping", "mark_read", "mark_seen", "resume"]) | text
known_fields = st.fixed_dictionaries(
    {"type": frame_types},
    optional={
        "ids": st.lists(st.integers() | huge_numbers | json_values, max_size=8) | json_values,
        "all": json_values,
        "cursor": huge_numbers | json_values,
        "id": json_values,
    },
)
unknown_fields = st.dictionaries(text, json_values, max_size=3)
commands = st.builds(lambda known, extra: {**extra, **known}, known_fields, unknown_fields)
frames = st.one_of(
    commands.map(json.dumps),
    json_values.map(json.dumps),
    text,  # mostly not JSON at all
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=4000, max_value=20000).map(lambda size: json.dumps({"type": "ping", "id": "x" * size})),
)


def protocols(token: str) -> list[Subprotocol]:
    return [Subprotocol("notiflow"), Subprotocol(f"jwt.{token}")]


class Fuzzer:
    """One socket of bob's, reopened whenever the server closes it with a documented code."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.ws: ClientConnection | None = None
        self.closes: list[int | None] = []
        self.replies: list[dict] = []
        self.sent = 0

    def open(self) -> ClientConnection:
        if self.ws is None:
            self.ws = connect(self.url, subprotocols=protocols(self.token), open_timeout=10, max_size=None)
            assert json.loads(self.ws.recv(timeout=10))["type"] == "hello"
        return self.ws

    def exchange(self, frame: str | bytes) -> None:
        """Send ``frame``, then a ping; read every reply up to its pong."""
        ws = self.open()
        self.sent += 1
        marker = f"after-{self.sent}"
        try:
            ws.send(frame)
            ws.send(json.dumps({"type": "ping", "id": marker}))
            while True:
                reply = json.loads(ws.recv(timeout=10))
                if reply == {"type": "pong", "id": marker}:
                    return
                self.replies.append(reply)
        except ConnectionClosed as closed:
            self.closes.append(closed.rcvd.code if closed.rcvd else None)
            self.ws = None


def test_arbitrary_frames_get_replies_or_documented_closes_and_other_clients_keep_receiving(stack, users):
    bob, carol = users["bob"], users["carol"]
    url = f"{stack.ws_url}/ws/notifications/"
    fuzzer = Fuzzer(url, token_issue(user_id=bob.pk))
    bystander = connect(url, subprotocols=protocols(token_issue(user_id=carol.pk)), open_timeout=10)
    assert json.loads(bystander.recv(timeout=10))["type"] == "hello"

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames)
    def survives(frame):
        fuzzer.exchange(frame)

    survives()

    assert fuzzer.sent >= 250
    assert {r["type"] for r in fuzzer.replies} <= REPLIES
    assert [r for r in fuzzer.replies if r.get("code") == "server_error"] == []
    assert set(fuzzer.closes) <= DOCUMENTED_CLOSES
    # The server still serves: bob's socket answers, and carol, connected all along, still receives.
    fuzzer.exchange(json.dumps({"type": "ping"}))
    emit_event(event_type="announcement.posted", audience=Audience.users(carol), data={"text": "still here"})
    while True:
        frame = json.loads(bystander.recv(timeout=20))
        if frame["type"] == "notification":
            break
    assert frame["notification"]["body"].endswith("still here")
    bystander.close()
