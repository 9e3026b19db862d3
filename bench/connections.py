"""Idle WebSocket connections one ASGI process holds, their memory, and the time for 1,000 clients to connect.

    python -m bench.connections                        # bursts of 1,000, ramp to 10,000 (a few minutes)
    python -m bench.connections --clients 500 --max 3000

Two servers are measured in the same run, one after the other, each a single
daphne process started by honcho from the ``Procfile``'s ``web`` command line
(the same options; only the application differs):

- **baseline**: :func:`baseline_app` in this module, a minimal ASGI
  application that accepts every WebSocket and idles: no authentication, no
  channel layer, no database.
- **notiflow**: ``webapp.asgi:application`` at ``/ws/notifications/``, with
  a JWT per client (one user per connection, offered as the subprotocol
  ``jwt.<token>``); each socket is authenticated against the database, joins
  the channel layer groups ``user.<id>`` and ``all`` in Redis, reads the inbox
  and sends ``hello``. The stack (Redis + web) runs in ``var/bench-connections``.

For each server:

- **connect**: ``--clients`` clients (default 1,000) connect at the same
  instant. A connection counts when it is usable: ``hello`` received
  (notiflow), handshake accepted (baseline). Printed: seconds from the start
  to the last one, and the p50 / p99 of each connection's own time (from its
  ``connect()`` call), in milliseconds.
- **memory**: the resident set size (``VmRSS``, KiB) of the daphne process
  before any connection (after a warm-up of a few connections, closed again)
  and after the connections are open and idle; the difference divided by the
  number of open connections, in KiB per connection, after the burst and at
  the end of the ramp.
- **held**: after the burst, more connections are opened in steps of
  ``--step`` (at most ``--ramp-concurrency`` handshakes in flight) until
  ``--max`` are open, or a step has a failure (then it starts no more) or
  loses open connections; then all idle for ``--idle`` seconds (longer than
  daphne's 20 s keepalive ping, so every socket has answered one) and the
  connections still open are counted. "(max)": ``--max`` was reached, the
  limit is higher.
- **ramp**: connections opened per second while ramping, and daphne's CPU
  time (user + system, all threads, from ``/proc/<pid>/stat``) per
  connection opened, in milliseconds.
- **other fds**: file descriptors daphne has open at the end beyond one per
  held connection (Redis connections, database files, the listening socket).

notiflow runs with ``webapp.settings.prod`` (``--settings``; the secrets are
random per run), SQLite in ``var/bench-connections``. The clients run in
``--client-procs`` processes (asyncio and ``websockets``; an ``Origin``
header as a browser sends, no client pings). This process raises its
open-file limit (``RLIMIT_NOFILE``) to the hard limit before starting
anything, so the client processes and daphne inherit it; the limit daphne
had is printed, and so are the kernel's listen queue overflows (SYNs dropped
because daphne's accept queue was full; the client retries after 1 s). The
last row of the table is notiflow divided by the baseline, which holds
better than absolute figures on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WS_PATH = "/ws/notifications/"


# -- the baseline ASGI application (served by daphne in its own process) ------------------------------------------


async def baseline_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
    """Accept every WebSocket and idle until the client leaves; answer HTTP with ``200 ok`` (the readiness check)."""
    if scope["type"] == "websocket":
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return


# -- client processes ------------------------------------------------------------------------------------------------


@dataclass
class OpenRequest:
    """Open one connection per token (``None``: no token) at ``start_at`` (``time.monotonic()``, system-wide)."""

    url: str
    origin: str
    tokens: list[str | None]
    expect_hello: bool
    start_at: float
    concurrency: int | None  # at most this many handshakes in flight; None: all at once
    timeout: float  # seconds per connection, handshake and hello together
    stop_on_failure: bool  # after a failure, start no more connections (those in flight finish)


@dataclass
class OpenResult:
    """Per-connection times (seconds, from its own ``connect()`` call to usable) and failures by reason."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    failure_seconds: list[float] = field(default_factory=list)  # from connect() to the failure
    start_at: float = 0.0
    last_ready: float = 0.0

    def merge(self, other: OpenResult) -> None:
        self.latencies.extend(other.latencies)
        self.failures.update(other.failures)
        self.failure_seconds.extend(other.failure_seconds)
        self.start_at = other.start_at
        self.last_ready = max(self.last_ready, other.last_ready)

    @property
    def total_seconds(self) -> float:
        return self.last_ready - self.start_at if self.latencies else math.nan


