"""One event to many recipients: time to store, push and record it, and the channel-layer work it causes.

    python -m bench.fanout                                         # 1,000 / 10,000 / 100,000 recipients, SQLite
    python -m bench.fanout --db postgres
    python -m bench.fanout --sizes 200 2000 --connected 100        # a smoke run

It starts a private stack with :class:`webapp.stack.Stack` in
``var/bench/fanout-<db>`` (emptied first): the ``Procfile``'s redis, web
(daphne) and worker (2 pool processes), each under its own honcho, with
``webapp.settings.prod`` and throw-away secrets (as :mod:`bench.hotpath`;
no SMTP, no beat: the event type sends no email, and beat's sweeps would add
work at random moments). With ``--db postgres`` the database is a private
PostgreSQL (:class:`webapp.postgres.PrivatePostgres`).

**Users.** This process creates the users with ``bulk_create`` (unusable
passwords) and an inbox each (as after a first notification), and puts them
in one Django ``Group`` per audience, then runs ``ANALYZE`` (the statistics
autovacuum gathers in production within a minute of a bulk load). ``--connected`` of them (1,000) hold a
real WebSocket to the relay, opened in a helper process (asyncio
``websockets``; a JWT per user from :func:`webapp.tokens.token_issue`,
offered as the ``jwt.<token>`` subprotocol), ``--connect-concurrency`` (50)
handshakes in flight, each counted once its ``hello`` arrived, all before any
clock starts. Their ids are spread evenly over the largest audience that has
sockets, so a pipeline that works through an audience in id order reaches
the last one near its end. An audience of ``size`` recipients holds
``min(--connected, size)`` of those users when ``size`` is at most
``--sockets-up-to`` (10,000), none otherwise (100,000); the rest are users
without a socket.

**One run** is one ``emit_event(event_type="announcement.posted",
audience=Audience.role(<group>), actor=<announcer>, data={"text": ...})``
outside any transaction (WebSocket only, no email: ``NOTIFLOW["EVENT_TYPES"]``),
then polling every ``--poll-ms`` (25 ms; 5 times the poll's own duration if
that is longer, so polling takes at most a fifth of a core; ``polls`` in the
JSON). Seconds from just before the
``emit_event()`` call (``time.monotonic()``, which the socket process
shares) to:

1. **stored**: the start of the first poll at which
   ``Notification.objects.filter(event_id=...).count()`` equals the audience;
2. **last push**: the arrival of the push of that event on the last of the
   audience's sockets to get one (a ``notification`` frame whose
   ``notification.event_id`` is the event; timed in the socket process as the
   frame is read, before parsing);
3. **recorded**: the start of the first poll, once 1 holds, at which no
   ``Delivery`` of the event is ``queued`` or ``retrying``.

Before the first run, announcements to one chunk of users
(``NOTIFLOW["AUDIENCE_CHUNK_SIZE"]``, 2,000, 10 of them with a socket) are
repeated until two in a row open no new connection to Redis (at most
``WARM_UP_MAX``): ``channels_redis`` opens a connection for every
``group_send`` that finds the pooled ones busy and keeps it, so a cold
worker's first chunk pays for opening them; a worker that has been pushing
for a while does not. Each run reports the connections Redis accepted
during it (``new_connections``; ``INFO stats``).

A run ends when all three hold (pushes still missing once 3 holds and no
push has arrived for ``PUSH_GRACE`` s are counted lost; a daphne process
relays its pushes at a few thousand a second, so 1,000 pushes may trail the
last send by a few tenths of a second) and fails after ``--stall-seconds``
(60) without progress.
After ``DUPLICATE_GRACE`` s each socket of the audience is checked for
exactly one push of the event: **lost** (none), **duplicates** (beyond one),
**strays** (pushes to sockets outside the audience). Every audience size
runs with ``Audience.role()``; ``--users-audience`` sizes (default: the
largest with sockets) run again with ``Audience.users(*ids)``. **Growth**:
each figure at one size divided by the same figure at the next smaller
size, against the ratio of the sizes; the target is at most 1.2 times that
ratio (at most 12 for 10 times the recipients).

**Baselines**, in the same run, just before the run of each size up to
``--baseline-up-to`` (10,000), from this process: a raw channel layer
``group_send`` of a ``notify.push`` (a fake notification, cursor above
10**15, so the consumer lets it through) to ``user.<id>`` of every
recipient, gathered ``NOTIFLOW["AUDIENCE_CHUNK_SIZE"]`` (2,000) at a time on
one kept event loop (:func:`delivery.websocket.run`, as the pipeline sends a
stored chunk), timed from the first call to the last call returning, and to
the last socket's push; then the same for the connected recipients' groups
only. Before the first baseline, one gather of that width to empty groups
(not timed) opens the loop's Redis connections.

**Broadcast cost** (``--cost``, default ``307:3`` and ``<largest audience
with sockets>:<its sockets>``, that is 10,000:1,000): for each
``audience:connected`` pair, one ``Audience.role()`` announcement to a group
of that many users with that many sockets (run as above), bracketed by Redis
``INFO commandstats`` of the channel layer's server
(``settings.CHANNEL_LAYER_REDIS_URL``; the broker shares it by default),
then as long again with nothing emitted; the idle difference is subtracted.
Redis counts commands that Lua scripts call. What is counted
(``channels_redis`` 4.3 and :mod:`delivery.layers`; nothing else in the stack
issues ``ZCOUNT`` or ``ZRANGE``):

- groups sent to (``group_sends``) = ``ZRANGE``: a group's members are read
  once per message to the group, by channels_redis' ``group_send`` and by
  ``group_send_many`` alike; the receiving ASGI process's script reads its
  in-flight backup with one more per batch it receives (up to
  ``receive_batch`` messages), so this is an upper bound;
- channel messages = ``ZCOUNT``: one per channel key a message is written
  to (in the sending script), that is per ASGI process holding a member of
  the group: a push queued for a socket;
- ``EVAL`` and ``EVALSHA`` as they are: channels_redis' ``group_send`` runs
  one ``EVAL`` per group, ``group_send_many`` one per call (up to 500
  messages); the receiving process one per batch received and every 5 s
  while idle;
- all commands of the server, calls and ``usec`` (Redis's own CPU time).

The same counters, not corrected, are kept for every run (``redis`` in each
run's JSON). Prints tables (each figure with its baseline and the ratio,
growth, broadcast cost) and writes every figure as JSON to ``--out``
(default ``var/bench/fanout-<db>.json``), also when a phase fails
(``"error"``), with the raw timings for a plot of time against audience
size: the stored count at each poll where it changed and each socket's push
time, in ms after the emit. Exit status 1 on failure or when a push was lost
or duplicated. Only ``emit_event()``, ``Audience``, the ``Notification``
and ``Delivery`` models (and ``Inbox``, created up front) and the socket are
relied on, so a rebuilt pipeline (one that pushes only to users with an open
socket) is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.hotpath import (
    BENCH_SECRETS,
    DUPLICATE_GRACE,
    FAKE_CURSOR_BASE,
    PUSH_GRACE,
    ROOT,
    SETTINGS_MODULE,
    BenchError,
    _database_version,
    ms_summary,
    ratio,
)

if TYPE_CHECKING:
    from webapp.postgres import PrivatePostgres
    from webapp.stack import Stack

EVENT_TYPE = "announcement.posted"
WS_PATH = "/ws/notifications/"
GROUP_PREFIX = "fanout-"
#: Seconds the socket process has to answer a command (opening the sockets has its own limit).
FLEET_ANSWER = 30.0
#: Most warm-up announcements (see :meth:`Fanout.warm_up`).
WARM_UP_MAX = 6
#: Largest growth of a figure over the growth of the audience that meets the target (12 for 10 times).
GROWTH_TARGET = 1.2


# -- the sockets, in a helper process -----------------------------------------------------------------------------


class _Fleet:
    """The helper process: every socket on one event loop, answering the parent's commands over a pipe.

    Pushes are kept as ``pushes[event_id][user_id] = [arrival, ...]``
    (``time.monotonic()``, read as each frame arrives, before parsing).
    """

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.sockets: dict[int, Any] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.pushes: dict[str, dict[int, list[float]]] = defaultdict(dict)
        self.frames: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def readable() -> None:
            try:
                commands.put_nowait(self.pipe.recv())
            except (EOFError, OSError):  # the parent is gone
                loop.remove_reader(self.pipe.fileno())
                commands.put_nowait(("exit",))

        loop.add_reader(self.pipe.fileno(), readable)
        while True:
            name, *args = await commands.get()
            if name == "connect":
                self.pipe.send(await self.connect(*args))
            elif name == "progress":
                got = self.pushes.get(args[0], {})
                firsts = [got[uid][0] for uid in args[1] if uid in got]
                self.pipe.send((len(firsts), max(firsts, default=None)))
            elif name == "pushes":
                self.pipe.send(dict(self.pushes.get(args[0], {})))
            elif name == "status":
                open_ = sum(1 for r in self.readers if not r.done())
                self.pipe.send({"open": open_, "frames": dict(self.frames), "ended": dict(self.ended)})
            elif name == "close":
                await asyncio.gather(*(ws.close() for ws in self.sockets.values()), return_exceptions=True)
                self.pipe.send(None)
            else:
                return

    async def connect(self, url: str, tokens: dict[int, str], concurrency: int, timeout: float) -> dict[str, Any]:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        gate = asyncio.Semaphore(concurrency)
        seconds: list[float] = []
        failures: Counter[str] = Counter()
        began = time.monotonic()

        async def one(user_id: int, token: str) -> None:
            async with gate:
                start = time.monotonic()
                try:
                    async with asyncio.timeout(timeout):
                        ws = await connect(
                            url,
                            subprotocols=[Subprotocol("notiflow"), Subprotocol(f"jwt.{token}")],
                            open_timeout=None,  # the timeout above covers the handshake and hello
                            ping_interval=None,  # daphne pings; an idle client need not
                            close_timeout=2,
                            max_size=2**20,
                        )
                        try:
                            frame = json.loads(await ws.recv())
                            if frame.get("type") != "hello":
                                raise RuntimeError(f"first frame is {frame.get('type')!r}, not 'hello'")
                        except BaseException:
                            ws.transport.abort()
                            raise
                except Exception as exc:
                    failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                    return
                seconds.append(time.monotonic() - start)
                self.frames["hello"] += 1
                self.sockets[user_id] = ws
                self.readers.append(asyncio.ensure_future(self.read(user_id, ws)))

        await asyncio.gather(*(one(uid, token) for uid, token in tokens.items()))
        return {"seconds": time.monotonic() - began, "each_s": seconds, "failures": dict(failures)}

    async def read(self, user_id: int, ws: Any) -> None:
        why = "closed"
        try:
            async for raw in ws:
                arrived = time.monotonic()
                frame = json.loads(raw)
                kind = str(frame.get("type"))
                self.frames[kind] += 1
                if kind == "notification":
                    key = str(frame.get("notification", {}).get("event_id"))
                    self.pushes[key].setdefault(user_id, []).append(arrived)
        except Exception as exc:
            why = type(exc).__name__
        self.ended[f"{why} (code {ws.close_code})"] += 1


def _fleet_process(pipe: Connection) -> None:
    """Entry point of the socket process (``spawn``): Ctrl-C is the parent's business."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_Fleet(pipe).serve())


