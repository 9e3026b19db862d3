"""A soak run of the hot path: memory, queue lengths and latency over minutes at a steady rate.

    python -m bench.soak --db sqlite                    # 10 minutes at half the sustained rate
    python -m bench.soak --db postgres --minutes 30 --rate 20

The stack and the workload are :mod:`bench.hotpath`'s, reused from it
(:class:`Soak` is a :class:`bench.hotpath.HotPath`): the ``Procfile``'s redis,
smtp, web (daphne), worker (2 pool processes) and beat, each under its own
honcho, with ``webapp.settings.prod`` and throw-away secrets, in
``var/bench/soak-<db>`` (emptied first; with ``--db postgres`` a private
PostgreSQL in its ``postgres/``); bob connected on one real WebSocket; every
event ``emit_event(event_type="critique.created", audience=[bob],
actor=alice, data=...)`` outside a transaction (in-app, WebSocket, email),
its email matched by the ``hotpath <tag>`` its subject carries.

1. **rate**: ``--rate`` events/s, or half of the sustained rate measured
   first exactly as hotpath's phase b does (``--burst-events`` emitted back
   to back, events/s = n / (first emit -> last push, email or delivery
   recorded ``sent``)).
2. **soak**: emits paced at that rate (the i-th due at start + i / rate,
   late ones sent at once) for ``--minutes``. Every ``--interval`` (10) s,
   between two emits, one sample:

   - ``VmRSS`` (KiB, ``/proc/<pid>/status``) of the worker's main process,
     each pool process, daphne and redis-server. The pids are found afresh
     each time from the process tree: the honcho processes whose
     ``/proc/<pid>/environ`` has this stack's ``VAR_DIR``, then their
     descendants by ``PPid``, classified by command line (``celery -A worker
     worker``: the one whose parent is not a worker process is the main
     process, its children are the pool, ``pool-1``, ``pool-2`` by pid;
     ``daphne``; ``redis-server`` by ``comm``, as Redis rewrites its command
     line). A label whose pid changed (a pool process replaced) is reported.
   - the length of each Celery queue on the broker's Redis database
     (``LLEN`` of the list of each of ``QUEUES``, summed over kombu's
     priority lists ``<queue>\\x06\\x16<n>``) and ``HLEN unacked`` (messages
     a worker holds, not yet acknowledged);
   - events still pending: ``Event.objects.filter(completed_at__isnull=True).count()``;
   - emit -> push and emit -> email p50 / p99 (ms) of the events *emitted*
     in that interval (filled in at the end, when every push is in; the
     line printed live shows those in so far).

3. **drain**: wait until every push and email is in and every delivery is
   recorded ``sent`` (hotpath's rules: ``--stall-seconds`` without progress
   fails, pushes still missing 5 s after the rest is in are lost), then
   one more sample, and count lost and duplicate pushes, emails and
   notifications.

Printed at the end: RSS first-minute average (the first 60 s of samples,
six at 10 s) vs last-minute average (the last six) per process, with the
change in % (target: within 10 %); per queue, the unacked hash and pending
events: the maximum and a least-squares slope (items per minute); a series
grew when the fit rises by at least ``--growth-threshold`` (10) items over
the run (slope x duration) and the slope is more than three standard errors
above zero (a queue that fills and empties in bursts, as ``deliver.email``
does in batches of 100, has a noisy slope); p50 / p99 per minute of emit time, steady when no minute's p99
exceeds twice their median; lost / duplicate counts. With ``--minutes 1``
the first and the last minute are the same samples.

Every figure and the time series go as JSON to ``--out`` (default
``var/bench/soak-<db>.json``), also on failure (``"error"``). Exit status 1
on failure or when an email or a notification was lost or duplicated
(pushes are counted, not failed: the channel layer is at-most-once).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.connections import rss_kib
from bench.hotpath import ROOT, BenchError, Emitted, HotPath, percentile, postgres_setting_argument

#: The broker's Celery queues sampled (kombu keeps each one as a Redis list named after it).
QUEUES = ("events", "deliver.email", "deliver.websocket", "digest", "dead_letter")
#: kombu's Redis transport: a message with priority n > 0 goes to ``<queue><sep><n>``, n in these steps.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
#: kombu's hash of delivered, not yet acknowledged messages (``unacked_key``).
UNACKED_KEY = "unacked"
#: Label of each series in the summaries, besides the queues.
EXTRA_SERIES = ("unacked", "pending_events")


# -- the stack's processes --------------------------------------------------------------------------------------------


def _argv(pid: str) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def _ppid_comm(pid: str) -> tuple[int, str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return int(text.rsplit(")", 1)[1].split()[1]), comm


def _has_env(pid: str, assignment: bytes) -> bool:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return assignment in f.read().split(b"\0")


def _is_celery_worker(argv: Sequence[str]) -> bool:
    """``[python] .../celery -A <app> worker ...``: the first word after ``celery`` and its ``-A`` is ``worker``."""
    names = [os.path.basename(a) for a in argv[:2]]
    if "celery" not in names:
        return False
    rest = list(argv[names.index("celery") + 1 :])
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("-A", "--app") else rest[1:]
    return bool(rest) and rest[0] == "worker"


def stack_processes(var_dir: Path) -> dict[str, int]:
    """``{label: pid}`` of the running stack's processes: ``worker``, ``pool-1``..., ``daphne``, ``redis``.

    The roots are the honcho processes whose environment has ``VAR_DIR=<var_dir>``
    (:class:`webapp.stack.Stack` sets it); every descendant is classified by its
    command line. A process that exits while being read is left out.
    """
    tree: dict[int, tuple[int, str, list[str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid, comm = _ppid_comm(entry.name)
            tree[int(entry.name)] = (ppid, comm, _argv(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    mark = f"VAR_DIR={var_dir}".encode()
    roots: list[int] = []
    for pid, (_, _, argv) in tree.items():
        if "honcho" in argv[:3]:
            try:
                if _has_env(str(pid), mark):
                    roots.append(pid)
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in tree.items():
        children.setdefault(ppid, []).append(pid)
    descendants: list[int] = []
    todo = list(roots)
    while todo:
        kids = children.get(todo.pop(), [])
        descendants += kids
        todo += kids
    found: dict[str, int] = {}
    workers = {pid for pid in descendants if _is_celery_worker(tree[pid][2])}
    mains = sorted(pid for pid in workers if tree[pid][0] not in workers)
    if mains:
        found["worker"] = mains[0]
        for i, pid in enumerate(sorted(p for p in workers if tree[p][0] == mains[0]), start=1):
            found[f"pool-{i}"] = pid
    for pid in descendants:
        _, comm, argv = tree[pid]
        if "daphne" in (os.path.basename(a) for a in argv[:2]) or "webapp.server" in argv[:3]:
            found.setdefault("daphne", pid)
        elif comm == "redis-server":
            found.setdefault("redis", pid)
    return found


# -- figures ----------------------------------------------------------------------------------------------------------


def trend(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of ``(t seconds, y)`` points and its standard error, both in y per minute.

    ``(0, inf)`` with fewer than 3 points at distinct times (no error to estimate).
    """
    xs, ys = [t / 60 for t, _ in points], [y for _, y in points]
    if len(set(xs)) < 2 or len(xs) < 3:
        return 0.0, math.inf
    fit = statistics.linear_regression(xs, ys)
    mean_x = statistics.fmean(xs)
    residuals = sum((y - (fit.slope * x + fit.intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    spread = sum((x - mean_x) ** 2 for x in xs)
    return float(fit.slope), math.sqrt(residuals / (len(xs) - 2) / spread)


def latency_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """``{"n", "p50_ms", "p99_ms", "max_ms"}`` (``None`` when empty)."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# -- the soak run -----------------------------------------------------------------------------------------------------


class Soak(HotPath):
    """One soak run: :meth:`run` sets up (as hotpath), measures the rate, soaks, drains, reports; its exit status."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.var_dir = ROOT / "var" / "bench" / f"soak-{args.db}"
        self.samples: list[dict[str, Any]] = []
        self.redis: Any = None

    # -- one sample -------------------------------------------------------
    def broker(self) -> Any:
        if self.redis is None:
            import redis

            self.redis = redis.Redis.from_url(self.running.env["REDIS_URL"], socket_timeout=5)
        return self.redis

    def sample(self, t: float, emitted: Emitted) -> dict[str, Any]:
        """The state at ``t`` s into the soak: RSS, queues, unacked, pending events, pushes and emails in."""
        from pipeline.models import Event

        pids = stack_processes(self.var_dir)
        rss: dict[str, int] = {}
        for label, pid in pids.items():
            try:
                rss[label] = rss_kib(pid)
            except (OSError, RuntimeError):  # exited since the scan
                continue
        pipe = self.broker().pipeline(transaction=False)
        for queue in QUEUES:
            for step in PRIORITY_STEPS:
                pipe.llen(f"{queue}{PRIORITY_SEP}{step}" if step else queue)
        pipe.hlen(UNACKED_KEY)
        replies = pipe.execute()
        k = len(PRIORITY_STEPS)
        queues = {q: sum(replies[i * k : (i + 1) * k]) for i, q in enumerate(QUEUES)}
        self.mailbox.scan()
        return {
            "t_s": round(t, 2),
            "emitted": len(emitted.ids),
            "rss_kib": rss,
            "pids": pids,
            "queues": queues,
            "unacked": replies[-1],
            "pending_events": Event.objects.filter(completed_at__isnull=True).count(),
            "pushes_in": self.rec.arrived(emitted.ids),
            "emails_in": self.mailbox.arrived(emitted.tags),
        }

    def interval_latencies(self, emitted: Emitted, start: float, lo: float, hi: float) -> dict[str, Any]:
        """emit -> push and emit -> email of the events emitted at ``lo < t <= hi`` s after ``start`` (perf)."""
        push: list[float] = []
        email: list[float] = []
        by_tag = self.mailbox.by_tag
        for event_id, tag, perf, wall in zip(emitted.ids, emitted.tags, emitted.perf, emitted.wall, strict=True):
            if not lo < perf - start <= hi:
                continue
            got = self.rec.first(event_id)
            if got is not None:
                push.append(got[1] - perf)
            if tag in by_tag:
                email.append(by_tag[tag][0] - wall)
        return {"emit_to_push": latency_ms(push), "emit_to_email": latency_ms(email)}

    def print_sample(self, s: dict[str, Any], live: dict[str, Any]) -> None:
        rss = " ".join(f"{k} {v / 1024:.1f}" for k, v in s["rss_kib"].items())
        queues = " ".join(f"{k} {v}" for k, v in s["queues"].items())
        p = live["emit_to_push"]
        print(
            f"  t {s['t_s']:6.0f} s  emitted {s['emitted']}  RSS MiB: {rss}  queues: {queues}  unacked {s['unacked']}"
            f"  pending {s['pending_events']}  push p50/p99 {_fmt(p['p50_ms'])}/{_fmt(p['p99_ms'])} ms ({p['n']} in)",
            flush=True,
        )

    # -- phases -----------------------------------------------------------
    def phase_rate(self) -> float:
        """1. ``--rate``, or half the sustained rate of hotpath's phase b."""
        if self.args.rate:
            self.results["rate"] = {"target_per_s": self.args.rate, "source": "--rate"}
            return float(self.args.rate)
        print(f"Sustained rate, as hotpath phase b ({self.args.events} events back to back):", flush=True)
        self.phase_sustained()
        rate = float(self.results["sustained"]["events_per_s"]) / 2
        self.results["rate"] = {"target_per_s": round(rate, 2), "source": "half of the sustained rate"}
        return rate

    def phase_soak(self, rate: float) -> None:
        """2 and 3. Emits paced at ``rate`` for ``--minutes``, sampled every ``--interval`` s; then the drain."""
        duration = self.args.minutes * 60
        interval = self.args.interval
        count = max(1, round(rate * duration))
        print(f"Soak: {count} events at {rate:.1f}/s for {duration:.0f} s, a sample every {interval:.0f} s ...")
        sent0 = self.sent_count()
        emitted = Emitted()
        self.samples = [self.sample(0.0, emitted)]
        start = time.perf_counter()
        next_sample = interval

        def take() -> None:
            s = self.sample(time.perf_counter() - start, emitted)
            self.print_sample(s, self.interval_latencies(emitted, start, self.samples[-1]["t_s"], s["t_s"]))
            self.samples.append(s)

        for i in range(count):
            due = start + i / rate
            while True:
                now = time.perf_counter()
                if now - start >= next_sample:
                    take()
                    next_sample += interval
                elif due > now:
                    time.sleep(min(due, start + next_sample) - now)
                else:
                    break
            if self.rec.ended is not None:
                raise BenchError(f"soak: the WebSocket is gone: {self.rec.ended}")
            self.emit("s", emitted)
        emit_s = time.perf_counter() - start
        while next_sample <= max(duration, emit_s) + 1e-6:  # the samples due until the planned end
            time.sleep(max(0.0, start + next_sample - time.perf_counter()))
            take()
            next_sample += interval
        last_emit = emitted.wall[-1]
        print("Drain: waiting for every push, email and delivery ...", flush=True)
        done = self.wait_delivered("soak", emitted, sent_target=sent0 + self.args.deliveries_per_event * count)
        ends = [t for t in (done["last_push"], done["last_email"], done["deliveries_sent_at"]) if t is not None]
        drained = self.sample(time.perf_counter() - start, emitted)
        for lo, s in zip([0.0, *(x["t_s"] for x in self.samples[1:])], self.samples[1:], strict=False):
            s.update(self.interval_latencies(emitted, start, lo, s["t_s"]))
        minutes = [
            {"minute": m + 1, **self.interval_latencies(emitted, start, m * 60.0, (m + 1) * 60.0)}
            for m in range(math.ceil(max(duration, emit_s) / 60))
        ]
        self.results["soak"] = {
            "events": count,
            "planned_s": duration,
            "emit_loop_s": round(emit_s, 2),
            "achieved_rate_per_s": round(count / emit_s, 2) if emit_s > 0 else None,
            "drain_s": round(max(ends) - last_emit, 2) if ends else None,
            "emit_cost": latency_ms(emitted.cost),
            "emit_to_push": latency_ms(self.push_latencies(emitted)),
            "emit_to_email": latency_ms(self.email_latencies(emitted)),
            **self.tally(emitted),
        }
        self.results["samples"] = self.samples
        self.results["after_drain"] = drained
        self.results["minutes"] = minutes
        self.results["summary"] = self.summary()

    # -- report -----------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        samples = [s for s in self.samples if s["t_s"] > 0]
        if not samples:
            return {}
        end = samples[-1]["t_s"]
        per_minute = max(1, round(60 / self.args.interval))
        first, last = samples[:per_minute], samples[-per_minute:]
        rss: dict[str, Any] = {}
        for label in sorted({k for s in samples for k in s["rss_kib"]}):
            a = _mean([s["rss_kib"][label] / 1024 for s in first if label in s["rss_kib"]])
            b = _mean([s["rss_kib"][label] / 1024 for s in last if label in s["rss_kib"]])
            change = (b - a) / a * 100 if a and b is not None else None
            pids = sorted({s["pids"][label] for s in self.samples if label in s["pids"]})
            rss[label] = {
                "first_minute_mib": None if a is None else round(a, 2),
                "last_minute_mib": None if b is None else round(b, 2),
                "change_pct": None if change is None else round(change, 1),
                "within_10_pct": None if change is None else abs(change) <= 10,
                "pids": pids,
            }
        series: dict[str, list[tuple[float, float]]] = {q: [] for q in (*QUEUES, *EXTRA_SERIES)}
        for s in [self.samples[0], *samples]:
            for q in QUEUES:
                series[q].append((s["t_s"], s["queues"][q]))
            for key in EXTRA_SERIES:
                series[key].append((s["t_s"], s[key]))
        growth: dict[str, Any] = {}
        for name, points in series.items():
            slope, error = trend(points)
            rise = slope * end / 60
            growth[name] = {
                "max": max(y for _, y in points),
                "last": points[-1][1],
                "slope_per_min": round(slope, 3),
                "slope_stderr_per_min": round(error, 3) if math.isfinite(error) else None,
                "rise_over_run": round(rise, 1),
                "grew": rise >= self.args.growth_threshold and slope > 3 * error,
            }
        p99s = [m["emit_to_push"]["p99_ms"] for m in self.results.get("minutes", []) if m["emit_to_push"]["n"]]
        median = statistics.median(p99s) if p99s else None
        latency = {
            "p99_per_minute_ms": p99s,
            "p99_median_ms": median,
            "p99_max_ms": max(p99s) if p99s else None,
            "p99_slope_ms_per_min": round(trend([(i * 60.0, p) for i, p in enumerate(p99s)])[0], 2),
            "steady": bool(p99s) and max(p99s) <= 2 * (median or 0),
        }
        return {"rss": rss, "queues": growth, "latency": latency}

    def report(self) -> str:
        env = self.results.get("environment", {})
        soak = self.results.get("soak", {})
        rate = self.results.get("rate", {})
        lines = [
            f"notiflow soak, {self.args.db}: {env.get('database', '?')}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, commit {env.get('commit', '?')}, {self.results.get('seconds', 0):.0f} s in all",
        ]
        if soak:
            lines.append(
                f"{soak['events']} events in {soak['emit_loop_s']:.0f} s at {_fmt(soak['achieved_rate_per_s'])}/s "
                f"(target {rate.get('target_per_s')}/s, {rate.get('source')}); drain after the last emit "
                f"{_fmt(soak['drain_s'], 2)} s"
            )
        summary = self.results.get("summary") or {}
        if summary:
            rows = [
                [
                    label,
                    _fmt(r["first_minute_mib"]),
                    _fmt(r["last_minute_mib"]),
                    _fmt(r["change_pct"], 1, " %"),
                    "-" if r["within_10_pct"] is None else ("yes" if r["within_10_pct"] else "NO"),
                    ", ".join(map(str, r["pids"])),
                ]
                for label, r in summary["rss"].items()
            ]
            lines += ["", *_table(["RSS (MiB)", "first minute", "last minute", "change", "within 10 %", "pids"], rows)]
            rows = [
                [
                    name,
                    str(g["max"]),
                    str(g["last"]),
                    f"{g['slope_per_min']:+.2f} (± {_fmt(g['slope_stderr_per_min'], 2)})",
                    f"{g['rise_over_run']:+.1f}",
                    "YES" if g["grew"] else "no",
                ]
                for name, g in summary["queues"].items()
            ]
            head = ["series (items)", "max", "at the end", "slope /min (± s.e.)", "rise over the run", "grew"]
            lines += ["", *_table(head, rows)]
            rows = [
                [
                    str(m["minute"]),
                    str(m["emit_to_push"]["n"]),
                    _fmt(m["emit_to_push"]["p50_ms"]),
                    _fmt(m["emit_to_push"]["p99_ms"]),
                    _fmt(m["emit_to_email"]["p50_ms"]),
                    _fmt(m["emit_to_email"]["p99_ms"]),
                ]
                for m in self.results.get("minutes", [])
            ]
            head = ["minute", "pushes", "emit → push p50 ms", "p99 ms", "emit → email p50 ms", "p99 ms"]
            lat = summary["latency"]
            lines += [
                "",
                *_table(head, rows),
                f"push p99 per minute: median {_fmt(lat['p99_median_ms'])} ms, max {_fmt(lat['p99_max_ms'])} ms, "
                f"slope {lat['p99_slope_ms_per_min']:+.2f} ms/min: {'steady' if lat['steady'] else 'NOT steady'} "
                "(steady: no minute above twice the median)",
            ]
        if soak:
            lines.append(
                f"lost / duplicated of {soak['events']}: pushes {soak['push_lost']}/{soak['push_duplicates']}, "
                f"emails {soak['email_lost']}/{soak['email_duplicates']}, "
                f"notifications {soak['notification_lost']}/{soak['notification_duplicates']}"
            )
        return "\n".join(lines)

    def losses(self) -> int:
        keys = ("sustained", "soak")
        return sum(
            self.results[k].get(f"{kind}_{what}", 0)
            for k in keys
            if k in self.results
            for kind in ("email", "notification")
            for what in ("lost", "duplicates")
        )

    def run(self) -> int:
        started = time.monotonic()
        out = Path(self.args.out)
        try:
            self.setup()
            self.phase_soak(self.phase_rate())
        except BaseException as exc:  # reported with the partial figures; the processes are stopped below
            self.results["error"] = f"{type(exc).__name__}: {exc}"
            self.results.setdefault("samples", self.samples)
            print(f"\nsoak failed: {self.results['error']}\n(process output: {self.var_dir / 'stack.log'})", flush=True)
            if not isinstance(exc, Exception):
                raise  # SIGTERM (SystemExit), Ctrl-C: stop the processes, write the JSON, then leave
        finally:
            if self.redis is not None:
                self.redis.close()
            self.teardown()
            self.results["seconds"] = round(time.monotonic() - started, 1)
            if self.recorder is not None:
                self.results["socket_frames"] = dict(self.recorder.frame_types)
            if self.mail is not None:
                self.results["emails_unmatched"] = self.mail.unmatched
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        print("\n" + self.report() + f"\n\nAll figures and the time series: {out}", flush=True)
        return 1 if "error" in self.results or self.losses() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="the database (sqlite)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (default 0: half the measured sustained)")
    parser.add_argument(
        "--burst-events", dest="events", type=int, default=1000, help="events of the rate measurement (1000)"
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument(
        "--growth-threshold", type=float, default=10.0, help="least fitted rise of a series that grew (10 items)"
    )
    parser.add_argument(
        "--deliveries-per-event",
        type=int,
        default=2,
        help="Delivery rows each event ends with as 'sent' (default 2: websocket and email)",
    )
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="the drain fails after this long idle (60)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default var/bench/soak-<db>.json)")
    postgres_setting_argument(parser)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "var" / "bench" / f"soak-{args.db}.json"
    if args.minutes <= 0 or args.interval <= 0 or args.rate < 0:
        parser.error("--minutes and --interval must be positive, --rate not negative")
    if not args.rate and args.events < 2:
        parser.error("--burst-events must be at least 2")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"signal {signum}")  # so that every process is stopped on the way out

    signal.signal(signal.SIGTERM, on_term)
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