def _reason(exc: BaseException) -> str:
    """A short failure reason: ``HTTP 403``, ``closed 4401``, ``timeout``, ``ConnectionResetError``…"""
    from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidMessage):  # e.g. daphne dropped the connection at its handshake timeout
        cause = exc.__cause__
        return f"connection dropped before the handshake answer ({type(cause).__name__})" if cause else "bad answer"
    if isinstance(exc, ConnectionClosed):
        return f"closed {exc.rcvd.code}" if exc.rcvd else "closed without a close frame"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


class _ClientWorker:
    """One client process: holds its sockets on one event loop and answers the parent's commands."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.sockets: list[Any] = []

    async def run(self) -> None:
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
            command = await commands.get()
            if command[0] == "open":
                self.pipe.send(await self.open(command[1]))
            elif command[0] == "alive":
                self.pipe.send(self.alive())
            elif command[0] == "close":
                await self.close()
                self.pipe.send(None)
            else:
                return

    def alive(self) -> int:
        from websockets.protocol import State

        return sum(1 for ws in self.sockets if ws.state is State.OPEN)

    async def close(self) -> None:
        sockets, self.sockets = self.sockets, []
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def open(self, request: OpenRequest) -> OpenResult:
        result = OpenResult(start_at=request.start_at)
        await asyncio.sleep(max(0.0, request.start_at - time.monotonic()))
        gate = asyncio.Semaphore(request.concurrency or len(request.tokens) or 1)

        async def one(token: str | None) -> None:
            async with gate:
                if request.stop_on_failure and result.failures:
                    return
                started = time.monotonic()
                try:
                    await self.connect(request, token)
                except Exception as exc:
                    result.failures[_reason(exc)] += 1
                    result.failure_seconds.append(time.monotonic() - started)
                    return
                now = time.monotonic()
                result.latencies.append(now - started)
                result.last_ready = max(result.last_ready, now)

        await asyncio.gather(*(one(token) for token in request.tokens))
        return result

    async def connect(self, request: OpenRequest, token: str | None) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin, Subprotocol

        protocols = [Subprotocol("notiflow"), Subprotocol(f"jwt.{token}")] if token else None
        async with asyncio.timeout(request.timeout):
            ws = await connect(
                request.url,
                subprotocols=protocols,
                origin=Origin(request.origin),
                proxy=None,
                open_timeout=None,  # the timeout above covers the handshake and hello
                ping_interval=None,  # an idle client, like a browser tab: only the server pings
                close_timeout=2,
            )
            try:
                if request.expect_hello:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") != "hello":
                        raise RuntimeError(f"first frame is {frame.get('type')!r}, not 'hello'")
            except BaseException:
                ws.transport.abort()
                raise
        self.sockets.append(ws)


def _client_process(pipe: Connection) -> None:
    """Entry point of a client process (``spawn``): Ctrl-C is the parent's business."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_ClientWorker(pipe).run())


