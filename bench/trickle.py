"""Database transactions and CPU per event under a steady trickle, against ``bench.noop`` at the same rate.

``python -m bench.trickle [--rate 100] [--events 1000] [--root TREE]``

Counts rather than times, so that a change of a few statements per event
shows through a machine whose speed drifts from one run to the next. On a
private PostgreSQL (``webapp.postgres``, as ``make bench`` starts it) with
Redis, the SMTP server and one worker (``--concurrency=2``, loading
``bench.noop``), and no WebSocket client (each push is recorded
``skipped``):

1. **baseline**: ``--events`` ``bench.noop.apply_async()`` calls paced at
   ``--rate`` per second; CPU seconds per task, all processes
   (``bench.cpu``), from the first call until the last completion is written.
2. **notiflow**: ``--events`` ``emit_event()`` calls (one recipient;
   in-app, WebSocket, email), paced the same way, until no delivery is
   ``queued`` or ``retrying``; CPU per event, and database transactions per
   event: the growth of ``xact_commit + xact_rollback`` in
   ``pg_stat_database``, read 1.5 s after the end because a backend
   publishes its counters at most once a second (``PGSTAT_MIN_INTERVAL``).
   It includes the caller's own ``INSERT`` (one per event) and the
   benchmark's few polls.

``--root`` runs another tree's pipeline (a ``git worktree`` of another
commit) with this benchmark, for before/after comparisons. Prints the
figures and writes them as JSON to ``--out`` (``var/bench/trickle.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events (and no-op tasks) per second")
    parser.add_argument("--events", type=int, default=1000, help="events (and no-op tasks) per phase")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose pipeline runs (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "trickle.json")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)  # the Procfile and manage.py of that tree

    from bench.cpu import CpuMeter
    from bench.hotpath import BENCH_SECRETS, SETTINGS_MODULE, NoopLog, paced
    from webapp.stack import Stack

    var_dir = root / "var" / "bench" / "trickle"
    noop_dir = var_dir / "noop"
    stack = Stack(
        var_dir=var_dir,
        processes=("redis", "smtp", "worker"),
        settings_module=SETTINGS_MODULE,
        extra_env={
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            **BENCH_SECRETS,
            "WORKER_OPTIONS": "--include=bench.noop",
            "NOTIFLOW_BENCH_NOOP_DIR": str(noop_dir),
            "DATABASE_URL": f"sqlite:///{var_dir / 'db.sqlite3'}",
        },
    )
    stack.prepare(fresh=True)
    noop_dir.mkdir()
    postgres = stack.use_postgres()
    try:
        stack.apply_env()
        stack.manage("migrate", "--noinput", "-v", "0")
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connection

        from bench.noop import noop
        from pipeline import emit_event, publishing
        from pipeline.models import Delivery

        users = get_user_model().objects
        bob = users.create_user(username="bob", email="bob@example.com").pk
        alice = users.create_user(username="alice", email="alice@example.com").pk
        stack.start(log_to=var_dir / "stack.log", separately=True)
        stack.wait_ready(timeout=60)
        meter = CpuMeter(postgres_dir=str(var_dir / "postgres"))
        noops = NoopLog(noop_dir)

        def emit(i: int) -> None:
            emit_event(event_type="critique.created", audience=[bob], actor=alice, data={"artwork_title": f"t {i}"})

        def transactions() -> int:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
                )
                (count,) = cursor.fetchone() or (0,)
                return int(count)

        def delivered() -> bool:
            unsent = (Delivery.Status.QUEUED, Delivery.Status.RETRYING)
            return not Delivery.objects.filter(status__in=unsent).exists()

        for i in range(20):  # warm: the worker's connections, the templates
            emit(i)
            noop.apply_async()
        noops.wait(20, stall=30, what="warm-up")
        while not delivered():
            time.sleep(0.1)
        time.sleep(1.5)

        n, rate = args.events, args.rate
        print(f"baseline: {n} bench.noop tasks at {rate}/s ...", flush=True)
        before = meter.snapshot()
        paced(n, rate, lambda i: noop.apply_async())
        noops.wait(n, stall=30, what="baseline")
        noop_cpu = meter.since(before)

        print(f"notiflow: {n} events at {rate}/s ...", flush=True)
        time.sleep(1.5)
        x0, before = transactions(), meter.snapshot()
        paced(n, rate, emit)
        publishing.ringer.flush()
        while not delivered():
            time.sleep(0.1)
        event_cpu = meter.since(before)
        time.sleep(1.5)
        x1 = transactions()
        result = {
            "rate_per_s": rate,
            "events": n,
            "transactions_per_event": round((x1 - x0) / n, 3),
            "cpu_ms_per_event": {k: round(v / n * 1000, 3) for k, v in sorted(event_cpu.items())},
            "cpu_ms_per_noop_task": {k: round(v / n * 1000, 3) for k, v in sorted(noop_cpu.items())},
            "root": str(root),
        }
    finally:
        stack.stop()
        postgres.stop()
    ratio = result["cpu_ms_per_event"]["total"] / max(result["cpu_ms_per_noop_task"]["total"], 1e-9)
    print(
        f"\ntrickle at {rate}/s, {n} each ({root}):\n"
        f"  database transactions per event: {result['transactions_per_event']}\n"
        f"  CPU ms per event, all processes: {result['cpu_ms_per_event']['total']} "
        f"(worker pool {result['cpu_ms_per_event'].get('worker-pool', 0)})\n"
        f"  CPU ms per no-op task, all processes (baseline): {result['cpu_ms_per_noop_task']['total']}\n"
        f"  ratio: {ratio:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
