"""A private PostgreSQL server for development and benchmarks, started like the stack's private Redis.

No Docker and no system service: Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``, package ``postgresql``; install them
with ``./scripts/ensure-system.sh --postgres``) run a cluster of its own in a
folder of ``var/``, on a free loopback port::

    postgres = PrivatePostgres(ROOT / "var" / "bench" / "postgres")
    url = postgres.start()   # postgres://notiflow:<password>@127.0.0.1:<port>/notiflow
    try:
        stack = Stack(var_dir=..., extra_env={"DATABASE_URL": url})
        ...
    finally:
        postgres.stop()

Layout of ``var_dir``: ``data/`` (the cluster, made by ``initdb`` on the first
start), ``socket/`` (the Unix socket; nothing else listens on it),
``password`` (the role's password, kept for the next start) and
``postgres.log`` (the server's log). TCP connections authenticate with
``scram-sha-256``, PostgreSQL's default; fsync and the other server settings
are the defaults, unless ``settings`` names some (a benchmark's variant, such
as ``{"checkpoint_timeout": "30min"}``).

PostgreSQL refuses to run as root, so when this process is root, ``initdb``,
``pg_ctl`` and the server run as the Debian ``postgres`` system user
(``runuser``) and ``var_dir`` is handed to that user (``chown -R``). This is
development tooling, like :mod:`webapp.stack`; the library (``pipeline/``,
``delivery/``) never imports it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from webapp.stack import free_port

#: The role that owns the cluster and the database, and the database's name.
USER = "notiflow"
DATABASE = "notiflow"
#: Where Debian installs each major version's server binaries.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The system user the server runs as when this process is root.
SYSTEM_USER = "postgres"
#: A Unix socket path may not be longer than this (``sun_path`` of ``sockaddr_un`` on Linux, minus the NUL).
_MAX_SOCKET_PATH = 107


class PostgresError(RuntimeError):
    """PostgreSQL is not installed, or ``initdb``, the server or the database creation failed."""


def postgres_bin_dir() -> Path:
    """The folder of the newest PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``).

    Debian's ``/usr/lib/postgresql/<major>/bin`` first (highest major
    version), else the folder of an ``initdb`` on ``PATH``. Raises
    :class:`PostgresError` when there is none.
    """
    installed = sorted(glob.glob(DEBIAN_BIN_GLOB + "/initdb"), key=_major, reverse=True)
    if installed:
        return Path(installed[0]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `./scripts/ensure-system.sh --postgres` "
        "(as root it installs Debian's `postgresql` package) or put a PostgreSQL bin folder on PATH."
    )


def _major(initdb: str) -> int:
    match = re.search(r"/(\d+)/bin/initdb$", initdb)
    return int(match.group(1)) if match else 0


class PrivatePostgres:
    """One PostgreSQL cluster in ``var_dir``, served on a free loopback port while started.

    :meth:`start` creates the cluster on first use and returns the database
    URL; :meth:`stop` stops the server (the data stays for the next start).
    Also a context manager (``with PrivatePostgres(path) as url: ...``).
    """

    def __init__(self, var_dir: Path, *, settings: Mapping[str, str] | None = None) -> None:
        self.var_dir = var_dir.resolve()
        #: Server settings given at start (``-c name=value``), over the defaults: a benchmark's variant.
        self.settings = dict(settings or {})
        for name, value in self.settings.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_.]*", name) or not re.fullmatch(r"[A-Za-z0-9_.:+-]+", value):
                raise ValueError(f"not a server setting this tooling passes on: {name}={value!r}")
        self.data_dir = self.var_dir / "data"
        self.socket_dir = self.var_dir / "socket"
        self.log_file = self.var_dir / "postgres.log"
        self.password_file = self.var_dir / "password"
        #: The TCP port while started, else ``None``.
        self.port: int | None = None
        self._run_as: str | None = SYSTEM_USER if os.geteuid() == 0 else None

    # -- life cycle -------------------------------------------------------
    def start(self, *, timeout: float = 60.0) -> str:
        """Start the server (``initdb`` first if ``data/`` is empty) and create the database if missing.

        Returns ``postgres://notiflow:<password>@127.0.0.1:<port>/notiflow``.
        ``timeout`` is in seconds, for the server to accept connections. A
        server left running in ``var_dir`` by an earlier run is stopped first.
        Raises :class:`PostgresError` (binaries missing; running as root
        with no ``postgres`` user, or a ``var_dir`` that user cannot reach;
        ``initdb`` or ``pg_ctl`` failed; the database could not be created).
        """
        bin_dir = postgres_bin_dir()
        socket_path = self.socket_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise PostgresError(f"{self.socket_dir} is too long a path for a Unix socket; use a shorter var_dir.")
        for folder in (self.var_dir, self.socket_dir, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_hex(16) + "\n")
        self.password_file.chmod(0o600)
        self._hand_over()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                bin_dir / "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                USER,
                "--pwfile",
                str(self.password_file),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                what="initdb",
            )
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl_stop(bin_dir, timeout=timeout)
        port = free_port()
        options = f"-p {port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            bin_dir / "pg_ctl",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "--options",
            options,
            "--wait",
            "--timeout",
            str(int(timeout)),
            "start",
            what="pg_ctl start",
        )
        self.port = port
        try:
            self._create_database()
        except PostgresError:
            self.stop(timeout=timeout)
            raise
        return self.url

    def stop(self, *, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and wait up to ``timeout`` s.

        Does nothing if it is not running. Raises :class:`PostgresError` if
        ``pg_ctl stop`` fails.
        """
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl_stop(postgres_bin_dir(), timeout=timeout)
        self.port = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def password(self) -> str:
        """The ``notiflow`` role's password (made on the first start). Raises ``OSError`` before that."""
        return self.password_file.read_text().strip()

    @property
    def url(self) -> str:
        """The database URL while started; raises :class:`PostgresError` otherwise."""
        if self.port is None:
            raise PostgresError("the private PostgreSQL is not started")
        return f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    # -- helpers ----------------------------------------------------------
    def _hand_over(self) -> None:
        """As root, give ``var_dir`` to the ``postgres`` user (the server will not run as root)."""
        if self._run_as is None:
            return
        try:
            account = pwd.getpwnam(self._run_as)
        except KeyError as exc:
            raise PostgresError(
                f"running as root, but there is no {self._run_as!r} system user to run PostgreSQL as "
                "(Debian's postgresql-common package creates it)."
            ) from exc
        for path in [self.var_dir, *self.var_dir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        if self._run("/usr/bin/test", "-w", str(self.var_dir), what="", check=False) != 0:
            raise PostgresError(
                f"the {self._run_as!r} user cannot reach {self.var_dir}: every folder above it must be searchable "
                "by other users (chmod o+x), or use a var_dir elsewhere."
            )

    def _run(self, program: Path | str, *args: str, what: str, check: bool = True) -> int:
        """Run ``program`` (as the ``postgres`` user when root); its exit code. With ``check``, a non-zero
        exit raises :class:`PostgresError` with its output and the end of the server's log."""
        command = [str(program), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        result = subprocess.run(  # noqa: S603 - our own command line, no shell
            command, cwd=self.var_dir, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-10:])
            raise PostgresError(
                f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}"
                + (f"\nlast lines of {self.log_file}:\n{log_tail}" if log_tail else "")
            )
        return result.returncode

    def _pg_ctl_stop(self, bin_dir: Path, *, timeout: float) -> None:
        status = self._run(bin_dir / "pg_ctl", "--pgdata", str(self.data_dir), "status", what="", check=False)
        if status == 3:  # not running: a stale postmaster.pid the server removes on its next start
            return
        self._run(
            bin_dir / "pg_ctl",
            "--pgdata",
            str(self.data_dir),
            "--mode",
            "fast",
            "--wait",
            "--timeout",
            str(int(timeout)),
            "stop",
            what="pg_ctl stop",
        )

    def _create_database(self) -> None:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=USER,
                password=self.password,
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
        except psycopg.Error as exc:
            raise PostgresError(f"could not create the database {DATABASE!r}: {exc}") from exc