class ClientPool:
    """``procs`` client processes; a request's connections are dealt round-robin between them."""

    def __init__(self, procs: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for i in range(procs):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_client_process, args=(child_end,), daemon=True, name=f"ws-clients-{i}")
            process.start()
            child_end.close()
            self._workers.append((process, parent_end))

    def open(
        self,
        *,
        url: str,
        tokens: Sequence[str | None],
        expect_hello: bool,
        concurrency: int | None,
        timeout: float,
        stop_on_failure: bool,
    ) -> OpenResult:
        n = len(self._workers)
        start_at = time.monotonic() + 0.5  # every process starts at the same instant
        per_process = math.ceil(concurrency / n) if concurrency else None
        origin = url.replace("ws://", "http://", 1).split("/ws/", 1)[0]
        for i, (_, pipe) in enumerate(self._workers):
            request = OpenRequest(
                url, origin, list(tokens[i::n]), expect_hello, start_at, per_process, timeout, stop_on_failure
            )
            pipe.send(("open", request))
        merged = OpenResult(start_at=start_at)
        for _, pipe in self._workers:
            merged.merge(pipe.recv())
        return merged

    def alive(self) -> int:
        for _, pipe in self._workers:
            pipe.send(("alive",))
        return sum(int(pipe.recv()) for _, pipe in self._workers)

    def close_sockets(self) -> None:
        for _, pipe in self._workers:
            pipe.send(("close",))
        for _, pipe in self._workers:
            pipe.recv()

    def stop(self) -> None:
        """Stop the processes (their sockets close with them)."""
        for _, pipe in self._workers:
            with contextlib.suppress(OSError):
                pipe.send(("exit",))
        for process, pipe in self._workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()
        self._workers = []


# -- the measured process -------------------------------------------------------------------------------------------