class SocketFleet:
    """The parent's handle on the socket process (:class:`_Fleet`)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_fleet_process, args=(child,), daemon=True, name="fanout-sockets")
        self.process.start()
        child.close()

    def call(self, *command: Any, timeout: float = FLEET_ANSWER) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(timeout):
            raise BenchError(f"the socket process did not answer {command[0]!r} in {timeout:.0f} s")
        return self.pipe.recv()

    def connect(self, *, url: str, tokens: dict[int, str], concurrency: int, timeout: float) -> dict[str, Any]:
        """Open one socket per ``{user_id: token}`` and wait for each ``hello``: ``{"seconds", "each_s",
        "failures"}`` (seconds for all, for each; failures by reason)."""
        budget = timeout * (len(tokens) / max(1, concurrency) + 1)
        return dict(self.call("connect", url, tokens, concurrency, timeout, timeout=budget))

    def progress(self, key: str, user_ids: Sequence[int]) -> tuple[int, float | None]:
        """How many of ``user_ids``' sockets have had a push of event ``key``; the latest of their first arrivals."""
        reached, last = self.call("progress", key, tuple(user_ids))
        return int(reached), last

    def pushes(self, key: str) -> dict[int, list[float]]:
        """``{user_id: [arrival, ...]}`` of the pushes of event ``key``."""
        return dict(self.call("pushes", key))

    def status(self) -> dict[str, Any]:
        return dict(self.call("status"))

    def stop(self) -> None:
        """Close the sockets (each with a close handshake, 2 s at most), then end the process."""
        if self.process.is_alive():
            try:
                self.call("close")
                self.pipe.send(("exit",))
            except (BenchError, OSError):
                pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()


