"""Run notiflow's processes together: Redis, SMTP, ASGI server, worker, beat, Flower.

The processes are the ``Procfile``'s, run by honcho. This module picks free
loopback ports, lays out a private ``var/`` folder (Redis data, Maildir,
database), starts honcho, waits until each process answers, and stops
everything on exit. ``make run``, ``make demo`` and the integration tests
all use it::

    python -m webapp.stack run     # foreground, prints the URLs, Ctrl-C stops all
    python -m webapp.stack demo    # plays the demo scenario and exits 0 / 1

With ``REDIS_URL`` set in the environment no private Redis is started. The
database is ``DATABASE_URL`` (SQLite in ``var/`` by default); ``--postgres``
(or :meth:`Stack.use_postgres`) starts a private PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import contextlib
import mailbox
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import psutil

from webapp import SETTINGS_CHOSEN

if TYPE_CHECKING:
    from webapp.postgres import PrivatePostgres

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
ALL_PROCESSES = ("redis", "smtp", "web", "worker", "beat", "flower")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


class StackError(RuntimeError):
    """A process did not start or did not become ready in time."""


class Stack:
    """The processes of the Procfile, under honcho, with their environment.

    ``var_dir`` holds everything the stack writes, the SMTP server's Maildir
    in ``var_dir/mail`` unless ``mail_dir`` names another folder (the
    benchmarks keep it in memory, on tmpfs). ``processes``
    names the Procfile entries to run (``redis`` is left out when
    ``REDIS_URL`` is set).
    """

    def __init__(
        self,
        *,
        var_dir: Path,
        processes: Sequence[str] = ALL_PROCESSES,
        settings_module: str = "webapp.settings.dev",
        preferred_ports: dict[str, int] | None = None,
        extra_env: dict[str, str] | None = None,
        mail_dir: Path | None = None,
    ) -> None:
        self.var_dir = var_dir
        self._mail_dir = mail_dir or var_dir / "mail"
        preferred = preferred_ports or {}
        external_redis = os.environ.get("REDIS_URL")
        self.processes = [p for p in processes if not (p == "redis" and external_redis)]
        self.ports = {name: free_port(preferred.get(name)) for name in ("redis", "smtp", "web", "flower")}
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": SETTINGS_CHOSEN or settings_module,
            "VAR_DIR": str(var_dir),
            "REDIS_DIR": str(var_dir / "redis"),
            "REDIS_PORT": str(self.ports["redis"]),
            "REDIS_URL": external_redis or f"redis://127.0.0.1:{self.ports['redis']}/0",
            "MAIL_DIR": str(self._mail_dir),
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(self.ports["smtp"]),
            "WEB_PORT": str(self.ports["web"]),
            "FLOWER_PORT": str(self.ports["flower"]),
            "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{var_dir / 'db.sqlite3'}"),
            **(extra_env or {}),
        }
        # One honcho for all the processes, or (``separately``) one per process, by process name.
        self._honchos: dict[str, subprocess.Popen[bytes]] = {}
        self._log: IO[bytes] | None = None

    # -- URLs -------------------------------------------------------------
    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['web']}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['flower']}"

    @property
    def mail_dir(self) -> Path:
        return self._mail_dir

    def apply_env(self) -> None:
        """Export the stack's environment into this process (before Django reads its settings)."""
        os.environ.update(self.env)

    # -- life cycle -------------------------------------------------------
    def prepare(self, *, fresh: bool) -> None:
        """Create ``var_dir`` and the Maildir (each emptied first when ``fresh``) with their folders."""
        for folder in (self.var_dir, self._mail_dir):
            if fresh and folder.exists():
                shutil.rmtree(folder)
        (self.var_dir / "redis").mkdir(parents=True, exist_ok=True)
        for sub in ("new", "cur", "tmp"):
            (self._mail_dir / sub).mkdir(parents=True, exist_ok=True)

    def use_postgres(self, *, settings: Mapping[str, str] | None = None) -> PrivatePostgres:
        """Start a private PostgreSQL in ``var_dir/postgres`` (server ``settings`` over the defaults) and point
        the stack's ``DATABASE_URL`` at it.

        Call it after :meth:`prepare` (a fresh one deletes the cluster) and
        before :meth:`apply_env`, :meth:`manage` and :meth:`start`; call the
        returned server's ``stop()`` after :meth:`stop`. Raises
        :class:`webapp.postgres.PostgresError`.
        """
        from webapp.postgres import PrivatePostgres

        postgres = PrivatePostgres(self.var_dir / "postgres", settings=settings)
        self.env["DATABASE_URL"] = postgres.start()
        return postgres

    def manage(self, *args: str) -> None:
        """Run ``manage.py <args>`` with the stack's environment; raise on failure."""
        subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=self.env, cwd=ROOT, check=True)

    def start(
        self, *, log_to: Path | None = None, processes: Sequence[str] | None = None, separately: bool = False
    ) -> None:
        """Start honcho with ``processes`` (default: the stack's). Output goes to ``log_to`` or this terminal.

        ``separately`` runs one honcho per process, so that one process can be
        stopped, killed and started again while the others run (fault injection).
        """
        if shutil.which("redis-server", path=self.env["PATH"]) is None and "redis" in self.processes:
            raise StackError("redis-server is not installed: run `make redis` or `apt-get install redis-server`.")
        names = list(processes or self.processes)
        if log_to is not None and self._log is None:
            self._log = open(log_to, "ab")  # noqa: SIM115 - closed in stop()
        for group in [[name] for name in names] if separately else [names]:
            self._honchos[group[0] if separately else "all"] = subprocess.Popen(
                [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "-d", str(ROOT), "start", *group],
                env=self.env,
                cwd=ROOT,
                stdout=self._log,
                stderr=subprocess.STDOUT if self._log else None,
                start_new_session=True,
            )

    def wait_ready(self, *, timeout: float = 90.0, processes: Sequence[str] | None = None) -> None:
        """Block until every process answers; raise :class:`StackError` naming the ones that do not."""
        checks: dict[str, Callable[[], bool]] = {
            "redis": self._redis_ready,
            "smtp": lambda: smtp_ready(self.ports["smtp"]),
            "web": lambda: _http_ok(f"{self.web_url}/healthz"),
            "worker": self._worker_ready,
            "beat": lambda: any(self.var_dir.glob("celerybeat-schedule*")),
            "flower": lambda: _http_ok(f"{self.flower_url}/healthcheck"),
        }
        waiting = [p for p in (processes or self.processes) if p in checks]
        if "redis" not in self.processes and "redis" in waiting:
            waiting.remove("redis")
        deadline = time.monotonic() + timeout
        while waiting:
            exited = [name for name, honcho in self._honchos.items() if honcho.poll() is not None]
            if exited:
                raise StackError(f"honcho ({', '.join(exited)}) exited before {', '.join(waiting)} became ready.")
            waiting = [p for p in waiting if not _safe(checks[p])]
            if waiting and time.monotonic() > deadline:
                raise StackError(f"not ready after {timeout:.0f} s: {', '.join(waiting)}")
            if waiting:
                time.sleep(0.2)

    def wait(self) -> int:
        """Block until honcho exits (one process died, or a signal); return its exit code."""
        if "all" not in self._honchos:
            raise StackError("the stack is not started as one honcho")
        return self._honchos["all"].wait()

    def stop(self, *, timeout: float = 20.0) -> None:
        """Stop every process: SIGTERM to each honcho (it stops its children), SIGKILL after ``timeout`` s."""
        for name in list(self._honchos):
            self.stop_process(name, timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop_process(self, name: str, *, timeout: float = 20.0) -> None:
        """Stop the honcho running ``name`` (started ``separately``) and wait for it; SIGKILL after ``timeout`` s.

        honcho starts each command in a session of its own and stops it with
        ``killpg``, SIGKILL after its own 5 s; but a honcho that dies first
        (its output pipe gone with the outer honcho) leaves a process that was
        still shutting down (a Celery worker waiting for its task in a warm
        shutdown) running, a child of init. So the process groups below the
        honcho are read before it is stopped, and whatever is still in them
        ``ORPHAN_GRACE`` s after the honcho has gone is killed.
        """
        honcho = self._honchos.pop(name, None)
        if honcho is None or honcho.poll() is not None:
            return
        groups = process_groups_below(honcho.pid)
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        process_groups_end(groups, grace=ORPHAN_GRACE)

    def restart(self, *names: str) -> None:
        """Start ``names`` again, each under its own honcho, and wait until they answer."""
        self.start(processes=list(names), separately=True)
        self.wait_ready(processes=list(names))

    def kill_worker(self) -> int:
        """SIGKILL the Celery worker's main process, as ``kill -9 <pid>`` would; return its pid.

        Its honcho exits with it; :meth:`start` ``(processes=["worker"], separately=True)`` starts a new one.
        """
        from worker import app

        # limit=1: return at the first reply, not after the whole time-out (2 s, in which a fast pipeline
        # finishes what the drill meant to interrupt); the stack runs one worker.
        replies = app.control.inspect(timeout=2.0, limit=1).stats() or {}
        if len(replies) != 1:
            raise StackError(f"expected one worker to answer, got {sorted(replies)}")
        pid = int(next(iter(replies.values()))["pid"])
        os.kill(pid, signal.SIGKILL)
        honcho = self._honchos.pop("worker", None)
        if honcho is not None:
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"the killed worker's honcho is still running; left: {_processes_left(pid)}") from exc
        return pid

    # -- checks -----------------------------------------------------------
    def _redis_ready(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.env["REDIS_URL"], socket_connect_timeout=1).ping())

    def _worker_ready(self) -> bool:
        from worker import app

        return bool(app.control.ping(timeout=1.0))

    # -- mail -------------------------------------------------------------
    def emails(self) -> list[EmailMessage]:
        """Every message the local SMTP server has received, oldest first."""
        box = mailbox.Maildir(self.mail_dir, factory=None, create=False)
        found = []
        for key in box.iterkeys():
            stored = box.get_message(key)  # one read: the delivery time and the bytes
            found.append((stored.get_date(), BytesParser(policy=policy.default).parsebytes(stored.as_bytes())))
        return [message for _, message in sorted(found, key=lambda pair: pair[0])]


