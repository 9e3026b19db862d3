"""CPU time per process role of the bench's stack (psutil): where the cores go, per event or per task.

:class:`CpuMeter` snapshots the user + system CPU seconds of this process
and of every process below it (honcho, redis-server, the SMTP sink, daphne,
the Celery worker's main process and its pool, beat, PostgreSQL when the
bench started it), grouped by role; the difference of two snapshots over a
phase, divided by the events or tasks of that phase, is the CPU each role
spent per unit of work. A process that ended between the snapshots (a
restarted worker) is counted as far as its last snapshot; one that ended
before the first of them is not counted (``bench.hotpath --rounds``
restarts the worker in every round).
"""

from __future__ import annotations

import os
from collections import defaultdict

import psutil

ROLES = ("bench", "worker-main", "worker-pool", "web", "smtp", "redis", "postgres", "beat", "other")


_SHELLS = ("sh", "bash", "dash")


def _role(proc: psutil.Process, parent_cmd: str, parent_name: str) -> str:
    cmd = " ".join(proc.cmdline())
    if proc.pid == os.getpid():
        return "bench"
    if "redis-server" in cmd:
        return "redis"
    if cmd.startswith("postgres") or "/bin/postgres" in cmd:
        return "postgres"
    if "daphne" in cmd or "webapp.server" in cmd:
        return "web"
    if "mailsink" in cmd or "smtp" in cmd:
        return "smtp"
    if "celery" in cmd and " beat" in cmd:
        return "beat"
    if "celery" in cmd and "worker" in cmd:
        # honcho starts the main process through a shell; the pool processes are the main process's children
        pooled = "celery" in parent_cmd and "worker" in parent_cmd and parent_name not in _SHELLS
        return "worker-pool" if pooled else "worker-main"
    return "other"


class CpuMeter:
    """``snapshot()`` the CPU seconds per role; ``since(snapshot)`` the seconds spent per role after it.

    ``postgres_dir``: the data directory of a PostgreSQL the bench started
    (its postmaster is not a child of the bench: ``pg_ctl`` detaches it);
    that server and its backends count as "postgres".
    """

    def __init__(self, *, postgres_dir: str | None = None) -> None:
        self._last: dict[int, tuple[str, float]] = {}
        self.postgres_dir = postgres_dir

    def _processes(self) -> list[psutil.Process]:
        me = psutil.Process()
        found = [me, *me.children(recursive=True)]
        if self.postgres_dir:
            for proc in psutil.process_iter(["cmdline"]):
                if self.postgres_dir in " ".join(proc.info["cmdline"] or ()):
                    found += [proc, *proc.children(recursive=True)]
        return found

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """``{pid: (role, cpu seconds so far)}`` for this process and its descendants (honcho is "other"), and for
        every process an earlier snapshot saw that has ended since (its figures then): over a phase, a process
        that ended before it (a worker an earlier phase restarted) spent nothing in it."""
        seen: dict[int, tuple[str, float]] = {}
        for proc in self._processes():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    parent = proc.parent()
                    parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
                    parent_name = parent.name() if parent is not None else ""
                    seen[proc.pid] = (_role(proc, parent_cmd, parent_name), times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._last.update(seen)
        return dict(self._last)

    def since(self, before: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds per role spent since ``before`` (a :meth:`snapshot`), plus ``"total"``."""
        after = self.snapshot()
        spent: dict[str, float] = defaultdict(float)
        for pid, (role, seconds) in after.items():
            spent[role] += seconds - before.get(pid, (role, 0.0))[1]
        spent["total"] = sum(v for k, v in spent.items() if k != "total")
        return dict(spent)


def per_unit_ms(spent: dict[str, float], units: int) -> dict[str, float]:
    """``spent`` (seconds per role) as milliseconds per unit of work, rounded; roles that spent nothing left out."""
    return {role: round(1000 * seconds / units, 3) for role, seconds in spent.items() if seconds > 0 and units}