# -- Redis INFO commandstats -----------------------------------------------------------------------------------------


def commandstats(client: Any) -> dict[str, tuple[int, int]]:
    """``{command: (calls, usec)}`` from ``INFO commandstats`` (lower-case names, e.g. ``"zrange"``)."""
    stats: dict[str, tuple[int, int]] = {}
    for name, values in client.info("commandstats").items():
        stats[str(name).removeprefix("cmdstat_").lower()] = (int(values["calls"]), int(values["usec"]))
    return stats


def commandstats_delta(after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The work between two :func:`commandstats`: ``group_sends``, ``channel_messages``, ``zrange``, ``eval``,
    ``evalsha``, ``bzpopmin``, ``commands``, ``usec`` and ``by_command`` (``{name: [calls, usec]}``, changed only).
    """
    diff = {
        name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
        for name, (calls, usec) in after.items()
    }
    calls = {name: c for name, (c, _) in diff.items()}
    return {
        "group_sends": calls.get("zrange", 0),
        "channel_messages": calls.get("zcount", 0),
        **{name: calls.get(name, 0) for name in ("zrange", "eval", "evalsha", "bzpopmin")},
        "commands": sum(calls.values()),
        "usec": sum(u for _, u in diff.values()),
        "by_command": {name: [c, u] for name, (c, u) in sorted(diff.items()) if c or u},
    }


def _minus(work: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    return {k: v - idle[k] for k, v in work.items() if isinstance(v, int)}


# -- the benchmark ----------------------------------------------------------------------------------------------------


@dataclass
class Roster:
    """One Django group of the run: its name, members (ids, ascending) and the members holding a socket."""

    name: str
    members: list[int]
    connected: list[int] = field(default_factory=list)


class Fanout:
    """One run of the benchmark: :meth:`run` sets up, measures, tears down, reports; its exit status."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": [],
            "baselines": [],
            "cost": [],
        }
        self.var_dir = ROOT / "var" / "bench" / f"fanout-{args.db}"
        self.stack: Stack | None = None
        self.postgres: PrivatePostgres | None = None
        self.fleet: SocketFleet | None = None
        self.redis: Any = None
        self.actor_id = 0
        self.groups: dict[str, Roster] = {}
        self.sockets: list[int] = []  # the users holding a socket
        self.fake_count = 0

    # -- layout -------------------------------------------------------------
    def plan(self) -> tuple[int, list[int], dict[str, tuple[int, int]]]:
        """``(pool size, socket positions, {group name: (size, sockets)})``.

        Socket users sit at evenly spaced positions of the first ``span``
        users (``span`` the largest audience with sockets); an audience of
        ``size`` with ``k`` sockets is the first ``k`` socket users and the
        first ``size - k`` others. The warm-up audience is one chunk
        (``AUDIENCE_CHUNK_SIZE``) with 10 sockets.
        """
        from pipeline.conf import notiflow_settings

        a = self.args
        with_sockets = [s for s in a.sizes if s <= a.sockets_up_to]
        span = max([*with_sockets, a.connected])
        positions = [j * span // a.connected for j in range(a.connected)] if a.connected else []
        chunk = int(notiflow_settings.AUDIENCE_CHUNK_SIZE)
        wanted: dict[str, tuple[int, int]] = {"warmup": (chunk, min(10, a.connected))}
        for size in a.sizes:
            wanted[str(size)] = (size, min(a.connected, size) if size <= a.sockets_up_to else 0)
        for size, k in a.cost:
            wanted[f"cost-{size}-{k}"] = (size, k)
        others = max(size - k for size, k in wanted.values())
        return a.connected + others, positions, wanted

    # -- set-up -------------------------------------------------------------
    def setup(self) -> None:
        from webapp.stack import Stack

        self.stack = stack = Stack(
            var_dir=self.var_dir,
            processes=("redis", "web", "worker"),
            settings_module=SETTINGS_MODULE,
            extra_env={
                "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
                **BENCH_SECRETS,
                "DATABASE_URL": f"sqlite:///{self.var_dir / 'db.sqlite3'}",
            },
        )
        stack.prepare(fresh=True)
        if self.args.db == "postgres":
            print(f"Starting PostgreSQL in {self.var_dir / 'postgres'} ...", flush=True)
            self.postgres = stack.use_postgres()
        stack.apply_env()
        stack.manage("migrate", "--noinput", "-v", "0")
        import django

        django.setup()
        self.results["environment"] = self._environment()
        self.users_create()
        print(f"Starting redis, web, worker in {self.var_dir} ...", flush=True)
        stack.start(log_to=self.var_dir / "stack.log", separately=True)
        stack.wait_ready(timeout=120)
        import redis
        from django.conf import settings

        self.redis = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)
        self.sockets_open()

    def users_create(self) -> None:
        """The users (bulk, unusable passwords), an inbox each, and one Django group per audience."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db import connections

        from pipeline.models import Inbox

        pool_size, positions, wanted = self.plan()
        print(f"Creating {pool_size:,} users and {len(wanted)} groups ...", flush=True)
        began = time.monotonic()
        users = get_user_model()
        users.objects.bulk_create(
            [users(username=f"fan{i:06d}", password="!") for i in range(pool_size)], batch_size=2000
        )
        pool = list(users.objects.filter(username__startswith="fan").order_by("pk").values_list("pk", flat=True))
        self.actor_id = users.objects.create(username="announcer", password="!").pk
        # Steady state: every recipient has had a notification before, so the inbox row exists.
        Inbox.objects.bulk_create([Inbox(user_id=uid) for uid in pool], batch_size=2000, ignore_conflicts=True)
        at_socket = set(positions)
        sockets = [pool[p] for p in positions]
        others = [uid for i, uid in enumerate(pool) if i not in at_socket]
        through = users.groups.through
        for label, (size, k) in wanted.items():
            group = Group.objects.create(name=f"{GROUP_PREFIX}{label}")
            members = sorted(sockets[:k] + others[: size - k])
            through.objects.bulk_create([through(user_id=uid, group_id=group.pk) for uid in members], batch_size=2000)
            self.groups[label] = Roster(name=group.name, members=members, connected=sorted(sockets[:k]))
        self.sockets = sockets
        # The planner statistics a production database has (autovacuum gathers them within a minute of a bulk
        # load): without them PostgreSQL and SQLite guess a role's membership at a few hundred rows.
        with connections["default"].cursor() as cursor:
            cursor.execute("ANALYZE")
        self.results["setup"] = {
            "users": pool_size,
            "users_and_groups_s": round(time.monotonic() - began, 2),
            "groups": {
                g.name: {"members": len(g.members), "connected": len(g.connected)} for g in self.groups.values()
            },
        }
        connections.close_all()

    def sockets_open(self) -> None:
        from webapp.tokens import token_issue

        if not self.sockets:
            return
        assert self.stack is not None
        n = len(self.sockets)
        print(f"Opening {n:,} WebSockets ({self.args.connect_concurrency} in flight) ...", flush=True)
        tokens = {uid: token_issue(user_id=uid, ttl=24 * 3600) for uid in self.sockets}
        self.fleet = SocketFleet()
        opened = self.fleet.connect(
            url=f"{self.stack.ws_url}{WS_PATH}", tokens=tokens, concurrency=self.args.connect_concurrency, timeout=30.0
        )
        self.results["setup"]["connect"] = {
            "sockets": n,
            "seconds": round(opened["seconds"], 2),
            "each": ms_summary(opened["each_s"]),
            "failures": opened["failures"],
        }
        print(f"   {n - sum(opened['failures'].values())} open in {opened['seconds']:.1f} s", flush=True)
        if opened["failures"]:
            raise BenchError(f"{sum(opened['failures'].values())} of {n} sockets did not open: {opened['failures']}")

    def _environment(self) -> dict[str, Any]:
        try:
            commit = subprocess.run(
                ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "commit": commit,
            "database": _database_version(),
            "settings": SETTINGS_MODULE,
        }

    def teardown(self) -> None:
        """Close the sockets, stop every process of the stack, then PostgreSQL (each only if started)."""
        if self.fleet is not None:
            with contextlib.suppress(BenchError, OSError):  # a dead socket process: stopped below all the same
                self.results["socket_status"] = self.fleet.status()
            self.fleet.stop()
        if self.stack is not None:
            for name in ("worker", "web"):  # Redis last, so no process logs a lost broker
                self.stack.stop_process(name)
            self.stack.stop()
        if self.postgres is not None:
            self.postgres.stop()

    # -- one event ------------------------------------------------------------
    def announce(self, *, label: str, group: Roster, users: bool = False) -> dict[str, Any]:
        """Emit one announcement to ``group`` (``Audience.role``, or ``Audience.users`` when ``users``) and time it.

        Returns the run's figures (seconds from just before ``emit_event()``)
        and raw timings; raises :class:`BenchError` after ``--stall-seconds``
        without progress.
        """
        from django.db.models import Count

        from pipeline import Audience, emit_event
        from pipeline.models import Delivery, Notification

        n, expected = len(group.members), set(group.connected)
        built = time.monotonic()
        audience = Audience.users(*group.members) if users else Audience.role(group.name)
        built = time.monotonic() - built
        kind = "users" if users else "role"
        print(f"{label}: one announcement to {n:,} ({kind}), {len(expected):,} with a socket ...", flush=True)
        poll, stall = self.args.poll_ms / 1000, self.args.stall_seconds
        stats0, conns0 = commandstats(self.redis), self.connections_received()
        t0 = time.monotonic()
        event_id = emit_event(
            event_type=EVENT_TYPE, audience=audience, actor=self.actor_id, data={"text": f"fanout {label}"}
        )
        emit_s = time.monotonic() - t0
        key = str(event_id)
        stored_at = recorded_at = last_push = None
        stored_curve: list[tuple[float, int]] = [(0.0, 0)]
        reached, state = 0, None
        last_progress = last_reach = time.monotonic()
        polls: list[float] = []
        while True:
            now = time.monotonic()
            if stored_at is None:
                count = Notification.objects.filter(event_id=event_id).count()
                if count != stored_curve[-1][1]:
                    stored_curve.append((now - t0, count))
                if count >= n:
                    stored_at = now
            elif recorded_at is None:
                pending = Delivery.objects.filter(
                    notification__event_id=event_id, status__in=[Delivery.Status.QUEUED, Delivery.Status.RETRYING]
                )
                if not pending.exists():
                    recorded_at = now
            polls.append(time.monotonic() - now)
            if self.fleet is not None:
                before, (reached, last_push) = reached, self.fleet.progress(key, group.connected)
                last_reach = time.monotonic() if reached != before else last_reach
            pushes_in = reached >= len(expected)
            # Every delivery is recorded and the relay has gone quiet: a push still missing was dropped on the way.
            quiet = time.monotonic() - max(recorded_at or 0.0, last_reach) > PUSH_GRACE
            if stored_at and recorded_at and (pushes_in or quiet):
                break
            progress = (stored_curve[-1][1], reached, recorded_at is not None)
            if progress != state:
                state, last_progress = progress, time.monotonic()
            elif time.monotonic() - last_progress > stall:
                raise BenchError(
                    f"{label}: nothing new for {stall:.0f} s: {stored_curve[-1][1]:,} of {n:,} notifications stored, "
                    f"{reached:,} of {len(expected):,} sockets pushed, deliveries "
                    f"{'recorded' if recorded_at else 'not all recorded'}. See {self.var_dir / 'stack.log'}."
                )
            # Every `poll` s, or 5 times the query's own time if longer: at most a fifth of a core spent polling.
            time.sleep(max(0.0, now + max(poll, 5 * polls[-1]) - time.monotonic()))
        stats1, conns1 = commandstats(self.redis), self.connections_received()
        time.sleep(DUPLICATE_GRACE)
        pushes = self.fleet.pushes(key) if self.fleet is not None else {}
        firsts = sorted((times[0] - t0) for uid, times in pushes.items() if uid in expected)
        statuses = {
            row["status"]: row["n"]
            for row in Delivery.objects.filter(notification__event_id=event_id).values("status").annotate(n=Count("pk"))
        }
        result = {
            "label": label,
            "audience": kind,
            "recipients": n,
            "connected": len(expected),
            "audience_build_s": round(built, 4),  # Audience.users(*ids) or .role(name), before the clock starts
            "emit_call_s": round(emit_s, 4),
            "stored_s": round(stored_at - t0, 3) if stored_at else None,
            "last_push_s": round(last_push - t0, 3) if last_push is not None and expected and pushes_in else None,
            "recorded_s": round(recorded_at - t0, 3) if recorded_at else None,
            "push": ms_summary(firsts),
            "polls": ms_summary(polls),
            "push_lost": len(expected - set(pushes)),
            "push_duplicates": sum(len(times) - 1 for uid, times in pushes.items() if uid in expected),
            "push_strays": sum(len(times) for uid, times in pushes.items() if uid not in expected),
            "notifications": Notification.objects.filter(event_id=event_id).count(),
            "deliveries": statuses,
            "redis": {**commandstats_delta(stats1, stats0), "new_connections": conns1 - conns0},
            "timings_ms": {
                "stored": [[round(t * 1000, 1), c] for t, c in stored_curve],
                "pushes": [round(t * 1000, 1) for t in firsts],
            },
        }
        print(
            f"   stored {result['stored_s']} s, last push {result['last_push_s']} s, "
            f"recorded {result['recorded_s']} s; pushes lost {result['push_lost']}, "
            f"duplicated {result['push_duplicates']}, strays {result['push_strays']}",
            flush=True,
        )
        return result

    def connections_received(self) -> int:
        """Connections the channel layer's Redis server has accepted since it started (``INFO stats``)."""
        return int(self.redis.info("stats")["total_connections_received"])

    def warm_up(self) -> None:
        """Announcements to one chunk's worth of users until two in a row open no new Redis connection (at most
        ``WARM_UP_MAX``), so that the measured runs find the worker's channel layer connections open, as in a
        worker that has been pushing for a while; then the same for this process's loop (:meth:`warm_layer`)."""
        group = self.groups["warmup"]
        quiet = 0
        for i in range(1, WARM_UP_MAX + 1):
            run = self.announce(label=f"warm-up {i}", group=group)
            self.results.setdefault("warm_up", []).append(run)
            opened = run["redis"]["new_connections"]
            quiet = quiet + 1 if opened == 0 else 0
            if quiet == 2:
                break
        self.warm_layer()

    # -- baselines ------------------------------------------------------------
    def fake(self, key: str) -> dict[str, Any]:
        """A ``notify.push`` message the consumer relays (cursor far above any real one)."""
        self.fake_count += 1
        cursor = FAKE_CURSOR_BASE + self.fake_count
        return {
            "type": "notify.push",
            "notification": {
                "id": cursor,
                "event_id": key,
                "cursor": cursor,
                "event_type": EVENT_TYPE,
                "category": "announcements",
                "title": "Announcement from announcer",
                "body": f"fanout {key}",
                "data": {"text": f"fanout {key}"},
                "state": "unseen",
                "created_at": datetime.now(UTC).isoformat(),
            },
        }

    def group_sends(self, *, label: str, user_ids: Sequence[int], connected: set[int]) -> dict[str, Any]:
        """Raw ``group_send`` to ``user.<id>`` of each of ``user_ids``, gathered a chunk at a time; first call ->
        last return, and -> the last of ``connected``'s pushes (``None`` when none is expected)."""
        from channels.layers import get_channel_layer

        from delivery.websocket import run, user_group
        from pipeline.conf import notiflow_settings

        layer = get_channel_layer()
        assert layer is not None
        chunk = int(notiflow_settings.AUDIENCE_CHUNK_SIZE)
        key = f"baseline-{label}"
        message = self.fake(key)

        async def send_all() -> tuple[float, float]:
            began = time.monotonic()
            for start in range(0, len(user_ids), chunk):
                part = user_ids[start : start + chunk]
                await asyncio.gather(*(layer.group_send(user_group(uid), message) for uid in part))
            return began, time.monotonic()

        began, ended = run(send_all())
        last_push = None
        if connected and self.fleet is not None:
            wanted, reached, last_reach = sorted(connected), 0, time.monotonic()
            while reached < len(wanted) and time.monotonic() - last_reach <= PUSH_GRACE:
                before, (reached, last_push) = reached, self.fleet.progress(key, wanted)
                last_reach = time.monotonic() if reached != before else last_reach
                time.sleep(0.01)
            if reached < len(wanted):
                last_push = None  # some were lost: no "last push"
        time.sleep(DUPLICATE_GRACE if connected else 0)
        pushes = self.fleet.pushes(key) if self.fleet is not None and connected else {}
        return {
            "label": label,
            "sends": len(user_ids),
            "connected": len(connected),
            "first_to_last_return_s": round(ended - began, 4),
            "first_to_last_push_s": round(last_push - began, 4) if last_push is not None else None,
            "push_lost": len(connected - set(pushes)),
            "push_duplicates": sum(len(t) - 1 for t in pushes.values()),
        }

    def warm_layer(self) -> None:
        """One gather of a chunk's width to empty groups: the loop's Redis connections open (not timed)."""
        from channels.layers import get_channel_layer

        from delivery.websocket import run
        from pipeline.conf import notiflow_settings

        layer = get_channel_layer()
        assert layer is not None
        message = self.fake("warmup")

        async def send_all() -> None:
            width = int(notiflow_settings.AUDIENCE_CHUNK_SIZE)
            await asyncio.gather(*(layer.group_send(f"fanout.warmup.{i}", message) for i in range(width)))

        run(send_all())

    def baselines(self, size: int, group: Roster) -> None:
        print(f"baseline {size:,}: raw group_send to every recipient, then to the connected ones ...", flush=True)
        connected = set(group.connected)
        every = self.group_sends(label=f"{size}-all", user_ids=group.members, connected=connected)
        only = self.group_sends(label=f"{size}-connected", user_ids=group.connected, connected=connected)
        for row in (every, only):
            row["size"] = size
            self.results["baselines"].append(row)
        print(f"   all {every}\n   connected {only}", flush=True)

    # -- broadcast cost -----------------------------------------------------
    def broadcast_cost(self, size: int, connected: int) -> None:
        group = self.groups[f"cost-{size}-{connected}"]
        before = commandstats(self.redis)
        began = time.monotonic()
        run = self.announce(label=f"cost {size}:{connected}", group=group)
        after = commandstats(self.redis)
        length = time.monotonic() - began
        print(f"   idle for {length:.1f} s (the correction) ...", flush=True)
        time.sleep(length)
        idle = commandstats_delta(commandstats(self.redis), after)
        work = commandstats_delta(after, before)
        net = _minus(work, idle)
        result = {
            "recipients": size,
            "connected": connected,
            "interval_s": round(length, 2),
            "net": net,
            "work": work,
            "idle": idle,
            "pushes_received": connected - run["push_lost"] + run["push_duplicates"],
            "new_connections": run["redis"]["new_connections"],
            "run": run,
        }
        self.results["cost"].append(result)
        print(
            f"   net: group_sends {net['group_sends']}, channel messages {net['channel_messages']}, "
            f"commands {net['commands']}, {net['usec']} µs",
            flush=True,
        )

    # -- report -------------------------------------------------------------
    def growth(self) -> list[dict[str, Any]]:
        """Each figure at each size over the same figure at the next smaller size (``Audience.role`` runs)."""
        runs = {r["recipients"]: r for r in self.results["runs"] if r["audience"] == "role"}
        base = {(b["size"], b["label"].rsplit("-", 1)[1]): b for b in self.results["baselines"]}
        out = []
        sizes = sorted(runs)
        for small, large in itertools.pairwise(sizes):
            figures = {f: (runs[small][f], runs[large][f]) for f in ("stored_s", "last_push_s", "recorded_s")}
            for kind in ("all", "connected"):
                if (small, kind) in base and (large, kind) in base:
                    figures[f"baseline {kind}: first → last return"] = (
                        base[small, kind]["first_to_last_return_s"],
                        base[large, kind]["first_to_last_return_s"],
                    )
            for figure, (a, b) in figures.items():
                grown = ratio(b, a)
                out.append(
                    {
                        "figure": figure,
                        "from": small,
                        "to": large,
                        "growth": grown,
                        "audience_growth": round(large / small, 3),
                        "within_target": None if grown is None else grown <= GROWTH_TARGET * large / small,
                    }
                )
        return out

    def series(self) -> dict[str, list[list[float | None]]]:
        """For a plot of time against audience size: ``{figure: [[recipients, seconds], ...]}`` of the
        ``Audience.role`` runs and of the baselines (``baseline all``/``baseline connected``: first -> last return)."""
        out: dict[str, list[list[float | None]]] = {}
        for r in self.results["runs"]:
            if r["audience"] == "role":
                for figure in ("stored_s", "last_push_s", "recorded_s"):
                    out.setdefault(figure, []).append([r["recipients"], r[figure]])
        for b in self.results["baselines"]:
            kind = b["label"].rsplit("-", 1)[1]
            out.setdefault(f"baseline {kind}", []).append([b["size"], b["first_to_last_return_s"]])
        return out

    def tables(self) -> dict[str, list[list[str]]]:
        """Markdown-ready rows: ``figures`` (notiflow, baseline, ratio), ``growth`` and ``cost``."""

        def s(value: float | None, digits: int = 3) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        base = {(b["size"], b["label"].rsplit("-", 1)[1]): b for b in self.results["baselines"]}
        figures: list[list[str]] = []
        for r in self.results["runs"]:
            who = f"{r['recipients']:,} ({r['audience']}), {r['connected']:,} connected"
            every, only = base.get((r["recipients"], "all")), base.get((r["recipients"], "connected"))
            pairs: list[tuple[str, float | None, str, float | None]] = [
                ("1. stored (s)", r["stored_s"], "-", None),
                (
                    "2. last push (s)",
                    r["last_push_s"],
                    "group_send to the connected → last push",
                    only["first_to_last_push_s"] if only else None,
                ),
                (
                    "3. recorded (s)",
                    r["recorded_s"],
                    f"{r['recipients']:,} group_sends, first → last return",
                    every["first_to_last_return_s"] if every else None,
                ),
                (
                    "3. recorded (s)",
                    r["recorded_s"],
                    f"{r['connected']:,} group_sends, first → last return",
                    only["first_to_last_return_s"] if only else None,
                ),
            ]
            for figure, value, what, baseline in pairs:
                if baseline is None and what != "-":
                    continue
                q = ratio(value, baseline)
                figures.append([who, figure, s(value), what, s(baseline), s(q)])
            lost = f"{r['push_lost']} / {r['push_duplicates']} / {r['push_strays']}"
            figures.append([who, "pushes lost / duplicated / strays", lost, "-", "-", "-"])
        growth = [
            [
                g["figure"],
                f"{g['from']:,} → {g['to']:,}",
                s(g["growth"], 2),
                s(g["audience_growth"], 1),
                "-" if g["within_target"] is None else ("yes" if g["within_target"] else "NO"),
            ]
            for g in self.results.get("growth", [])
        ]
        cost = []
        for c in self.results["cost"]:
            net = c["net"]
            cost.append(
                [
                    f"{c['recipients']:,} / {c['connected']:,}",
                    str(net["group_sends"]),
                    str(net["channel_messages"]),
                    str(c["pushes_received"]),
                    f"{net['zrange']} / {net['eval']} / {net['evalsha']}",
                    str(net["commands"]),
                    str(net["usec"]),
                    s(ratio(net["group_sends"], c["recipients"]), 3),
                    s(ratio(net["group_sends"], c["connected"]), 2),
                ]
            )
        return {"figures": figures, "growth": growth, "cost": cost}

    def report(self) -> str:
        env = self.results.get("environment", {})
        head = (
            f"notiflow fan-out, {self.args.db}: {env.get('database', '?')}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, commit {env.get('commit', '?')}, {self.results.get('seconds', 0):.0f} s in all"
        )
        headers = {
            "figures": ["audience", "figure", "notiflow", "baseline", "baseline value", "notiflow ÷ baseline"],
            "growth": ["figure", "audience", "time growth", "audience growth", f"≤ {GROWTH_TARGET} × audience growth"],
            "cost": [
                "announcement: recipients / connected",
                "group_sends",
                "channel messages",
                "pushes received",
                "ZRANGE / EVAL / EVALSHA",
                "Redis commands",
                "Redis µs",
                "group_sends ÷ recipients",
                "group_sends ÷ connected",
            ],
        }
        lines = [head]
        for name, rows in self.tables().items():
            if not rows:
                continue
            header = headers[name]
            lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)

    def losses(self) -> int:
        runs = self.results["runs"] + [c["run"] for c in self.results["cost"]]
        return sum(r["push_lost"] + r["push_duplicates"] + r["push_strays"] for r in runs)

    def measure(self) -> None:
        a = self.args
        self.warm_up()
        for size in a.sizes:
            group = self.groups[str(size)]
            if size <= a.baseline_up_to:
                self.baselines(size, group)
            self.results["runs"].append(self.announce(label=f"{size:,} role", group=group))
            if size in a.users_audience:
                self.results["runs"].append(self.announce(label=f"{size:,} users", group=group, users=True))
        self.results["growth"] = self.growth()
        self.results["series"] = self.series()
        for size, connected in a.cost:
            self.broadcast_cost(size, connected)

    def run(self) -> int:
        started = time.monotonic()
        out = Path(self.args.out)
        try:
            self.setup()
            self.measure()
        except BaseException as exc:  # reported with the partial figures; the processes are stopped below
            self.results["error"] = f"{type(exc).__name__}: {exc}"
            print(f"\nfanout failed: {self.results['error']}\n(process output: {self.var_dir / 'stack.log'})")
            if not isinstance(exc, Exception):
                raise  # SIGTERM (SystemExit), Ctrl-C: stop the processes, write the JSON, then leave
        finally:
            self.teardown()
            self.results["seconds"] = round(time.monotonic() - started, 1)
            self.results["tables"] = self.tables()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        print("\n" + self.report() + f"\n\nAll figures: {out}", flush=True)
        return 1 if "error" in self.results or self.losses() else 0


