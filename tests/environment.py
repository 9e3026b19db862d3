"""Loaded with ``-p tests.environment`` before pytest-django reads the settings.

It builds the test stack's environment (free ports, a private ``var/test``
folder, the database the worker shares) and exports it, so the test process
and every process the stack starts agree on Redis, SMTP and the database.

``NOTIFLOW_TEST_DB`` chooses the database: ``sqlite`` (the default; a file
in the test folder) or ``postgres``: a private PostgreSQL cluster
(:mod:`webapp.postgres`) in ``var/test-postgres/postgres/``, started here and
stopped when pytest ends, pass or fail. Either way ``tests.settings`` names
the same database as the test database, so the one pytest-django creates
(and drops at the end) is the one the worker, beat and daphne open; the
stack starts only after ``django_db_setup`` (``tests/conftest.py``).
"""

from __future__ import annotations

import atexit
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support.identity_provider import IdentityProvider
from webapp.postgres import USER, PrivatePostgres
from webapp.stack import ROOT, Stack, free_port

DATABASES = ("sqlite", "postgres")
#: The database of the PostgreSQL pass.
TEST_POSTGRES_DATABASE = "test_notiflow"
TEST_DB = os.environ.get("NOTIFLOW_TEST_DB", "sqlite").strip().lower() or "sqlite"
if TEST_DB not in DATABASES:
    raise pytest.UsageError(f"NOTIFLOW_TEST_DB={TEST_DB!r}: expected one of {', '.join(DATABASES)}")

# A folder per database, so that a PostgreSQL pass keeps the SQLite pass's logs (and the two may run side by side).
VAR_DIR = Path(os.environ.get("NOTIFLOW_TEST_VAR", ROOT / "var" / ("test" if TEST_DB == "sqlite" else "test-postgres")))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["NOTIFLOW_TEST_RECORD"] = str(VAR_DIR / "recorded.jsonl")

# The identity provider whose JWKS the ASGI server fetches (RS256/ES256 tokens), served by this process.
IDENTITY_PROVIDER = IdentityProvider(port=free_port())
IDENTITY_PROVIDER.start()
os.environ["NOTIFLOW_TEST_JWKS_URL"] = IDENTITY_PROVIDER.jwks_url

STACK = Stack(
    var_dir=VAR_DIR,
    processes=("redis", "smtp", "web", "worker", "beat"),
    settings_module="tests.settings",
)

# A server an earlier session left running (killed before it could stop it) is stopped before its folder is deleted.
_leftover = PrivatePostgres(VAR_DIR / "postgres")
if (_leftover.data_dir / "postmaster.pid").exists():
    _leftover.stop()

STACK.prepare(fresh=True)
#: The private PostgreSQL while ``NOTIFLOW_TEST_DB=postgres``, else ``None``.
POSTGRES: PrivatePostgres | None = None
if TEST_DB == "postgres":
    POSTGRES = STACK.use_postgres()
    # A database of its own, which pytest-django creates (tests.settings: TEST NAME = NAME) and drops; not the
    # `notiflow` database the cluster comes with. Exported just below, to this process and the stack's.
    STACK.env["DATABASE_URL"] = POSTGRES.url.rsplit("/", 1)[0] + "/" + TEST_POSTGRES_DATABASE
    atexit.register(POSTGRES.stop)  # also when the session ends abnormally; stop() is a no-op the second time
STACK.apply_env()


#: One entry per flush PostgreSQL aborted as a deadlock and that was tried again (reported at the end).
FLUSH_DEADLOCKS: list[int] = []


def _flush_retried_on_deadlock() -> None:
    """Make the flush after each transactional test (one ``TRUNCATE`` of every table) retry a deadlock.

    The worker and beat keep writing while a test ends (a drain finishing,
    the relay, the sweep). ``TRUNCATE`` takes its table locks one by one, so
    on PostgreSQL it can deadlock with such a transaction, and PostgreSQL may
    abort the ``TRUNCATE``: the rows would outlive the test. (SQLite's flush
    queues for the one write lock instead.) The flush runs in a transaction,
    so trying it again is safe.
    """
    import psycopg.errors
    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: BaseDatabaseOperations, sql_list: Iterable[str]) -> None:
        statements = list(sql_list)
        for attempt in range(1, 11):
            try:
                flush(self, statements)
                return
            except OperationalError as exc:
                if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected) or attempt == 10:
                    raise
                FLUSH_DEADLOCKS.append(attempt)
                time.sleep(0.1 * attempt)

    DatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]


def postgres_sessions_end(*, timeout: float = 15.0) -> None:
    """Once the stack has stopped: wait up to ``timeout`` s for the other sessions on the test database to
    end, then end the ones left (``pg_terminate_backend``), naming their processes in a warning.

    pytest-django drops the test database next, and PostgreSQL refuses to drop a database anyone is
    connected to. Does nothing on SQLite.
    """
    if POSTGRES is None or POSTGRES.port is None:
        return
    import psycopg
    from django.db import connections

    connections.close_all()  # this thread's own connection
    query = (
        "SELECT pid, client_port, application_name, state, left(query, 160) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()"
    )
    port = POSTGRES.port
    with psycopg.connect(
        host="127.0.0.1", port=port, user=USER, password=POSTGRES.password, dbname="postgres", autocommit=True
    ) as admin:
        deadline = time.monotonic() + timeout
        while (left := admin.execute(query, (TEST_POSTGRES_DATABASE,)).fetchall()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not left:
            return
        described = [
            f"backend {pid} ({state}, last query: {last!r}) of {_process_on_port(client_port, port)}"
            for pid, client_port, _, state, last in left
        ]
        LEFT_SESSIONS.extend(described)
        warnings.warn(
            f"{len(left)} session(s) still on {TEST_POSTGRES_DATABASE} {timeout:.0f} s after the stack stopped, "
            "ended so that the database can be dropped: " + "; ".join(described),
            stacklevel=2,
        )
        for pid, *_ in left:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


#: The sessions :func:`postgres_sessions_end` had to end (reported at the end).
LEFT_SESSIONS: list[str] = []


def _process_on_port(local_port: int | None, server_port: int) -> str:
    """``pid <n> (<command line>)`` of the local process whose TCP socket ``local_port`` talks to
    ``server_port``, from ``/proc``; ``"an unknown process"`` when not found."""
    if local_port is None:
        return "an unknown process (Unix socket)"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == server_port:
                inodes.add(f"socket:[{inode}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                own = " (this pytest process)" if int(proc.name) == os.getpid() else ""
                return f"pid {proc.name}{own} ({cmdline[:120]})"
        except OSError:
            continue
    return "an unknown process"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Once pytest-django has set Django up (importing the backend earlier would be circular)."""
    if POSTGRES is not None:
        _flush_retried_on_deadlock()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop PostgreSQL once the session is over (pytest-django has dropped the test database by then)."""
    if POSTGRES is not None:
        POSTGRES.stop()


def pytest_report_header(config: pytest.Config) -> str:
    where = os.environ["DATABASE_URL"].rsplit("@", 1)[-1]  # without the password
    return f"notiflow test database: {TEST_DB} ({where}); stack folder: {VAR_DIR}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for described in LEFT_SESSIONS:
        terminalreporter.write_line(f"notiflow: a session left on the test database was ended: {described}")
    if FLUSH_DEADLOCKS:
        terminalreporter.write_line(
            f"notiflow: {len(FLUSH_DEADLOCKS)} test flush(es) deadlocked with the worker on PostgreSQL and were retried"
        )