def listening_pid(port: int) -> int:
    """The pid of the process holding the listening TCP socket on 127.0.0.1:``port`` (read from ``/proc``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
    raise RuntimeError(f"no process of ours listens on port {port}")


def rss_kib(pid: int) -> int:
    """``VmRSS`` of ``pid``, in KiB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def listen_overflows() -> int:
    """The kernel's ``TcpExt ListenOverflows`` counter: SYNs dropped because a listen (accept) queue was full."""
    rows = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(rows[0], rows[1], strict=True)).get("ListenOverflows", 0))


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_files_limit(pid: int) -> str:
    """``soft/hard`` of the ``Max open files`` limit of ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft}/{hard}"
    return "?"


@dataclass
class Server:
    name: str
    url: str
    port: int
    tokens: list[str | None]  # one per connection attempt: --max + --clients (burst failures leave some unused)
    expect_hello: bool


@dataclass
class Measurement:
    server: str
    nofile: str  # daphne's open files limit, soft/hard
    rss_before: int  # KiB, after the warm-up, no connection open
    burst: OpenResult  # --clients at once
    burst_open: int
    rss_burst: int  # KiB, the burst's connections open and idle
    burst_cpu: float  # seconds of daphne CPU during the burst
    burst_overflows: int  # listen queue overflows during the burst
    ramp_failures: Counter[str] = field(default_factory=Counter)
    ramp_opened: int = 0
    ramp_seconds: float = 0.0  # sum of the steps' times
    ramp_cpu: float = 0.0  # seconds of daphne CPU during the ramp
    ramp_overflows: int = 0
    held: int = 0  # open after --idle seconds
    rss_end: int = 0  # KiB, then
    max_reached: bool = False
    fds_end: int = 0  # file descriptors daphne has open, then

    @property
    def per_conn_burst(self) -> float:
        return (self.rss_burst - self.rss_before) / self.burst_open if self.burst_open else math.nan

    @property
    def per_conn_held(self) -> float:
        return (self.rss_end - self.rss_before) / self.held if self.held else math.nan

    @property
    def ramp_rate(self) -> float:
        return self.ramp_opened / self.ramp_seconds if self.ramp_seconds else math.nan

    @property
    def ramp_cpu_ms(self) -> float:
        return 1000 * self.ramp_cpu / self.ramp_opened if self.ramp_opened else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _failures_text(result: OpenResult) -> str:
    if not result.failures:
        return "0"
    times = result.failure_seconds
    return (
        ", ".join(f"{n} {reason}" for reason, n in result.failures.most_common())
        + f" (after {min(times):.1f}-{max(times):.1f} s)"
    )


def measure(server: Server, args: argparse.Namespace) -> Measurement:
    """Warm up, burst ``--clients``, ramp to ``--max`` open, idle; read daphne's RSS and CPU time along the way."""
    pid = listening_pid(server.port)
    nofile = open_files_limit(pid)
    print(f"[{server.name}] daphne pid {pid}, open files limit {nofile}", flush=True)
    pool = ClientPool(args.client_procs)
    cursor = 0  # next unused token

    def open_(k: int, concurrency: int | None) -> OpenResult:
        nonlocal cursor
        tokens, cursor = server.tokens[cursor : cursor + k], cursor + k
        return pool.open(
            url=server.url,
            tokens=tokens,
            expect_hello=server.expect_hello,
            concurrency=concurrency,
            timeout=args.timeout,
            stop_on_failure=concurrency is not None,  # the ramp stops at the first failure; the burst does not
        )

    try:
        warm = open_(args.warmup, None)
        if warm.failures:
            raise RuntimeError(f"[{server.name}] warm-up failed: {_failures_text(warm)}")
        pool.close_sockets()
        cursor = 0  # the warm-up's users are free again
        time.sleep(args.settle)
        rss_before = rss_kib(pid)

        overflows, cpu = listen_overflows(), cpu_seconds(pid)
        burst = open_(args.clients, None)
        burst_cpu, burst_overflows = cpu_seconds(pid) - cpu, listen_overflows() - overflows
        time.sleep(args.settle)
        m = Measurement(
            server=server.name,
            nofile=nofile,
            rss_before=rss_before,
            burst=burst,
            burst_open=pool.alive(),
            rss_burst=rss_kib(pid),
            burst_cpu=burst_cpu,
            burst_overflows=burst_overflows,
        )
        print(
            f"[{server.name}] burst of {args.clients}: {len(burst.latencies)} connected in "
            f"{burst.total_seconds:.2f} s, failures {_failures_text(burst)}, listen queue overflows "
            f"{burst_overflows}, daphne CPU {burst_cpu:.1f} s; RSS {rss_before / 1024:.1f} → "
            f"{m.rss_burst / 1024:.1f} MiB, {open_fds(pid)} fds open",
            flush=True,
        )

        now_open = m.burst_open
        overflows = listen_overflows()
        while now_open < args.max:
            cpu = cpu_seconds(pid)
            step = open_(min(args.step, args.max - now_open), args.ramp_concurrency)
            m.ramp_cpu += cpu_seconds(pid) - cpu
            m.ramp_seconds += step.total_seconds if step.latencies else 0.0
            m.ramp_opened += len(step.latencies)
            m.ramp_failures.update(step.failures)
            expected, now_open = now_open + len(step.latencies), pool.alive()
            print(
                f"[{server.name}] {now_open} open (+{len(step.latencies)} in {step.total_seconds:.1f} s, "
                f"failures {_failures_text(step)}), RSS {rss_kib(pid) / 1024:.1f} MiB",
                flush=True,
            )
            if step.failures or now_open < expected:
                print(f"[{server.name}] connections started failing or dropping; ramp stopped", flush=True)
                break
        m.ramp_overflows = listen_overflows() - overflows

        print(f"[{server.name}] idling {args.idle:.0f} s ...", flush=True)
        time.sleep(args.idle)
        m.held, m.rss_end = pool.alive(), rss_kib(pid)
        m.max_reached = m.held >= args.max
        m.fds_end = open_fds(pid)
        print(
            f"[{server.name}] {m.held} still open after idling, RSS {m.rss_end / 1024:.1f} MiB, {m.fds_end} fds open",
            flush=True,
        )
        return m
    finally:
        pool.stop()


# -- the servers ----------------------------------------------------------------------------------------------------


