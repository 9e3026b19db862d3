"""emit_event() under hypothesis: every bad argument raises its EventError subclass (nothing else) and
queues nothing; every valid call stores exactly one event.

Each bad call is a valid call with one argument replaced by a bad value, so the error can only come from
that argument. "Queues nothing" is checked as :mod:`tests.unit.pipeline.test_emit_event` checks it: no
``Event`` row (the outbox) and no message published to the real broker (the ``published`` fixture).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline import Audience, emit_event, publishing
from pipeline.audiences import max_user_id
from pipeline.conf import notiflow_settings
from pipeline.events import MAX_DATA_DEPTH
from pipeline.exceptions import (
    InvalidActor,
    InvalidAudience,
    InvalidEventData,
    InvalidIdempotencyKey,
    InvalidOccurredAt,
    InvalidTarget,
    UnknownEventType,
)
from pipeline.models import Event
from webapp.stack import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MAX_ID = max_user_id()  # 2**31 - 1: django.contrib.auth's User has an AutoField key
MAX_BYTES = notiflow_settings.MAX_EVENT_DATA_BYTES
UTC = dt.UTC
OFFSETS = [UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
#: Event types whose processing is cheap for the worker that runs beside the tests.
EVENT_TYPES = ["test.recorded", "test.job"]

#: No explain phase: on Python 3.11 it traces every line (sys.settrace), which made a run minutes long.
PROPERTY = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Later:
    """An argument built inside the call under test, since building it may raise the EventError already
    (``Audience.role("")``); shown as the call that builds it."""

    def __init__(self, build: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.build, self.args, self.kwargs = build, args, kwargs

    def make(self) -> Any:
        return self.build(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        shown = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{getattr(self.build, '__qualname__', self.build)}({', '.join(shown)})"


def made(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: value.make() if isinstance(value, Later) else value for name, value in kwargs.items()}


@dataclass(frozen=True)
class World:
    users: tuple[Any, ...]
    role: str
    known_ids: frozenset[int]


@pytest.fixture
def world(users: dict[str, Any]) -> World:
    editors = Group.objects.create(name="editors")
    editors.user_set.add(users["bob"], users["carol"])
    known = frozenset(get_user_model().objects.values_list("pk", flat=True))
    return World(users=tuple(users.values()), role="editors", known_ids=known)


@pytest.fixture(autouse=True)
def _broker(stack: Any) -> Any:
    """The real broker and worker, with no drain due or running: an emit that gets through rings the doorbell."""
    assert wait_for(lambda: not publishing._redis().exists(publishing.DOORBELL_KEY), timeout=30)
    return stack


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep (the object itself is level 1)."""
    inner: Any = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"deep": inner}


# Valid values ------------------------------------------------------------------------------------------------

#: Text PostgreSQL and SQLite both store: no NUL, no lone surrogate (not UTF-8).
storable = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def texts(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(storable, min_size=min_size, max_size=max_size)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    # Below 1e16 a float reads back from PostgreSQL's jsonb (numeric) as the same float, not an int.
    | st.floats(min_value=-1e15, max_value=1e15)
    | texts()
    | st.text(st.sampled_from('[]{}"\\u0'), max_size=12)  # what the NUL and depth checks read in the text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(texts(), inner, max_size=4),
    max_leaves=12,
)
valid_data = st.one_of(
    st.none(),
    st.dictionaries(texts(), json_values, max_size=5),
    # More than MAX_DATA_DEPTH brackets, so that the depth is measured: wide, or as deep as allowed.
    st.lists(st.dictionaries(texts(max_size=3), json_scalars, max_size=2), min_size=60, max_size=120).map(
        lambda rows: {"rows": rows}
    ),
    st.integers(min_value=2, max_value=MAX_DATA_DEPTH).map(nested),
)
valid_keys = st.builds(lambda text: f"{text}#{uuid.uuid4().hex}", texts(max_size=200))  # unique: a new event
valid_times = st.none() | st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.sampled_from(OFFSETS)
)


def valid_audiences(world: World) -> st.SearchStrategy[Any]:
    people = st.lists(st.sampled_from(world.users), min_size=1, max_size=4)
    ids = people.map(lambda us: [u.pk for u in us])
    return st.one_of(
        people,
        ids,
        ids.map(tuple),
        ids.map(set),
        people.map(lambda us: Audience.users(*us)),
        st.just(Audience.role(world.role)),
        st.just(Audience.everyone()),
    )


def valid_targets(world: World) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.sampled_from(world.users),
        st.tuples(texts(1, 100), texts(1, 64) | st.integers(min_value=-(10**20), max_value=10**20)),
    )


@cache  # built once per world: hypothesis validates a strategy the first time it draws from it
def valid_calls(world: World) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"event_type": st.sampled_from(EVENT_TYPES), "audience": valid_audiences(world)},
        optional={
            "actor": st.none() | st.sampled_from(world.users) | st.sampled_from([u.pk for u in world.users]),
            "target": valid_targets(world),
            "data": valid_data,
            "idempotency_key": st.none() | valid_keys,
            "occurred_at": valid_times,
            "include_actor": st.booleans(),
        },
    )