def _cost_pair(text: str) -> tuple[int, int]:
    size, _, connected = text.partition(":")
    try:
        pair = int(size), int(connected)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected <recipients>:<connected>, e.g. 307:3; got {text!r}") from None
    if pair[0] < 1 or not 0 <= pair[1] <= pair[0]:
        raise argparse.ArgumentTypeError(f"need recipients >= 1 and 0 <= connected <= recipients; got {text!r}")
    return pair


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="the database (sqlite)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="audience sizes")
    parser.add_argument("--connected", type=int, default=1000, help="users holding a WebSocket (default 1000)")
    parser.add_argument(
        "--sockets-up-to", type=int, default=10000, help="larger audiences have no socket (default 10000)"
    )
    parser.add_argument(
        "--users-audience",
        type=int,
        nargs="*",
        default=None,
        help="sizes run again with Audience.users(*ids) (default: the largest with sockets; none: skip)",
    )
    parser.add_argument(
        "--cost",
        type=_cost_pair,
        nargs="*",
        default=None,
        help="recipients:connected of each broadcast-cost announcement (default 307:3 and the largest with sockets)",
    )
    parser.add_argument(
        "--baseline-up-to", type=int, default=10000, help="raw group_send baselines for sizes up to this (10000)"
    )
    parser.add_argument("--connect-concurrency", type=int, default=50, help="handshakes in flight (default 50)")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="database poll interval in ms (default 25)")
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="a run fails after this long idle (60)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default var/bench/fanout-<db>.json)")
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    if args.out is None:
        args.out = ROOT / "var" / "bench" / f"fanout-{args.db}.json"
    if args.sizes[0] < 1 or args.connected < 0:
        parser.error("sizes must be positive and --connected not negative")
    with_sockets = [s for s in args.sizes if s <= args.sockets_up_to]
    largest = max(with_sockets, default=None)
    if args.users_audience is None:
        args.users_audience = [largest] if largest else []
    if set(args.users_audience) - set(args.sizes):
        parser.error("--users-audience sizes must be among --sizes")
    if args.cost is None:
        args.cost = [(307, min(3, args.connected))]
        if largest:
            args.cost.append((largest, min(args.connected, largest)))
    if any(k > args.connected for _, k in args.cost):
        parser.error("a --cost pair has more connected users than --connected")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"signal {signum}")  # so that every process is stopped on the way out

    signal.signal(signal.SIGTERM, on_term)
    return Fanout(args).run()


if __name__ == "__main__":
    sys.exit(main())
