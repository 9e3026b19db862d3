"""Fault-injection drills at a chosen size, with a no-fault baseline from the same run.

    python -m bench.faults                 # every scenario, 1,000 events each
    python -m bench.faults --size 200 --only worker redis

It starts its own stack (Redis, SMTP, ASGI server, worker, beat; each under
its own honcho) in ``var/bench-faults`` with ``tests.settings`` (the
test-only ``test.fault`` event type and short clocks: retries capped at 3 s,
the outbox relay and the recovery sweep every 2 s, recovery after 10 s), runs
the drills of :mod:`webapp.faults` one after the other and prints a Markdown
table: events emitted, notifications stored, emails received, duplicates,
lost, dead letters, the time to recover (from the repair to the last email;
for the baseline, from the first emit to the last email), and that time
divided by the baseline's, which holds better than seconds on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="events per scenario (default 1000)")
    parser.add_argument("--broker-outage", type=float, default=30.0, help="seconds Redis stays down (default 30)")
    parser.add_argument("--smtp-outage", type=float, default=60.0, help="seconds SMTP stays down (default 60)")
    parser.add_argument(
        "--slow-size",
        type=int,
        default=60,
        help="events of the slow-provider drill (default 60: at 2-5 s a message, 10,000 would take hours)",
    )
    scenarios = ["baseline", "worker", "redis", "broker", "smtp", "slow", "reject", "poison", "bad-input"]
    parser.add_argument("--only", nargs="+", choices=scenarios, help="run only these scenarios")
    args = parser.parse_args(argv)

    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from webapp.stack import Stack

    stack = Stack(
        var_dir=ROOT / "var" / "bench-faults",
        processes=("redis", "smtp", "web", "worker", "beat"),
        settings_module="tests.settings",
    )
    stack.prepare(fresh=True)
    stack.apply_env()
    stack.manage("migrate", "--noinput", "-v", "0")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from webapp import faults

    recipients = [
        get_user_model().objects.create_user(username=f"bench{i}", email=f"bench{i}@example.com").pk for i in range(10)
    ]
    size = args.size
    drills: dict[str, Callable[[], faults.DrillReport]] = {
        "baseline": lambda: faults.drill_baseline(stack, recipients, size),
        "worker": lambda: faults.drill_worker_killed(stack, recipients, size),
        "redis": lambda: faults.drill_redis_restarted(stack, recipients, size),
        "broker": lambda: faults.drill_broker_down(stack, recipients, size, outage=args.broker_outage),
        "smtp": lambda: faults.drill_smtp_down(stack, recipients, size, outage=args.smtp_outage),
        "slow": lambda: faults.drill_slow_provider(stack, recipients, args.slow_size),
        "reject": lambda: faults.drill_smtp_rejects(stack, recipients, size),
        "poison": lambda: faults.drill_poison(stack, recipients, size),
        "bad-input": lambda: faults.drill_bad_input(stack, recipients),
    }
    print(f"Starting the stack in {stack.var_dir} ...", flush=True)
    stack.start(log_to=stack.var_dir / "stack.log", separately=True)
    reports: list[faults.DrillReport] = []
    started = time.monotonic()
    try:
        stack.wait_ready(timeout=120)
        for name in args.only or scenarios:
            print(f"- {name} ...", flush=True)
            report = drills[name]()
            reports.append(report)
            print(f"  {dict(zip(report.HEADER, report.row(), strict=True))} {report.notes}", flush=True)
    finally:
        stack.stop()

    print(
        f"\nnotiflow fault drills: {size} events per scenario, {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s in all\n"
    )
    baseline = next((r.recover_seconds for r in reports if r.scenario.startswith("no fault")), None)
    header = [*faults.DrillReport.HEADER, "recover ÷ baseline"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for report in reports:
        ratio = f"{report.recover_seconds / baseline:.2f}" if baseline and report.recover_seconds else "-"
        print("| " + " | ".join([*report.row(), ratio]) + " |")
    bad = [r for r in reports if r.duplicates or r.lost]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