#: Seconds the processes of a stopped honcho's commands get to exit by themselves before they are killed.
ORPHAN_GRACE = 10.0


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def process_groups_below(pid: int) -> set[int]:
    """The process-group ids of every descendant of ``pid`` but ``pid``'s own (psutil)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    found = {_group_of(child.pid) for child in below}
    return {group for group in found if group is not None and group != _group_of(pid)}


def process_groups_end(groups: set[int], *, grace: float) -> None:
    """Wait up to ``grace`` s for every live process of ``groups`` to exit (zombies do not count: an init that
    does not reap, as in some containers, leaves them), then SIGKILL the groups that still have one."""
    deadline = time.monotonic() + grace
    while True:
        live = (p.pid for p in psutil.process_iter(["status"]) if p.info["status"] != psutil.STATUS_ZOMBIE)
        left = {group for group in map(_group_of, live) if group in groups}
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for group in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _processes_left(parent: int) -> str:
    """Celery worker processes left by ``parent`` (now children of init): pid, state, signal masks, kernel wait
    channel; a diagnostic for a killed worker that will not go away."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            wchan = (entry / "wchan").read_text()
        except OSError:
            continue
        if " worker worker " in cmdline and status.get("PPid", "").strip() in ("1", str(parent)):
            fields = ("State", "PPid", "SigBlk", "SigPnd", "ShdPnd", "SigCgt", "SigIgn")
            rows.append(f"{entry.name} {' '.join(status.get(f, '').strip() for f in fields)} {wchan}")
    return "; ".join(rows) or "none"


