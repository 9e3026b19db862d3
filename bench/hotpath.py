"""The pipeline's hot path: throughput, latency and emit cost, each against a raw baseline from the same run.

    python -m bench.hotpath --db sqlite
    python -m bench.hotpath --db postgres --events 300 --baseline-tasks 500 --latency-samples 50

It starts a private stack with :class:`webapp.stack.Stack` in
``var/bench/hotpath-<db>`` (emptied first): the ``Procfile``'s redis, smtp,
web (daphne), worker (2 pool processes) and beat, each under its own honcho,
with ``webapp.settings.prod`` (DEBUG off, throw-away secrets); with ``--db postgres`` also a private
PostgreSQL (:class:`webapp.postgres.PrivatePostgres`, in ``postgres/`` of
that folder). The worker also loads ``bench.noop`` (``WORKER_OPTIONS=
--include=bench.noop``), a task whose only work is one ``os.write()`` of its
completion time: the baseline. This process migrates, creates ``bob`` (the
recipient) and ``alice`` (the actor), and holds one real WebSocket to the
relay as bob (``websockets``; a JWT offered as the ``jwt.<token>``
subprotocol), reading frames on a background thread and recording each
``notification`` frame's arrival time by ``notification.event_id``.

Every event is ``emit_event(event_type="critique.created", audience=[bob],
actor=alice, data=...)``, outside any transaction: one recipient; in-app,
WebSocket and email. Its ``data["artwork_title"]`` is ``"hotpath <tag>"``,
which the email subject carries, so each email is matched to its event.

Phases (seconds from ``time.time()``/``time.perf_counter()`` in this
process; completion times of no-op tasks are written by the worker, email
arrival times are the Maildir files' modification times):

a. **baseline**: ``--baseline-tasks`` ``bench.noop`` published with
   ``app.send_task(..., queue="events")`` while the worker is stopped, then
   the worker started: (n - 1) / (first -> last completion). Then as many
   published while the worker runs: n / (first publish -> last completion).
b. **sustained**: ``--events`` emitted back to back while the worker runs.
   End = the latest of: last push received, last email in the SMTP
   server's Maildir, the moment ``Delivery.objects.filter(status="sent")``
   reached 2 per event (``--deliveries-per-event``; polled every 0.1 s, and every 0.01 s once every push
   and email is in: the last records come within tens of milliseconds of
   the last email, and a 0.1 s poll added 0 to 0.1 s, up to 5 % of a run,
   to the end). events/s = n / (first emit ->
   end); the emit loop alone in calls/s against the no-op publish loop's.
   Lost and duplicate pushes, emails and notifications are counted.
   ``--prefilled-events`` (default 0: skipped) adds the same with the worker
   stopped while emitting: (n - 1) / (first -> last delivery).
   ``--rounds N`` runs a and b N times, alternating (a, b, a, b, ...): on a
   shared machine whose speed drifts from one minute to the next (the
   development machine's pre-filled no-op rate ranged from 642 to 1,308
   tasks/s between runs of one session), each ratio then divides figures
   taken seconds apart. The round whose events/s ÷ pre-filled no-op
   tasks/s is the median is reported as ``baseline`` and ``sustained``
   (and sets d's rate); every round's figures are under ``rounds``.
c. **latency, idle**: ``--latency-samples`` events one at a time (each waits
   for its push, then 5-15 ms), emit -> push p50/p99/max in ms. Baselines:
   a raw channel layer ``group_send`` of a ``notify.push`` message (a fake
   notification with a cursor far above any real one, so the consumer's
   dedupe by cursor lets it through) to ``user.<bob>`` -> received on the
   same socket (sent on the socket thread's event loop, its Redis
   connection warm), and ``bench.noop`` publish -> its written completion.
d. **latency at half load**: emits paced at half of b's rate for
   ``--half-load-seconds``; emit -> push (and emit -> email) p50/p99/max.
e. **emit cost**: ``--emit-samples`` calls of ``emit_event()`` in this
   process with the worker running and idle (each waits for its push and
   email) against as many bare ``bench.noop.apply_async()`` calls (each
   waits for its completion), interleaved: p50/p99/max in ms. A third
   series is the database's floor: a one-row ``INSERT`` of an event-sized
   text, autocommit (on PostgreSQL its commit waits for the WAL flush), into
   a table with only a primary key, made for the phase and dropped after.

It prints a table (notiflow, baseline, ratio) and writes every figure as
JSON to ``--out`` (default ``var/bench/hotpath-<db>.json``), also when a
phase fails (``"error"``); the raw samples of c and d, in ms, go under
``samples_ms`` (for ``bench.plots``). A phase that stops making progress for
``--stall-seconds`` fails with what did not arrive; pushes missing once every
delivery is recorded ``sent`` are counted lost (a Redis channel layer is
at-most-once). Exit status 1 on failure or when a notification or an email
was lost or duplicated. Only ``emit_event()``, the ``Delivery`` and
``Notification`` models, the Maildir and the socket are relied on, so a
rebuilt pipeline is measured the same way. The methodology (pre-filled and
concurrent no-op baselines, the no-op's written completion time, half-load
latency) follows the peer benchmark in ``shared/peers/django-notifs``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.cpu import CpuMeter, per_unit_ms

if TYPE_CHECKING:
    from webapp.postgres import PrivatePostgres
    from webapp.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
# Production settings (DEBUG off: with DEBUG on, Django records every query, which no deployment pays),
# with throw-away secrets; the baseline runs on the same worker with the same settings.
SETTINGS_MODULE = "webapp.settings.prod"
BENCH_SECRETS = {  # long enough for webapp.settings.prod's checks (50 and 32 characters)
    "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-use-anywhere-but-a-benchmark",
    "NOTIFLOW_JWT_SECRET": "bench-only-jwt-key-not-for-use-anywhere",
}
EVENT_TYPE = "critique.created"
#: Cursors of the fake pushes (phase c's baseline): far above any real notification's.
FAKE_CURSOR_BASE = 10**15
#: The bench's own table for the emit-cost floor (phase e), created and dropped by it.
FLOOR_TABLE = "notiflow_bench_floor"
#: Seconds to wait for one sample (a push, an email, a no-op completion) before counting it lost.
SAMPLE_TIMEOUT = 10.0
#: Seconds to wait for pushes still missing once every delivery is recorded sent.
PUSH_GRACE = 5.0
#: Seconds between polls of a phase's progress (the Maildir, the socket's arrivals, the deliveries recorded sent),
#: and between polls of the records alone once every push and email has arrived.
POLL = 0.1
POLL_CLOSE = 0.01
#: Seconds to wait after a phase completed, to catch duplicates arriving late.
DUPLICATE_GRACE = 1.0
SUBJECT_TAG = re.compile(r"hotpath ([a-z]+-\d+)")


def _cumulative(times: list[float], t0: float, *, step: float) -> list[int]:
    """How many of ``times`` (epoch seconds) fall before ``t0 + step``, ``t0 + 2 * step``, ... up to the last."""
    ordered = sorted(times)
    counts: list[int] = []
    while ordered and (not counts or counts[-1] < len(ordered)):
        counts.append(bisect.bisect_left(ordered, t0 + (len(counts) + 1) * step))
    return counts


class BenchError(RuntimeError):
    """A phase could not complete: what did not arrive, and where to look."""


def bench_mail_dir(var_dir: Path) -> Path:
    """Where a benchmark's SMTP server keeps its Maildir: ``/dev/shm/notiflow-<var_dir's name>-<its hash>``
    (tmpfs; one per ``var_dir``, so two checkouts never share one) when there is a ``/dev/shm`` to write to,
    else ``var_dir/mail``.

    The SMTP server stands in for a provider, whose disk is not on the
    machine being measured, and writes one file per email. Creating a file on
    the development machine's ext4 costs from 0.04 to 0.58 ms of CPU depending
    on the folder it lands in (1,000 files in each of five new folders, three
    rounds, 2026-12-07), against 0.02 ms on tmpfs: a lottery of up to a
    tenth of the whole stack's CPU per event between one run and the next.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"notiflow-{var_dir.name}-{zlib.crc32(str(var_dir.resolve()).encode()):08x}"
    return var_dir / "mail"


