"""Sending a batch of emails over one connection: notiflow's SMTP backend against Django's, in the same run.

    python -m bench.emails                     # 1,000 emails a round, 4 rounds of each backend, alternating
    python -m bench.emails --emails 300 --rounds 10

It starts the local SMTP server the stack runs (``python -m aiosmtpd -c
webapp.mailsink.Maildir``, a Maildir in ``/dev/shm`` when it exists) and
sends ``--emails`` of the demo's ``critique.created`` emails (multipart text
and HTML, a non-ASCII subject) through :meth:`delivery.email.EmailMethod.send`,
one batch a round, with each backend in turn:

- ``notiflow``: ``delivery.smtp.EmailBackend`` (``PIPELINING``: each email's
  envelope in one write, written before the verdict on the email before is
  read);
- **baseline** ``django``: ``django.core.mail.backends.smtp.EmailBackend``
  (``smtplib``: each command waits for its reply, four round trips an email).

Per round it prints emails/s (first send to last verdict) and the CPU
milliseconds per email of this process (the sender: rendering, building,
writing) and of the server (``/proc/<pid>/stat``). The summary gives each
backend's median and the ratio notiflow ÷ django of the medians. Every
email must be accepted and arrive (counted in the Maildir), or it exits 1.
JSON in ``var/bench/emails.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.hotpath import BENCH_SECRETS, SETTINGS_MODULE

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"notiflow": "delivery.smtp.EmailBackend", "django": "django.core.mail.backends.smtp.EmailBackend"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def messages(count: int, prefix: str) -> list[Any]:
    """``count`` messages of the demo's ``critique.created`` to bob, keys ``<prefix>-<n>``."""
    from delivery.base import Message, Recipient

    return [
        Message(
            delivery_id=n,
            notification_id=n,
            event_type="critique.created",
            category="critiques",
            recipient=Recipient(id=2, username="bob", email="bob@example.com"),
            # title.txt and body.txt as the pipeline renders them (the email's subject and text)
            title=f"alice critiqued your artwork “bench {prefix}-{n}”",
            body="alice wrote: “the light on the water is lovely”",
            template_dir="notiflow/events/critique_created",
            context={
                "data": {"artwork_title": f"bench {prefix}-{n}", "excerpt": "the light on the water is lovely"},
                "actor": {"id": 1, "username": "alice"},
                "recipient": {"id": 2, "username": "bob"},
            },
            key=f"{prefix}-{n}",
        )
        for n in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=1000, help="emails per round (1000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each backend, alternating (4)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "emails.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from webapp.stack import free_port, smtp_ready, wait_for

    port = free_port()
    os.environ.update({"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "EMAIL_PORT": str(port), **BENCH_SECRETS})
    import django

    django.setup()
    from delivery.base import Outcome
    from delivery.email import EmailMethod

    mail_dir = Path(
        tempfile.mkdtemp(prefix="notiflow-bench-email-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "webapp.mailsink.Maildir",
            str(mail_dir),
        ],
        cwd=ROOT,
    )
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in BACKENDS}
    try:
        if not wait_for(lambda: smtp_ready(port)):
            raise RuntimeError(f"the SMTP server did not greet on port {port} within 20 s")
        methods = {name: EmailMethod(alias="email", options={"backend": path}) for name, path in BACKENDS.items()}
        for name, method in methods.items():  # warm up: templates loaded, addresses remembered
            list(method.send(messages(20, f"warm-{name}")))
        expected = 40
        for r in range(args.rounds):
            for name, method in methods.items():
                batch = messages(args.emails, f"{name}-{r}")
                cpu, server_cpu, began = time.process_time(), cpu_seconds(server.pid), time.perf_counter()
                results = list(method.send(batch))
                wall = time.perf_counter() - began
                cpu, server_cpu = time.process_time() - cpu, cpu_seconds(server.pid) - server_cpu
                refused = [x for x in results if x.outcome is not Outcome.SENT]
                if refused:
                    print(f"{name}: {len(refused)} emails not sent, first: {refused[0]}", file=sys.stderr)
                    return 1
                expected += args.emails
                row = {
                    "emails_per_s": args.emails / wall,
                    "sender_cpu_ms_per_email": cpu / args.emails * 1e3,
                    "server_cpu_ms_per_email": server_cpu / args.emails * 1e3,
                }
                rounds[name].append(row)
                print(
                    f"round {r + 1} {name:8s} {row['emails_per_s']:7.1f} emails/s, CPU ms per email: "
                    f"sender {row['sender_cpu_ms_per_email']:.3f}, server {row['server_cpu_ms_per_email']:.3f}",
                    flush=True,
                )
        time.sleep(0.2)
        arrived = len(os.listdir(mail_dir / "new"))
        if arrived != expected:
            print(f"{arrived} emails arrived of {expected} sent", file=sys.stderr)
            return 1
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(mail_dir, ignore_errors=True)

    summary = {
        name: {key: statistics.median(row[key] for row in rows) for key in rows[0]} for name, rows in rounds.items()
    }
    ratio = summary["notiflow"]["emails_per_s"] / summary["django"]["emails_per_s"]
    print(f"\n{args.emails} emails a round, {args.rounds} rounds each, medians; all {expected} arrived\n")
    print("| figure | notiflow's backend | Django's (baseline) | notiflow ÷ Django |")
    print("|---|---|---|---|")
    for key, label in (
        ("emails_per_s", "emails/s"),
        ("sender_cpu_ms_per_email", "sender CPU ms per email"),
        ("server_cpu_ms_per_email", "server CPU ms per email"),
    ):
        ours, theirs = summary["notiflow"][key], summary["django"][key]
        print(f"| {label} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"emails": args.emails, "rounds": rounds, "medians": summary, "ratio": ratio}, indent=2)
    )
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