# Bad values --------------------------------------------------------------------------------------------------

#: A character neither database stores as text: NUL (PostgreSQL refuses it) or a lone surrogate (not UTF-8).
unstorable_char = st.just("\x00") | st.characters(categories=["Cs"])
unstorable_texts = st.builds(lambda a, bad, b: a + bad + b, texts(max_size=5), unstorable_char, texts(max_size=5))
huge_ints = (
    st.integers(min_value=MAX_ID + 1, max_value=MAX_ID + 2**16)
    | st.integers(min_value=MAX_ID + 1, max_value=2**200)
    | st.integers(max_value=-(2**63))
)
#: Values of no argument's type (each argument adds its own).
junk = st.one_of(
    st.floats(),  # nan and inf included
    st.booleans(),
    st.binary(max_size=5),
    st.just(None).map(lambda _: object()),
    st.just(None).map(lambda _: set()),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(texts(max_size=3), st.integers(), max_size=2),
    st.dates(),
    st.integers().map(Decimal),
    st.tuples(st.floats(), st.floats()).map(lambda re_im: complex(*re_im)),
)
unsaved_users = st.builds(lambda name: get_user_model()(username=name), texts(1, 10))


def unknown_ids(world: World) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=MAX_ID).filter(lambda i: i not in world.known_ids) | st.integers(
        min_value=1, max_value=1000
    ).map(lambda n: max(world.known_ids) + n)


bad_event_types = st.one_of(
    junk.filter(lambda v: not isinstance(v, str)),
    st.none(),
    st.integers(),
    texts(max_size=30).filter(lambda t: t not in EVENT_TYPES),
    unstorable_texts,
)


def bad_user_ids(world: World) -> st.SearchStrategy[Any]:
    """What is not the id of a user: junk, ids out of range, unknown ids, unsaved users."""
    return st.one_of(
        junk,
        st.none(),
        texts(),
        st.integers(max_value=0),
        huge_ints,
        unknown_ids(world),
        unsaved_users,
        st.just(None).map(lambda _: Group(name="not-a-user")),
    )


def bad_audiences(world: World) -> st.SearchStrategy[Any]:
    ids = st.lists(st.sampled_from([u.pk for u in world.users]), max_size=3)
    with_bad_id = st.builds(
        lambda before, bad, after: [*before, bad, *after], ids, bad_user_ids(world), ids
    )  # the bad id among good ones
    bad_names = st.one_of(junk, st.none(), st.integers(), st.just(""), st.text(" \t\n", min_size=1), unstorable_texts)
    return st.one_of(
        junk.filter(lambda v: not isinstance(v, list | set | dict | bytes)),  # not iterable at all
        st.none(),
        st.integers(),
        texts(),
        st.binary(),
        st.dictionaries(st.integers(min_value=1, max_value=9), st.integers(), max_size=2),
        st.sampled_from(world.users),  # one user, not a list of them
        st.sampled_from([[], (), set(), Later(Audience.users)]),
        with_bad_id,
        with_bad_id.map(tuple),
        with_bad_id.map(lambda v: Later(Audience.users, *v)),
        st.lists(st.lists(st.integers(min_value=1, max_value=9), max_size=2), min_size=1, max_size=2),  # nested
        bad_names.map(lambda name: Later(Audience.role, name)),
        texts(1, 20).filter(lambda name: name.strip() and name != world.role).map(lambda n: Later(Audience.role, n)),
        # Built directly rather than through users()/role()/everyone():
        (junk | st.none() | texts()).map(lambda kind: Later(Audience, kind=kind)),
        with_bad_id.map(lambda v: Later(Audience, kind="users", user_ids=tuple(v))),
        st.just(Later(Audience, kind="users", user_ids=())),
        bad_names.map(lambda name: Later(Audience, kind="role", role_name=name)),
    )


def bad_targets(world: World) -> st.SearchStrategy[Any]:
    good_type, good_id = texts(1, 100), texts(1, 64)
    bad_type = st.one_of(
        junk, st.none(), st.integers(), st.just(""), st.text(storable, min_size=101, max_size=120), unstorable_texts
    )
    bad_id = st.one_of(
        junk.filter(lambda v: not isinstance(v, bool)),
        st.booleans(),
        st.none(),
        st.just(""),
        st.text(storable, min_size=65, max_size=80),
        unstorable_texts,
        st.integers(min_value=10**64, max_value=10**70),  # 65 digits and more
        st.integers(min_value=5000, max_value=6000).map(lambda digits: 10**digits),  # str() refuses it
    )
    return st.one_of(
        junk.filter(lambda v: not isinstance(v, bool)),
        st.integers(),
        texts(),
        st.tuples(good_type, bad_id),
        st.tuples(bad_type, good_id),
        st.tuples(good_type, good_id).map(list),
        st.tuples(good_type),
        st.tuples(good_type, good_id, good_id),
        unsaved_users,
    )


def circular() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