def paced(count: int, rate: float, call: Callable[[int], object]) -> None:
    """Call ``call(i)`` for ``i`` in ``range(count)``, the i-th ``i / rate`` seconds after the first (a call
    that runs late is followed at once by those already due)."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        call(i)


# -- figures ----------------------------------------------------------------------------------------------------------


def postgres_setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--postgres-setting`` (an ``argparse`` type)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def postgres_settings(args: argparse.Namespace) -> dict[str, str]:
    """The private PostgreSQL's server settings given with ``--postgres-setting`` (none: the defaults)."""
    return dict(getattr(args, "postgres_setting", None) or [])


def postgres_setting_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-setting",
        type=postgres_setting,
        action="append",
        metavar="NAME=VALUE",
        help="a server setting of the private PostgreSQL over its defaults (repeatable), e.g. "
        "checkpoint_timeout=30min; recorded in the JSON's environment",
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ms_summary(seconds: Sequence[float]) -> dict[str, float]:
    """``{"n", "p50_ms", "p99_ms", "max_ms", "mean_ms"}`` of durations given in seconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2) if seconds else math.nan,
        "mean_ms": round(sum(seconds) / len(seconds) * 1000, 2) if seconds else math.nan,
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or not baseline or math.isnan(value) or math.isnan(baseline):
        return None
    return round(value / baseline, 3)


# -- the WebSocket client ---------------------------------------------------------------------------------------------


class SocketRecorder:
    """One WebSocket to the relay, read on a background thread with its own event loop.

    Every ``notification`` frame is recorded by ``notification["event_id"]``
    with its arrival times ``(time.time(), time.perf_counter())``, taken as
    soon as the frame is received (before parsing it).
    """

    def __init__(self, *, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.pushes: dict[str, list[tuple[float, float]]] = {}
        self.frame_types: Counter[str] = Counter()
        self.hello: dict[str, Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ended: str | None = None  # why the socket is gone, once it is
        self._ws: Any = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._main, name="hotpath-socket", daemon=True)

    def start(self, *, timeout: float = 15.0) -> dict[str, Any]:
        """Connect and return the ``hello`` frame; raise :class:`BenchError` if it does not come in ``timeout`` s."""
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self.hello is not None or self.ended is not None, timeout)
        if self.hello is None:
            raise BenchError(f"no hello frame from {self.url} in {timeout:.0f} s ({self.ended or 'no answer'})")
        return self.hello

    def _main(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # reported through .ended to whoever waits
            with self._cond:
                self.ended = f"{type(exc).__name__}: {exc}"
                self._cond.notify_all()

    async def _read(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        protocols = [Subprotocol("notiflow"), Subprotocol(f"jwt.{self.token}")]
        async with connect(self.url, subprotocols=protocols, open_timeout=10, max_size=2**20) as ws:
            self.loop, self._ws = asyncio.get_running_loop(), ws
            async for raw in ws:
                wall, perf = time.time(), time.perf_counter()
                frame = json.loads(raw)
                kind = str(frame.get("type"))
                with self._cond:
                    self.frame_types[kind] += 1
                    if kind == "notification":
                        key = str(frame.get("notification", {}).get("event_id"))
                        self.pushes.setdefault(key, []).append((wall, perf))
                    elif kind == "hello":
                        self.hello = frame
                    self._cond.notify_all()
            with self._cond:
                self.ended = f"closed by the server (code {ws.close_code}, reason {ws.close_reason!r})"
                self._cond.notify_all()

    def counts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many pushes each of ``keys`` has had."""
        with self._cond:
            return {k: len(self.pushes.get(k, [])) for k in keys}

    def first(self, key: str) -> tuple[float, float] | None:
        """``(wall, perf)`` of the first push of ``key``, or ``None``."""
        with self._cond:
            got = self.pushes.get(key)
            return got[0] if got else None

    def arrived(self, keys: Iterable[str]) -> int:
        """How many of ``keys`` have had at least one push."""
        with self._cond:
            return sum(1 for k in keys if k in self.pushes)

    def wait(self, key: str, *, timeout: float) -> tuple[float, float] | None:
        """Block until ``key`` has a push; its first ``(wall, perf)``, or ``None`` after ``timeout`` s.

        Raises :class:`BenchError` if the socket is gone."""
        with self._cond:
            self._cond.wait_for(lambda: key in self.pushes or self.ended is not None, timeout)
            if key in self.pushes:
                return self.pushes[key][0]
            if self.ended is not None:
                raise BenchError(f"the WebSocket is gone: {self.ended}")
            return None

    def submit(self, coro: Any) -> None:
        """Schedule ``coro`` on the socket's event loop (where a channel layer keeps its Redis connection warm)."""
        if self.loop is None:
            raise BenchError("the WebSocket is not connected")
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop is not None and self._ws is not None and self.ended is None:
            future = asyncio.run_coroutine_threadsafe(self._ws.close(), self.loop)
            with contextlib.suppress(Exception):  # the socket may be gone already
                future.result(timeout=5)
        self._thread.join(timeout=5)