def wait_for(produce: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Call ``produce`` until it returns something truthy; return it, or the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    value = produce()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = produce()
    return value


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # noqa: BLE001 - "not ready yet", whatever the reason
        return False


def smtp_ready(port: int) -> bool:
    """Whether an SMTP server on the loopback ``port`` greets with ``220``; ``False`` for any failure."""
    return _safe(lambda: _banner(port, b"220"))


def _banner(port: int, expected: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        return s.recv(64).startswith(expected)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
        return bool(response.status == 200)


def _run(args: argparse.Namespace) -> int:
    stack = Stack(
        var_dir=ROOT / "var" / "run",
        preferred_ports={"redis": 6390, "smtp": 1025, "web": 8000, "flower": 5555},
    )
    stack.prepare(fresh=False)
    postgres = stack.use_postgres() if args.postgres else None
    try:
        return _run_stack(stack)
    finally:
        if postgres is not None:
            postgres.stop()


def _run_stack(stack: Stack) -> int:
    stack.manage("migrate", "--noinput")
    stack.manage("gallery_seed")
    print(
        f"\nnotiflow is starting:\n"
        f"  Demo       {stack.web_url}/demo/   (the inbox page: sign in as alice in one browser, bob in another)\n"
        f"  API        {stack.web_url}/api/notifications/   (token: POST {stack.web_url}/api/token/)\n"
        f"  WebSocket  {stack.ws_url}/ws/notifications/   health: {stack.ws_url}/ws/health/\n"
        f"  Admin      {stack.web_url}/admin/   (admin / admin; demo users alice, bob, carol, dave: password 'demo')\n"
        f"  Flower     {stack.flower_url}/\n"
        f"  SMTP       127.0.0.1:{stack.ports['smtp']} (mail saved under {stack.mail_dir})\n"
        f"Ctrl-C stops every process.\n",
        flush=True,
    )
    stack.start()
    try:
        return stack.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _demo(args: argparse.Namespace) -> int:
    stack = Stack(var_dir=ROOT / "var" / "demo")
    stack.prepare(fresh=True)
    postgres = stack.use_postgres() if args.postgres else None
    try:
        return _demo_stack(stack)
    finally:
        if postgres is not None:
            postgres.stop()


def _demo_stack(stack: Stack) -> int:
    stack.apply_env()
    stack.manage("migrate", "--noinput", "-v", "0")
    print("Starting Redis, SMTP, ASGI server, Celery worker, celery beat and Flower ...", flush=True)
    stack.start(log_to=stack.var_dir / "stack.log")
    try:
        import django

        django.setup()
        stack.wait_ready()
        from webapp.gallery.scenario import play

        return play(stack)
    except Exception as exc:  # noqa: BLE001 - any failure ends the demo with its reason and exit 1
        print(f"demo failed: {exc}\n(process output: {stack.var_dir / 'stack.log'})", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        print("All processes stopped.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.stack", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run every process in the foreground"), ("demo", "play the demo scenario and exit")):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "--postgres", action="store_true", help="a private PostgreSQL in the stack's var/ folder instead of SQLite"
        )
    args = parser.parse_args(argv)
    handler: dict[str, Callable[[Any], int]] = {"run": _run, "demo": _demo}
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