def procfile_web_command() -> str:
    """The ``web`` command line of the ``Procfile``."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("no web entry in the Procfile")


def start_baseline(var_dir: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """The Procfile's ``web`` command serving :func:`baseline_app`, under honcho, as the stack runs ``web``."""
    command = procfile_web_command()
    if "webapp.asgi:application" not in command:
        raise RuntimeError(f"unexpected web command in the Procfile: {command}")
    procfile = var_dir / "Procfile.baseline"
    procfile.write_text(f"baseline: {command.replace('webapp.asgi:application', 'bench.connections:baseline_app')}\n")
    log = open(var_dir / "baseline.log", "ab")  # noqa: SIM115 - inherited by honcho, closed right after
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "honcho", "-f", str(procfile), "-d", str(ROOT), "start", "baseline"],
            env={**env, "WEB_PORT": str(port)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``process``'s session (honcho stops its children), SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_http_ok(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the baseline server exited ({process.returncode}) before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from {url} after {timeout:.0f} s")
        time.sleep(0.2)


def create_users(count: int) -> list[int]:
    """``count`` active users without a usable password in the stack's database; their ids."""
    from django.contrib.auth import get_user_model
    from django.db import connections

    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"conn{i:06d}", password="!") for i in range(count)], batch_size=1000
    )
    ids = list(user_model.objects.filter(username__startswith="conn").order_by("pk").values_list("pk", flat=True))
    connections.close_all()
    return ids


# -- report ---------------------------------------------------------------------------------------------------------

COLUMNS = [  # (title, format, ratio vs baseline?)
    ("held", "{:.0f}", True),
    ("failures burst / ramp", "", False),
    ("RSS before (MiB)", "{:.1f}", True),
    ("RSS/conn after burst (KiB)", "{:.1f}", True),
    ("RSS/conn at held (KiB)", "{:.1f}", True),
    ("connect {n} (s)", "{:.2f}", True),
    ("p50 (ms)", "{:.0f}", True),
    ("p99 (ms)", "{:.0f}", True),
    ("ramp (conn/s)", "{:.0f}", True),
    ("CPU/conn (ms)", "{:.1f}", True),
    ("other fds at held", "{:.0f}", True),
]


def _values(m: Measurement) -> list[float]:
    return [
        float(m.held),
        math.nan,
        m.rss_before / 1024,
        m.per_conn_burst,
        m.per_conn_held,
        m.burst.total_seconds,
        percentile(m.burst.latencies, 50) * 1000,
        percentile(m.burst.latencies, 99) * 1000,
        m.ramp_rate,
        m.ramp_cpu_ms,
        float(m.fds_end - m.held),
    ]