# -- the SMTP server's Maildir and the no-op completion files --------------------------------------------------------


_SUBJECT_FIELD = re.compile(rb"^Subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def subject_read(raw: bytes) -> str:
    """The decoded ``Subject`` of the email ``raw`` (RFC 5322 bytes), ``""`` if it has none.

    Only the header section is looked at, and only that field is unfolded and
    decoded (RFC 2047 words, by :func:`email.header.decode_header`): the
    benchmark reads every email the pipeline sends, on the machine it
    measures, and ``email.parser.BytesHeaderParser(policy=policy.default)``
    cost 0.33 ms of the benchmark's CPU per email (1,000 of notiflow's emails,
    2026-12-07), a twelfth of the whole stack's CPU per event on PostgreSQL.
    """
    end = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    header = raw[: min(i for i in (end, crlf, len(raw)) if i >= 0)]
    match = _SUBJECT_FIELD.search(header)
    if match is None:
        return ""
    value = re.sub(rb"\r?\n(?=[ \t])", b"", match.group(1)).decode("ascii", "surrogateescape")
    return str(make_header(decode_header(value)))


class MailWatcher:
    """The emails in a Maildir (``new/`` and ``cur/``), by the ``hotpath <tag>`` their subject carries.

    ``by_tag[tag]`` is the arrival times (file modification times, epoch
    seconds) of that tag's emails; :meth:`scan` reads only files not seen yet.
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.by_tag: dict[str, list[float]] = {}
        self.unmatched = 0
        self._seen: set[str] = set()

    def scan(self) -> int:
        """Read the emails that arrived since the last scan; return how many."""
        new = 0
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(self.maildir / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name in self._seen or not entry.is_file():
                    continue
                try:
                    arrived = entry.stat().st_mtime
                    with open(entry.path, "rb") as f:
                        subject = subject_read(f.read())
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile: seen on the next scan
                    continue
                self._seen.add(entry.name)
                new += 1
                match = SUBJECT_TAG.search(subject)
                if match:
                    self.by_tag.setdefault(match.group(1), []).append(arrived)
                else:
                    self.unmatched += 1
        return new

    def arrived(self, tags: Iterable[str]) -> int:
        return sum(1 for t in tags if t in self.by_tag)

    def wait(self, tag: str, *, timeout: float) -> float | None:
        """Poll (every 10 ms) until ``tag``'s email is in; its arrival time, or ``None`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while tag not in self.by_tag:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
            self.scan()
        return self.by_tag[tag][0]


class NoopLog:
    """The completion times ``bench.noop`` writes, one file per pool process (``noop-<pid>.log``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}

    def read_new(self) -> list[float]:
        """The completion times (epoch seconds) written since the last call."""
        times: list[float] = []
        for path in sorted(self.folder.glob("noop-*.log")):
            with open(path, "rb") as f:
                f.seek(self._offsets.get(path, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = self._offsets.get(path, 0) + end
            times.extend(float(line) for line in data[:end].split())
        return times

    def wait(self, count: int, *, stall: float, what: str, interval: float = 0.05) -> list[float]:
        """Collect ``count`` new completions; raise :class:`BenchError` when none comes for ``stall`` s."""
        got: list[float] = []
        last_progress = time.monotonic()
        while len(got) < count:
            new = self.read_new()
            if new:
                got.extend(new)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall:
                raise BenchError(
                    f"{what}: {len(got)} of {count} bench.noop completions after {stall:.0f} s without a new one "
                    f"(files in {self.folder}; is the worker running with --include=bench.noop?)"
                )
            else:
                time.sleep(interval)
        return got


# -- the benchmark ----------------------------------------------------------------------------------------------------


def _database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            return f"SQLite {cursor.fetchone()[0]}"
    return connection.vendor


@dataclass
class Emitted:
    """The events of one phase: ids, tags, emit times (wall and perf, just before each call) and call costs (s)."""

    ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    perf: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)


class HotPath:
    """One run of the benchmark: :meth:`run` sets up, runs the phases, tears down, reports; its exit status."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        }
        self.var_dir = ROOT / "var" / "bench" / f"hotpath-{args.db}"
        self.stack: Stack | None = None
        self.postgres: PrivatePostgres | None = None
        self.recorder: SocketRecorder | None = None
        self.mail: MailWatcher | None = None
        self.noops: NoopLog | None = None
        self.bob_id = 0
        self.alice_id = 0
        self.app: Any = None
        self.tag_counter: Counter[str] = Counter()
        self.cpu = CpuMeter()

    # -- set-up -----------------------------------------------------------
    def setup(self) -> None:
        from webapp.stack import Stack

        noop_dir = self.var_dir / "noop"
        peer = getattr(self.args, "peer_settings", False)  # bench.soak reuses this set-up without the option
        drop_every = getattr(self.args, "drop_pushes", 0)
        gap_wait = getattr(self.args, "gap_wait", None)
        settings_module = "bench.lossy_settings" if drop_every else SETTINGS_MODULE
        self.stack = stack = Stack(
            var_dir=self.var_dir,
            mail_dir=bench_mail_dir(self.var_dir),
            processes=("redis", "smtp", "web", "worker", "beat"),
            settings_module=settings_module,
            extra_env={
                "DJANGO_SETTINGS_MODULE": settings_module,
                **({"NOTIFLOW_BENCH_DROP_EVERY": str(drop_every)} if drop_every else {}),
                **({"NOTIFLOW_WS_GAP_WAIT": str(gap_wait)} if gap_wait is not None else {}),
                **BENCH_SECRETS,
                "WORKER_OPTIONS": "--include=bench.noop"
                + (" --loglevel=WARNING" if getattr(self.args, "peer_settings", False) else ""),
                "CELERY_TASK_EVENTS": "false" if peer else "true",
                "NOTIFLOW_BENCH_NOOP_DIR": str(noop_dir),
                "DATABASE_URL": f"sqlite:///{self.var_dir / 'db.sqlite3'}",
            },
        )
        stack.prepare(fresh=True)
        noop_dir.mkdir()
        if self.args.db == "postgres":
            print(f"Starting PostgreSQL in {self.var_dir / 'postgres'} ...", flush=True)
            self.postgres = stack.use_postgres(settings=postgres_settings(self.args))
            self.cpu.postgres_dir = str(self.var_dir / "postgres")
        stack.apply_env()
        stack.manage("migrate", "--noinput", "-v", "0")
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        users = get_user_model().objects
        self.bob_id = users.create_user(username="bob", email="bob@example.com").pk
        self.alice_id = users.create_user(username="alice", email="alice@example.com").pk
        self.results["environment"] = self._environment()
        print(f"Starting redis, smtp, web, worker, beat in {self.var_dir} ...", flush=True)
        stack.start(log_to=self.var_dir / "stack.log", separately=True)
        stack.wait_ready(timeout=120)
        from webapp.tokens import token_issue
        from worker import app

        self.app = app
        self.mail = MailWatcher(stack.mail_dir)
        self.noops = NoopLog(noop_dir)
        self.recorder = SocketRecorder(
            url=f"{stack.ws_url}/ws/notifications/", token=token_issue(user_id=self.bob_id, ttl=24 * 3600)
        )
        self.recorder.start()

    def _environment(self) -> dict[str, Any]:
        from django.db import connection

        connect: list[float] = []
        for _ in range(20):
            connection.close()
            began = time.perf_counter()
            connection.ensure_connection()
            connect.append(time.perf_counter() - began)
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
            "database_connect": ms_summary(connect),
            "settings": "bench.lossy_settings" if getattr(self.args, "drop_pushes", 0) else SETTINGS_MODULE,
            "drop_pushes": getattr(self.args, "drop_pushes", 0),
            "postgres_settings": postgres_settings(self.args) if self.args.db == "postgres" else {},
            "gap_wait": getattr(self.args, "gap_wait", None),
            # The worker settings the peer benchmark (django-notifs) uses: task events off, WARNING logs.
            "worker": "peer settings: no task events, WARNING"
            if getattr(self.args, "peer_settings", False)
            else "Procfile: task events, INFO",
        }

    def teardown(self) -> None:
        """Close the socket, stop every process of the stack, then PostgreSQL (each only if started)."""
        if self.recorder is not None:
            self.recorder.stop()
        if self.stack is not None:
            for name in ("beat", "worker", "web", "smtp"):  # Redis last, so no process logs a lost broker
                self.stack.stop_process(name)
            self.stack.stop()
            if not self.stack.mail_dir.is_relative_to(self.var_dir):  # in memory: counted, no longer needed
                shutil.rmtree(self.stack.mail_dir, ignore_errors=True)
        if self.postgres is not None:
            self.postgres.stop()

    # -- helpers ----------------------------------------------------------
    @property
    def running(self) -> Stack:
        assert self.stack is not None
        return self.stack

    @property
    def rec(self) -> SocketRecorder:
        assert self.recorder is not None
        return self.recorder

    @property
    def mailbox(self) -> MailWatcher:
        assert self.mail is not None
        return self.mail

    @property
    def noop_log(self) -> NoopLog:
        assert self.noops is not None
        return self.noops

    def emit(self, phase: str, into: Emitted) -> str:
        """One event to bob from alice; recorded in ``into``. Returns its id."""
        from pipeline import emit_event

        self.tag_counter[phase] += 1
        tag = f"{phase}-{self.tag_counter[phase]}"
        data = {
            "artwork_id": 1,
            "artwork_title": f"hotpath {tag}",
            "excerpt": f"A benchmark critique ({tag}): the light on the water is lovely.",
        }
        wall, perf = time.time(), time.perf_counter()
        event_id = emit_event(event_type=EVENT_TYPE, audience=[self.bob_id], actor=self.alice_id, data=data)
        into.cost.append(time.perf_counter() - perf)
        into.ids.append(str(event_id))
        into.tags.append(tag)
        into.wall.append(wall)
        into.perf.append(perf)
        return str(event_id)

    def sent_count(self) -> int:
        from pipeline.models import Delivery

        return Delivery.objects.filter(status="sent").count()

    def wait_delivered(self, phase: str, emitted: Emitted, *, sent_target: int) -> dict[str, Any]:
        """Poll until every push and email of ``emitted`` arrived and ``sent_target`` deliveries are ``sent``.

        Pushes still missing ``PUSH_GRACE`` s after everything else is in are
        given up on (the tally counts them lost). Returns ``{"first_push",
        "last_push", "first_email", "last_email", "deliveries_sent_at"}``
        (epoch seconds; ``None`` for what never came). Raises
        :class:`BenchError` after ``--stall-seconds`` without progress, or if
        the socket is gone.
        """
        stall = self.args.stall_seconds
        n = len(emitted.ids)
        sent_at: float | None = None
        last_state: tuple[int, int, int] | None = None
        last_progress = time.monotonic()
        only_pushes_missing_since: float | None = None
        while True:
            self.mailbox.scan()
            sent = self.sent_count()
            if sent_at is None and sent >= sent_target:
                sent_at = time.time()
            pushes, emails = self.rec.arrived(emitted.ids), self.mailbox.arrived(emitted.tags)
            state = (pushes, emails, sent)
            if state != last_state:
                last_state, last_progress = state, time.monotonic()
            if pushes == n and emails == n and sent_at is not None:
                break
            if emails == n and sent_at is not None:
                # Every WebSocket delivery is recorded sent: a push not in by now was dropped on the way.
                only_pushes_missing_since = only_pushes_missing_since or time.monotonic()
                if time.monotonic() - only_pushes_missing_since > PUSH_GRACE:
                    break
            if self.rec.ended is not None:
                raise BenchError(f"{phase}: the WebSocket is gone: {self.rec.ended}")
            if time.monotonic() - last_progress > stall:
                missing_push = next((i for i in emitted.ids if self.rec.first(i) is None), None)
                missing_mail = next((t for t in emitted.tags if t not in self.mailbox.by_tag), None)
                raise BenchError(
                    f"{phase}: nothing new for {stall:.0f} s. Missing: {n - pushes} of {n} pushes"
                    f"{f' (first: event {missing_push})' if missing_push else ''}, {n - emails} of {n} emails"
                    f"{f' (first: subject tag {missing_mail!r})' if missing_mail else ''}; deliveries sent "
                    f"{sent} of {sent_target} needed. See {self.var_dir / 'stack.log'}."
                )
            # Once every push and email is in, only the records are awaited: poll them closely (POLL_CLOSE).
            time.sleep(POLL_CLOSE if pushes == n and emails == n else POLL)
        pushed = [p[0] for i in emitted.ids if (p := self.rec.first(i)) is not None]
        mailed = [self.mailbox.by_tag[t][0] for t in emitted.tags if t in self.mailbox.by_tag]
        return {
            "last_push": max(pushed) if pushed else None,
            "first_push": min(pushed) if pushed else None,
            "last_email": max(mailed) if mailed else None,
            "first_email": min(mailed) if mailed else None,
            "deliveries_sent_at": sent_at,
            "pushed": pushed,
            "mailed": mailed,
        }

    def tally(self, emitted: Emitted) -> dict[str, int]:
        """Lost and duplicate pushes, emails and notifications of ``emitted`` (after a short grace period)."""
        from pipeline.models import Notification

        time.sleep(DUPLICATE_GRACE)
        self.mailbox.scan()
        stored = Counter(
            str(e) for e in Notification.objects.filter(recipient_id=self.bob_id).values_list("event_id", flat=True)
        )
        pushes = self.rec.counts(emitted.ids)
        emails = {t: len(self.mailbox.by_tag.get(t, [])) for t in emitted.tags}
        out: dict[str, int] = {"events": len(emitted.ids)}
        for kind, counts in (
            ("push", list(pushes.values())),
            ("email", list(emails.values())),
            ("notification", [stored.get(i, 0) for i in emitted.ids]),
        ):
            out[f"{kind}_lost"] = sum(1 for c in counts if c == 0)
            out[f"{kind}_duplicates"] = sum(c - 1 for c in counts if c > 1)
        return out

    def push_latencies(self, emitted: Emitted) -> list[float]:
        return [
            p[1] - t for i, t in zip(emitted.ids, emitted.perf, strict=True) if (p := self.rec.first(i)) is not None
        ]

    def email_latencies(self, emitted: Emitted) -> list[float]:
        by_tag = self.mailbox.by_tag
        return [by_tag[tag][0] - t for tag, t in zip(emitted.tags, emitted.wall, strict=True) if tag in by_tag]

    def keep_samples(self, phase: str, **series: Sequence[float]) -> None:
        """Store raw durations (seconds) in the JSON as ``samples_ms[phase][name]``: ms, in sample order.

        Kept apart from the phase's own figures, which are printed as they are (``bench.plots`` draws the CDFs).
        """
        self.results.setdefault("samples_ms", {})[phase] = {
            name: [round(s * 1000, 3) for s in values] for name, values in series.items()
        }

    # -- phases -----------------------------------------------------------
    def phase_baseline(self) -> None:
        """a. Raw Celery no-op tasks/s on this worker: pre-filled queue, then published while it runs."""
        n = self.args.baseline_tasks
        stall = self.args.stall_seconds
        self.noop_log.read_new()
        print(f"a. baseline: {n} bench.noop pre-filled, then {n} published while the worker runs ...", flush=True)
        self.running.stop_process("worker")
        began = time.perf_counter()
        for _ in range(n):
            self.app.send_task("bench.noop", queue="events")
        prefill_publish = time.perf_counter() - began
        self.running.restart("worker")
        drained = sorted(self.noop_log.wait(n, stall=stall, what="baseline (pre-filled)"))
        cpu_before = self.cpu.snapshot()
        t0 = time.time()
        began = time.perf_counter()
        for _ in range(n):
            self.app.send_task("bench.noop", queue="events")
        publish = time.perf_counter() - began
        concurrent = sorted(self.noop_log.wait(n, stall=stall, what="baseline (concurrent)"))
        cpu = self.cpu.since(cpu_before)
        result = {
            "tasks": n,
            "prefilled_first_to_last_s": round(drained[-1] - drained[0], 3),
            "prefilled_tasks_per_s": round((n - 1) / (drained[-1] - drained[0]), 1),
            "prefilled_publish_per_s": round(n / prefill_publish, 1),
            "concurrent_first_publish_to_last_s": round(concurrent[-1] - t0, 3),
            "concurrent_tasks_per_s": round(n / (concurrent[-1] - t0), 1),
            "concurrent_publish_per_s": round(n / publish, 1),
            # CPU per task of the concurrent run, per process role (the bench's share is the publishing).
            "cpu_ms_per_task": per_unit_ms(cpu, n),
        }
        self.results["baseline"] = result
        print(f"   {result}", flush=True)

    def phase_sustained(self) -> None:
        """b. N events back to back while the worker runs."""
        n = self.args.events
        print(f"b. sustained: {n} events back to back ...", flush=True)
        sent0 = self.sent_count()
        emitted = Emitted()
        cpu_before = self.cpu.snapshot()
        t0 = time.time()
        for _ in range(n):
            self.emit("b", emitted)
        emit_s = time.time() - t0
        done = self.wait_delivered("sustained", emitted, sent_target=sent0 + self.args.deliveries_per_event * n)
        cpu = self.cpu.since(cpu_before)
        ends = [t for t in (done["last_push"], done["last_email"], done["deliveries_sent_at"]) if t is not None]
        end = max(ends)
        result = {
            "events": n,
            "started_at": t0,  # epoch seconds, to line the phase up with outside samplers (py-spy, top)
            "emit_loop_s": round(emit_s, 3),
            "emit_calls_per_s": round(n / emit_s, 1),
            "first_emit_to_end_s": round(end - t0, 3),
            "events_per_s": round(n / (end - t0), 1),
            "first_emit_to_last_push_s": round(done["last_push"] - t0, 3) if done["last_push"] else None,
            "first_emit_to_last_email_s": round(done["last_email"] - t0, 3) if done["last_email"] else None,
            "first_emit_to_deliveries_sent_s": round(done["deliveries_sent_at"] - t0, 3),
            "emit_cost": ms_summary(emitted.cost),
            "emit_to_push": ms_summary(self.push_latencies(emitted)),
            # How the deliveries arrived over time: pushes and emails in by each quarter second after the first
            # emit (which part of the run set its end: the pushes, or the emails behind them).
            "arrived_by_quarter_second": {
                kind: _cumulative(times, t0, step=0.25)
                for kind, times in (("push", done["pushed"]), ("email", done["mailed"]))
            },
            # CPU per event, per process role, from the first emit to the end (the bench: emitting, the socket,
            # the polling); the machine's budget per event at the no-op rate is cpus / (no-op tasks/s).
            "cpu_ms_per_event": per_unit_ms(cpu, n),
            **self.tally(emitted),
        }
        self.results["sustained"] = result
        print(f"   {result}", flush=True)

    def phases_rounds(self) -> None:
        """a and b ``--rounds`` times (once by default), alternating; the median round (by events/s ÷ pre-filled
        no-op tasks/s) becomes ``baseline`` and ``sustained``, every round goes under ``rounds``."""
        rounds = []
        for number in range(1, self.args.rounds + 1):
            if self.args.rounds > 1:
                print(f"round {number} of {self.args.rounds}", flush=True)
            self.phase_baseline()
            self.phase_sustained()
            baseline, sustained = self.results["baseline"], self.results["sustained"]
            rounds.append(
                {
                    "baseline": baseline,
                    "sustained": sustained,
                    "ratio_prefilled": round(sustained["events_per_s"] / baseline["prefilled_tasks_per_s"], 3),
                }
            )
        median = sorted(rounds, key=lambda r: r["ratio_prefilled"])[(len(rounds) - 1) // 2]
        self.results.update(baseline=median["baseline"], sustained=median["sustained"], rounds=rounds)
        if len(rounds) > 1:
            ratios = ", ".join(f"{r['ratio_prefilled']:.3f}" for r in rounds)
            print(f"   events/s ÷ pre-filled no-op tasks/s by round: {ratios}; median {median['ratio_prefilled']:.3f}")

    def phase_prefilled(self) -> None:
        """b'. N events emitted with the worker stopped, then the worker started: first -> last delivery."""
        n = self.args.prefilled_events
        print(f"b'. pre-filled: {n} events emitted with the worker stopped ...", flush=True)
        sent0 = self.sent_count()
        emitted = Emitted()
        self.running.stop_process("worker")
        for _ in range(n):
            self.emit("p", emitted)
        self.running.restart("worker")
        done = self.wait_delivered("pre-filled", emitted, sent_target=sent0 + self.args.deliveries_per_event * n)
        firsts = [t for t in (done["first_push"], done["first_email"]) if t is not None]
        lasts = [t for t in (done["last_push"], done["last_email"], done["deliveries_sent_at"]) if t is not None]
        span = max(lasts) - min(firsts)
        result = {
            "events": n,
            "first_to_last_delivery_s": round(span, 3),
            "events_per_s": round((n - 1) / span, 1) if span > 0 else None,
            **self.tally(emitted),
        }
        self.results["prefilled"] = result
        print(f"   {result}", flush=True)

    def phase_latency_idle(self) -> None:
        """c. One at a time: raw group_send -> socket, no-op publish -> completion, then emit -> push."""
        from channels.layers import get_channel_layer

        k = self.args.latency_samples
        print(f"c. latency, idle: {k} samples each of group_send, no-op and emit_event ...", flush=True)
        layer = get_channel_layer()
        assert layer is not None
        group = f"user.{self.bob_id}"

        def fake(i: int) -> dict[str, Any]:
            return {
                "type": "notify.push",
                "notification": {
                    "id": FAKE_CURSOR_BASE + i,
                    "event_id": f"fake-{i}",
                    "cursor": FAKE_CURSOR_BASE + i,
                    "event_type": EVENT_TYPE,
                    "category": "critiques",
                    "title": f"alice critiqued your artwork “hotpath fake-{i}”",
                    "body": f"alice wrote: “A benchmark critique (fake-{i}): the light on the water is lovely.”",
                    "data": {"artwork_id": 1, "artwork_title": f"hotpath fake-{i}", "excerpt": "A benchmark critique"},
                    "state": "unseen",
                    "created_at": datetime.now(UTC).isoformat(),
                },
            }

        # Warm up the layer's Redis connection on the socket's loop (not counted).
        self.rec.submit(layer.group_send(group, fake(0)))
        if self.rec.wait("fake-0", timeout=SAMPLE_TIMEOUT) is None:
            raise BenchError(
                f"latency: a raw notify.push group_send to {group} did not reach the socket in {SAMPLE_TIMEOUT:.0f} s "
                "(does the relay still relay 'notify.push' messages with a 'notification'?)"
            )
        layer_s: list[float] = []
        for i in range(1, k + 1):
            time.sleep(random.uniform(0.005, 0.015))
            began = time.perf_counter()
            self.rec.submit(layer.group_send(group, fake(i)))
            got = self.rec.wait(f"fake-{i}", timeout=SAMPLE_TIMEOUT)
            if got is not None:
                layer_s.append(got[1] - began)
        noop_s: list[float] = []
        self.noop_log.read_new()
        for _ in range(k):
            time.sleep(random.uniform(0.005, 0.015))
            began_wall = time.time()
            self.app.send_task("bench.noop", queue="events")
            done = self.noop_log.wait(1, stall=SAMPLE_TIMEOUT, what="latency (no-op)", interval=0.001)
            noop_s.append(done[0] - began_wall)
        emitted = Emitted()
        lost_in_a_row = 0
        for _ in range(k):
            time.sleep(random.uniform(0.005, 0.015))
            event_id = self.emit("c", emitted)
            if self.rec.wait(event_id, timeout=SAMPLE_TIMEOUT) is None:
                lost_in_a_row += 1
                if lost_in_a_row >= 3:
                    raise BenchError(f"latency: 3 pushes in a row did not arrive in {SAMPLE_TIMEOUT:.0f} s each")
            else:
                lost_in_a_row = 0
        self.mailbox.wait(emitted.tags[-1], timeout=SAMPLE_TIMEOUT)
        push_s = self.push_latencies(emitted)
        result = {
            "emit_to_push": ms_summary(push_s),
            "group_send_to_push": ms_summary(layer_s),
            "noop_publish_to_completion": ms_summary(noop_s),
            "emit_cost": ms_summary(emitted.cost),
            "group_send_lost": k - len(layer_s),
            **self.tally(emitted),
        }
        self.results["latency_idle"] = result
        self.keep_samples(
            "latency_idle", emit_to_push=push_s, group_send_to_push=layer_s, noop_publish_to_completion=noop_s
        )
        print(f"   {result}", flush=True)

    def phase_latency_half_load(self) -> None:
        """d. Emits paced at half the sustained rate; emit -> push and emit -> email."""
        sustained = self.results.get("sustained", {}).get("events_per_s")
        rate = self.args.half_load_rate or (sustained / 2 if sustained else None)
        if not rate:
            raise BenchError("half load: no sustained rate measured (phase b) and no --half-load-rate given")
        count = max(1, round(rate * self.args.half_load_seconds))
        print(f"d. latency at half load: {count} events at {rate:.1f}/s ...", flush=True)
        sent0 = self.sent_count()
        emitted = Emitted()
        start = time.perf_counter()
        paced(count, rate, lambda i: self.emit("d", emitted))
        achieved = count / (time.perf_counter() - start) if count > 1 else rate
        self.wait_delivered("half load", emitted, sent_target=sent0 + self.args.deliveries_per_event * count)
        push_s, email_s = self.push_latencies(emitted), self.email_latencies(emitted)
        result = {
            "target_rate_per_s": round(rate, 2),
            "achieved_rate_per_s": round(achieved, 2),
            "emit_to_push": ms_summary(push_s),
            "emit_to_email": ms_summary(email_s),
            "emit_cost": ms_summary(emitted.cost),
            **self.tally(emitted),
        }
        self.results["latency_half_load"] = result
        self.keep_samples("latency_half_load", emit_to_push=push_s, emit_to_email=email_s)
        print(f"   {result}", flush=True)

    def phase_emit_cost(self) -> None:
        """e. emit_event() vs a bare apply_async() of bench.noop, in this process, the worker running and idle."""
        from django.db import connection

        from bench.noop import noop

        k = self.args.emit_samples
        print(
            f"e. emit cost: {k} emit_event(), {k} bench.noop.apply_async() and {k} one-row INSERTs, worker idle ...",
            flush=True,
        )
        emitted = Emitted()
        publish_s: list[float] = []
        insert_s: list[float] = []
        # The database's floor: one durable one-row INSERT (autocommit, its commit waits for the disk) into a
        # table with a primary key only, the size of an event's data; dropped after the phase.
        serial = "BIGSERIAL" if connection.vendor == "postgresql" else "INTEGER"
        floor_row = json.dumps({"artwork_id": 1, "artwork_title": "hotpath e-0", "excerpt": "x" * 60})
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {FLOOR_TABLE} (id {serial} PRIMARY KEY, data TEXT NOT NULL)")
        self.noop_log.read_new()
        for _ in range(k):
            time.sleep(random.uniform(0.005, 0.015))
            began = time.perf_counter()
            noop.apply_async()
            publish_s.append(time.perf_counter() - began)
            self.noop_log.wait(1, stall=SAMPLE_TIMEOUT, what="emit cost (no-op)", interval=0.001)
            time.sleep(random.uniform(0.005, 0.015))
            began = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {FLOOR_TABLE} (data) VALUES (%s)", [floor_row])
            insert_s.append(time.perf_counter() - began)
            time.sleep(random.uniform(0.005, 0.015))
            event_id = self.emit("e", emitted)
            # Wait until the pipeline is done with it, so the next call finds the worker idle.
            self.rec.wait(event_id, timeout=SAMPLE_TIMEOUT)
            self.mailbox.wait(emitted.tags[-1], timeout=SAMPLE_TIMEOUT)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {FLOOR_TABLE}")
        result = {
            "emit_event": ms_summary(emitted.cost),
            "noop_apply_async": ms_summary(publish_s),
            "one_row_insert": ms_summary(insert_s),
            **self.tally(emitted),
        }
        self.results["emit_cost"] = result
        print(f"   {result}", flush=True)

    # -- report -----------------------------------------------------------
    def table(self) -> list[list[str]]:
        """Rows of ``[figure, notiflow, baseline, notiflow ÷ baseline]`` for what was measured."""
        r = self.results
        rows: list[list[str]] = []

        def add(figure: str, value: float | None, base: float | None, unit: str = "", digits: int = 1) -> None:
            shown = "-" if value is None else f"{value:.{digits}f}{unit}"
            shown_base = "-" if base is None else f"{base:.{digits}f}{unit}"
            q = ratio(value, base)
            rows.append([figure, shown, shown_base, "-" if q is None else f"{q:.3f}"])

        b, s, p = r.get("baseline", {}), r.get("sustained"), r.get("prefilled")
        if s:
            add("events/s, sustained ÷ no-op tasks/s pre-filled", s["events_per_s"], b.get("prefilled_tasks_per_s"))
            if len(r.get("rounds", [])) > 1:
                each = ", ".join(f"{x['ratio_prefilled']:.3f}" for x in r["rounds"])
                rows.append([f"the same, each of {len(r['rounds'])} rounds (the median above)", "-", "-", each])
            add("events/s, sustained ÷ no-op tasks/s concurrent", s["events_per_s"], b.get("concurrent_tasks_per_s"))
            add("emit loop calls/s ÷ send_task() calls/s", s["emit_calls_per_s"], b.get("concurrent_publish_per_s"))
        if s and b.get("cpu_ms_per_task"):
            add(
                "CPU ms, all processes: per event (sustained) ÷ per no-op task (concurrent)",
                s["cpu_ms_per_event"]["total"],
                b["cpu_ms_per_task"]["total"],
                digits=2,
            )
        if p:
            add("events/s, pre-filled ÷ no-op tasks/s pre-filled", p["events_per_s"], b.get("prefilled_tasks_per_s"))
        idle = r.get("latency_idle")
        if idle:
            for q in ("p50", "p99", "max"):
                add(
                    f"idle latency {q} (ms): emit → push ÷ group_send → push",
                    idle["emit_to_push"][f"{q}_ms"],
                    idle["group_send_to_push"][f"{q}_ms"],
                )
            for q in ("p50", "p99"):
                add(
                    f"idle latency {q} (ms): emit → push ÷ no-op publish → done",
                    idle["emit_to_push"][f"{q}_ms"],
                    idle["noop_publish_to_completion"][f"{q}_ms"],
                )
        half = r.get("latency_half_load")
        if half and idle:
            for q in ("p50", "p99", "max"):
                add(
                    f"half load ({half['achieved_rate_per_s']:.1f}/s) {q} (ms): emit → push ÷ idle group_send",
                    half["emit_to_push"][f"{q}_ms"],
                    idle["group_send_to_push"][f"{q}_ms"],
                )
        cost = r.get("emit_cost")
        if cost:
            for q in ("p50", "p99"):
                add(
                    f"emit cost {q} (ms): emit_event() ÷ noop.apply_async()",
                    cost["emit_event"][f"{q}_ms"],
                    cost["noop_apply_async"][f"{q}_ms"],
                    digits=2,
                )
                if "one_row_insert" in cost:
                    add(
                        f"emit cost {q} (ms): emit_event() ÷ one durable one-row INSERT",
                        cost["emit_event"][f"{q}_ms"],
                        cost["one_row_insert"][f"{q}_ms"],
                        digits=2,
                    )
        for name, key in (("sustained", "sustained"), ("pre-filled", "prefilled"), ("half load", "latency_half_load")):
            x = r.get(key)
            if x:
                rows.append(
                    [
                        f"{name}: lost / duplicated of {x['events']} (push, email, notification)",
                        f"{x['push_lost']}/{x['push_duplicates']}, {x['email_lost']}/{x['email_duplicates']}, "
                        f"{x['notification_lost']}/{x['notification_duplicates']}",
                        "-",
                        "-",
                    ]
                )
        return rows

    def report(self) -> str:
        env = self.results.get("environment", {})
        head = (
            f"notiflow hot path, {self.args.db}: {env.get('database', '?')}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, commit {env.get('commit', '?')}, {self.results.get('seconds', 0):.0f} s in all"
        )
        rows = self.table()
        header = ["figure", "notiflow", "baseline", "notiflow ÷ baseline"]
        lines = [head, "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)

    def losses(self) -> int:
        keys = ("prefilled", "latency_idle", "latency_half_load", "emit_cost")
        phases = [self.results[k] for k in keys if k in self.results]
        phases += [r["sustained"] for r in self.results.get("rounds", [])]  # the reported one is among them
        return sum(
            phase.get(f"{kind}_{what}", 0)
            for phase in phases
            for kind in ("email", "notification")
            for what in ("lost", "duplicates")
        )

    def run(self) -> int:
        started = time.monotonic()
        phases: list[Callable[[], None]] = [self.phases_rounds]
        if self.args.prefilled_events:
            phases.append(self.phase_prefilled)
        phases += [self.phase_latency_idle, self.phase_latency_half_load, self.phase_emit_cost]
        try:
            self.setup()
            for phase in phases:
                phase()
        except BaseException as exc:  # reported with the partial figures; the processes are stopped below
            self.results["error"] = f"{type(exc).__name__}: {exc}"
            print(
                f"\nhotpath failed: {self.results['error']}\n(process output: {self.var_dir / 'stack.log'})", flush=True
            )
            if not isinstance(exc, Exception):
                raise  # SIGTERM (SystemExit), Ctrl-C: stop the processes, write the JSON, then leave
        finally:
            self.teardown()
            self.results["seconds"] = round(time.monotonic() - started, 1)
            if self.recorder is not None:
                self.results["socket_frames"] = dict(self.recorder.frame_types)
            if self.mail is not None:
                self.results["emails_unmatched"] = self.mail.unmatched
            self.results["table"] = self.table()
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        print("\n" + self.report() + f"\n\nAll figures: {out}", flush=True)
        return 1 if "error" in self.results or self.losses() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], required=True, help="the database to run on")
    parser.add_argument("--events", type=int, default=2000, help="events in the sustained phase (default 2000)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of phases a and b, alternating; the median is reported (1)"
    )
    parser.add_argument("--baseline-tasks", type=int, default=2000, help="no-op tasks per baseline run (default 2000)")
    parser.add_argument("--latency-samples", type=int, default=200, help="samples per idle latency (default 200)")
    parser.add_argument("--half-load-seconds", type=float, default=10.0, help="length of the half-load phase (10)")
    parser.add_argument("--half-load-rate", type=float, default=0.0, help="events/s at half load (0: half of b's)")
    parser.add_argument("--emit-samples", type=int, default=200, help="calls of each kind for the emit cost (200)")
    parser.add_argument("--prefilled-events", type=int, default=0, help="events of the pre-filled variant (0: skip)")
    parser.add_argument(
        "--deliveries-per-event",
        type=int,
        default=2,
        help="Delivery rows each event ends with as 'sent' (default 2: websocket and email)",
    )
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="a phase fails after this long idle (60)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default var/bench/hotpath-<db>.json)")
    postgres_setting_argument(parser)
    parser.add_argument(
        "--peer-settings",
        action="store_true",
        help="run the worker (for notiflow and its baseline alike) as the peer benchmark runs django-notifs': "
        "task events off, log level WARNING",
    )
    parser.add_argument(
        "--drop-pushes",
        type=int,
        default=0,
        metavar="N",
        help="lose every N-th WebSocket push on purpose (bench.lossy: reported sent, never sent), so the relay "
        "fills the gaps from the database; 0: none (default)",
    )
    parser.add_argument(
        "--gap-wait",
        type=float,
        default=None,
        help="NOTIFLOW['WEBSOCKET']['GAP_WAIT'] of the relay, seconds (default: the setting's, 1.0)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "var" / "bench" / f"hotpath-{args.db}.json"
    for name in ("events", "baseline_tasks", "latency_samples", "emit_samples"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"signal {signum}")  # so that every process is stopped on the way out

    signal.signal(signal.SIGTERM, on_term)
    return HotPath(args).run()


if __name__ == "__main__":
    sys.exit(main())