bad_leaves = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.integers(), max_size=2).map(set),
    st.just(frozenset()),
    st.binary(max_size=5),
    st.just(None).map(lambda _: object()),
    st.datetimes(),
    st.dates(),
    st.integers().map(Decimal),
    st.tuples(st.floats(), st.floats()).map(lambda re_im: complex(*re_im)),
    st.uuids(),
    unstorable_texts,
    st.integers(min_value=5000, max_value=6000).map(lambda digits: 10**digits),  # json.dumps cannot write it
)
bad_keys = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.tuples(st.integers()),
    unstorable_texts,
)


def inside(bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``bad`` somewhere inside lists and objects (or at the top)."""
    return st.recursive(
        bad,
        lambda inner: st.lists(inner, min_size=1, max_size=2) | st.dictionaries(texts(), inner, min_size=1, max_size=1),
        max_leaves=3,
    )


bad_data = st.one_of(
    junk.filter(lambda v: not isinstance(v, dict)),
    texts(),
    st.integers(),
    st.lists(json_values, max_size=3),
    st.builds(
        lambda base, key, value: {**base, key: value},
        st.dictionaries(texts(), json_values, max_size=3),
        texts(),
        inside(bad_leaves),
    ),
    st.builds(
        lambda base, key, value: {**base, key: value},
        st.dictionaries(texts(), json_values, max_size=3),
        texts(),
        inside(st.dictionaries(bad_keys, json_values, min_size=1, max_size=2)),
    ),
    st.dictionaries(bad_keys, json_values, min_size=1, max_size=2),
    st.integers(min_value=MAX_DATA_DEPTH + 1, max_value=MAX_DATA_DEPTH + 5).map(nested),
    st.integers(min_value=900, max_value=5000).map(nested),  # past the interpreter's recursion limit
    st.integers(min_value=MAX_BYTES, max_value=2 * MAX_BYTES).map(lambda n: {"blob": "x" * n}),
    st.integers(min_value=MAX_BYTES // 2, max_value=MAX_BYTES).map(lambda n: {"blob": "é" * n}),  # 2 bytes each
    st.just(None).map(lambda _: circular()),
)
bad_keys_arg = st.one_of(
    junk.filter(lambda v: not isinstance(v, str)),
    st.integers(),
    st.just(""),
    st.text(storable, min_size=256, max_size=300),
    unstorable_texts,
)
bad_times = st.one_of(
    junk.filter(lambda v: not isinstance(v, dt.datetime)),
    texts(),
    st.sampled_from(["2024-01-01T00:00:00Z", "garbage", ""]),
    st.integers(),
    st.dates(),
    st.datetimes(),  # naive
    # Aware, but out of datetime's range once in UTC.
    st.sampled_from(
        [
            dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
            dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        ]
    ),
)
bad_include_actor = st.one_of(
    junk.filter(lambda v: not isinstance(v, bool)), st.none(), st.integers(), texts(), st.just("yes")
)


@cache
def bad_arguments(world: World) -> dict[str, st.SearchStrategy[Any]]:
    """Bad values of each argument of ``emit_event()``."""
    return {
        "event_type": bad_event_types,
        "audience": bad_audiences(world),
        "actor": bad_user_ids(world).filter(lambda v: v is not None),
        "target": bad_targets(world),
        "data": bad_data.filter(lambda v: v is not None),
        "idempotency_key": bad_keys_arg,
        "occurred_at": bad_times,
        "include_actor": bad_include_actor,
    }


#: The error each argument's bad values raise.
ERRORS = {
    "event_type": UnknownEventType,
    "audience": InvalidAudience,
    "actor": InvalidActor,
    "target": InvalidTarget,
    "data": InvalidEventData,
    "idempotency_key": InvalidIdempotencyKey,
    "occurred_at": InvalidOccurredAt,
    "include_actor": InvalidAudience,
}


# Properties --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", list(ERRORS))
@settings(PROPERTY, max_examples=75)
@given(data=st.data())
def test_every_bad_argument_raises_its_event_error_and_queues_nothing(world, published, argument, data):
    call = data.draw(valid_calls(world), label="valid call")
    bad = data.draw(bad_arguments(world)[argument], label=f"bad {argument}")
    events, messages = Event.objects.count(), len(published)
    with pytest.raises(ERRORS[argument]):  # an EventError, nothing else (an OverflowError fails the test)
        emit_event(**made({**call, argument: bad}))
    assert Event.objects.count() == events  # nothing in the outbox
    publishing.ringer.flush()  # the doorbell is rung from a thread: wait for it
    assert published[messages:] == []  # nothing sent to the broker


@settings(PROPERTY, max_examples=120)
@given(data=st.data())
def test_every_valid_call_stores_exactly_one_event(world, data):
    call = data.draw(valid_calls(world), label="valid call")
    events = Event.objects.count()
    event_id = emit_event(**call)
    assert Event.objects.count() == events + 1
    event = Event.objects.get(pk=event_id)
    assert event.event_type == call["event_type"]
    assert event.data == json.loads(json.dumps(call.get("data") or {}))  # tuples are stored as arrays
    assert event.idempotency_key == call.get("idempotency_key")
    assert event.include_actor is call.get("include_actor", False)
    if call.get("occurred_at") is not None:
        assert event.occurred_at == call["occurred_at"]