def print_table(results: Sequence[Measurement], clients: int) -> None:
    """A Markdown table, one row per server, then notiflow ÷ baseline."""
    header = ["server", *(title.format(n=f"{clients:,}") for title, _, _ in COLUMNS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    values = {m.server: _values(m) for m in results}
    for m in results:
        cells = [
            fmt.format(v) if fmt and not math.isnan(v) else "-"
            for (_, fmt, _), v in zip(COLUMNS, values[m.server], strict=True)
        ]
        cells[0] += " (max)" if m.max_reached else ""
        cells[1] = f"{sum(m.burst.failures.values())} / {sum(m.ramp_failures.values())}"
        print("| " + " | ".join([m.server, *cells]) + " |")
    if len(results) == 2:
        base, other = (values[m.server] for m in results)
        ratios = [
            f"{o / b:.2f}" if ratio and b and not math.isnan(b) and not math.isnan(o) else "-"
            for (_, _, ratio), b, o in zip(COLUMNS, base, other, strict=True)
        ]
        print("| " + " | ".join([f"{results[1].server} ÷ {results[0].server}", *ratios]) + " |")


# -- main -----------------------------------------------------------------------------------------------------------


def _raise_open_files_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients of the connect burst (default 1000)")
    parser.add_argument("--max", type=int, default=10000, help="stop the ramp at this many connections (10000)")
    parser.add_argument("--step", type=int, default=1000, help="connections added per ramp step (default 1000)")
    parser.add_argument("--ramp-concurrency", type=int, default=40, help="handshakes in flight while ramping (40)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds all connections idle at the end (30)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per connection (default 30)")
    parser.add_argument("--warmup", type=int, default=20, help="connections opened and closed first (default 20)")
    parser.add_argument("--only", choices=["baseline", "notiflow"], help="measure one server only")
    parser.add_argument(
        "--settings", default="webapp.settings.prod", help="notiflow's settings module (default webapp.settings.prod)"
    )
    args = parser.parse_args(argv)
    if args.max < args.clients:
        parser.error("--max must be at least --clients")

    signal.signal(signal.SIGTERM, _on_sigterm)
    soft, hard = _raise_open_files_limit()
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    from webapp.stack import Stack, free_port

    stack = Stack(
        var_dir=ROOT / "var" / "bench-connections",
        processes=("redis", "web"),
        settings_module=args.settings,
        extra_env={"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "NOTIFLOW_JWT_SECRET": secrets.token_urlsafe(32)},
    )
    stack.prepare(fresh=True)
    stack.apply_env()
    started = time.monotonic()
    attempts = args.max + args.clients  # room for the ramp to reach --max after failures in the burst
    print(f"Preparing {stack.var_dir} ({attempts} users) ...", flush=True)
    stack.manage("migrate", "--noinput", "-v", "0")
    import django

    django.setup()
    from webapp.tokens import token_issue

    user_ids = create_users(attempts)
    ttl = 6 * 3600
    notiflow_tokens: list[str | None] = [token_issue(user_id=uid, ttl=ttl) for uid in user_ids]

    baseline_port = free_port()
    baseline: subprocess.Popen[bytes] | None = None
    results: list[Measurement] = []
    try:
        if args.only in (None, "notiflow"):  # first, so that a broken stack fails the run at once
            print("Starting the stack (Redis, web) ...", flush=True)
            stack.start(log_to=stack.var_dir / "stack.log")
            stack.wait_ready(timeout=120)
        if args.only in (None, "baseline"):
            print(f"Starting the baseline server (bench.connections:baseline_app, :{baseline_port}) ...", flush=True)
            baseline = start_baseline(stack.var_dir, stack.env, baseline_port)
            wait_http_ok(f"http://127.0.0.1:{baseline_port}/", baseline)
            server = Server(
                name="baseline",
                url=f"ws://127.0.0.1:{baseline_port}{WS_PATH}",
                port=baseline_port,
                tokens=[None] * attempts,
                expect_hello=False,
            )
            results.append(measure(server, args))
            stop_group(baseline)
        if args.only in (None, "notiflow"):
            server = Server(
                name="notiflow",
                url=f"{stack.ws_url}{WS_PATH}",
                port=stack.ports["web"],
                tokens=notiflow_tokens,
                expect_hello=True,
            )
            results.append(measure(server, args))
    finally:
        if baseline is not None:
            stop_group(baseline)
        stack.stop()

    print(
        f"\nnotiflow connections: burst of {args.clients:,}, ramp to {args.max:,} in steps of {args.step:,} "
        f"({args.ramp_concurrency} in flight), {args.idle:.0f} s idle; {args.client_procs} client processes; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; open files {soft}/{hard} here, "
        + ", ".join(f"{m.server} daphne {m.nofile}" for m in results)
        + f"; {time.monotonic() - started:.0f} s in all\n"
    )
    print_table(results, args.clients)
    print(
        "\nListen queue overflows (SYNs the kernel dropped, each retried by the client after 1 s or more): "
        + "; ".join(f"{m.server} {m.burst_overflows} in the burst, {m.ramp_overflows} in the ramp" for m in results)
    )
    for m in results:
        if m.burst.failures:
            print(f"{m.server} burst failures: {_failures_text(m.burst)}")
        if m.ramp_failures:
            print(f"{m.server} ramp failures: " + ", ".join(f"{n} {r}" for r, n in m.ramp_failures.most_common()))
    print(f"\ncommand: {shlex.join(['python', '-m', 'bench.connections', *(sys.argv[1:] if argv is None else argv)])}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: main() stopped every process on the way out
        print("\ninterrupted; every process the bench started is stopped", file=sys.stderr)
        sys.exit(130)
