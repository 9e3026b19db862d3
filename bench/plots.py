"""Figures from the benchmarks' JSON: emit -> push latency CDFs and fan-out time against audience size.

    python -m bench.plots                                   # var/bench/*.json -> bench/figures/*.png
    python -m bench.plots --hotpath var/bench/hotpath-sqlite.json --out-dir /tmp/figures

``latency-cdf.png``, from ``var/bench/hotpath-*.json`` (``bench.hotpath``):
one panel per file (per database), the empirical CDF (fraction of samples at
or below x, x in ms on a log scale) of emit -> push at idle (phase c) and at
half load (phase d), with the baselines of the same run: a raw channel-layer
``group_send`` -> push and a no-op task's publish -> completion. It reads the
raw samples ``samples_ms.latency_idle.{emit_to_push, group_send_to_push,
noop_publish_to_completion}`` and ``samples_ms.latency_half_load.emit_to_push``
(ms); a file written before hotpath kept them is skipped.

``fanout.png``, from ``var/bench/fanout-*.json`` (``bench.fanout``), log-log:
seconds against recipients of one event, one line per timing and per file,
with a line of slope 1 (time proportional to the audience) through the
largest audience's "stored" point of the first file, for reference (where
the cost per recipient, not the fixed cost, dominates). The shape read (other keys are ignored)::

    {
      "config": {"db": "sqlite"},              # optional; else the file name's "fanout-<db>"
      "sizes": [
        {"recipients": 1000,                   # audience of the one event
         "stored_s": 0.8,                      # emit -> every notification stored
         "last_push_s": 0.9,                   # emit -> the last WebSocket push received
         "recorded_s": 1.4},                   # emit -> every delivery recorded (sent)
        ...
      ]
    }

Without ``sizes``, the entries of a ``runs`` list with the same keys are
read (``bench.fanout`` writes that, as of this writing), those with an
``"audience"`` other than ``"role"`` left out. A timing that is missing,
``null`` or not above 0 is left out; several
entries with the same ``recipients`` (repeats) are drawn as points with the
line through their median. Missing or unreadable files are skipped with a
message; a figure with no data is not written. Exit status 0 unless the
arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
FIGURES_DIR = Path(__file__).resolve().parent / "figures"

#: (phase, series in ``samples_ms``, legend, colour, line style) of the latency CDFs.
CDF_SERIES = (
    ("latency_idle", "emit_to_push", "emit → push, idle", "C0", "-"),
    ("latency_half_load", "emit_to_push", "emit → push, half load", "C3", "-"),
    ("latency_idle", "group_send_to_push", "baseline: group_send → push", "C2", "--"),
    ("latency_idle", "noop_publish_to_completion", "baseline: no-op publish → done", "C7", "--"),
)
#: (key in each ``sizes`` entry, legend, colour) of the fan-out timings.
FANOUT_SERIES = (
    ("stored_s", "stored", "C0"),
    ("last_push_s", "last push", "C3"),
    ("recorded_s", "all recorded", "C2"),
)
DB_STYLES = ("-", "--", ":", "-.")
DB_MARKERS = ("o", "s", "^", "D")


class Skip(Exception):
    """A file that cannot be drawn, and why."""


@dataclass
class Source:
    path: Path
    db: str
    data: dict[str, Any]


def load(path: Path, prefix: str) -> Source:
    """Read one JSON file; its database from ``config.db``, else from the name ``<prefix>-<db>.json``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Skip(f"cannot read it ({exc})") from exc
    if not isinstance(data, dict):
        raise Skip("not a JSON object")
    config = data.get("config")
    if not isinstance(config, dict):
        config = {}
    db = str(config.get("db") or data.get("db") or path.stem.removeprefix(f"{prefix}-"))
    return Source(path=path, db=db, data=data)


def sources(paths: Sequence[Path] | None, prefix: str) -> list[Source]:
    """The files given, or ``var/bench/<prefix>-*.json``; each unreadable one skipped with a message."""
    found = list(paths) if paths else sorted(BENCH_DIR.glob(f"{prefix}-*.json"))
    if not found:
        print(f"skipped: no {BENCH_DIR.relative_to(ROOT) / f'{prefix}-*.json'} (run bench.{prefix} first)")
    out = []
    for path in found:
        try:
            out.append(load(path, prefix))
        except Skip as exc:
            print(f"skipped {path}: {exc}")
    return out


def cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of values at or below each: an empirical CDF for a step plot."""
    xs = sorted(values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))]


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def latency_cdf(files: Sequence[Source], out: Path) -> list[Path]:
    """Draw ``latency-cdf.png``, one panel per file with raw samples; the files drawn (none: nothing written)."""
    panels: list[tuple[Source, dict[str, Any]]] = []
    for src in files:
        samples = src.data.get("samples_ms")
        if not isinstance(samples, dict) or not samples:
            print(f"skipped {src.path}: no raw samples ('samples_ms'; written by bench.hotpath since it keeps them)")
            continue
        panels.append((src, samples))
    if not panels:
        print("skipped latency-cdf.png: no hot-path samples")
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 5.2), sharey=True, squeeze=False)
    for ax, (src, samples) in zip(axes[0], panels, strict=True):
        for phase, key, label, colour, style in CDF_SERIES:
            values = [float(v) for v in samples.get(phase, {}).get(key, []) if v is not None and v > 0]
            if not values:
                continue
            if phase == "latency_half_load":
                rate = src.data.get(phase, {}).get("achieved_rate_per_s")
                label = f"{label} ({rate:.0f}/s)" if isinstance(rate, int | float) else label
            xs, ys = cdf_points(values)
            stats = f"n={len(values)}, p50 {nearest_rank(values, 0.5):.1f}, p99 {nearest_rank(values, 0.99):.1f} ms"
            ax.step(xs, ys, where="post", color=colour, linestyle=style, label=f"{label}\n{stats}")
        database = src.data.get("environment", {}).get("database", src.db)
        ax.set_title(f"{src.db} ({database})", fontsize=10)
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    axes[0][0].set_ylabel("fraction of samples ≤ x")
    fig.suptitle("emit → push latency (CDF) and the same run's baselines", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [src.path for src, _ in panels]


def fanout_points(src: Source) -> dict[str, list[tuple[float, float]]]:
    """``{timing key: [(recipients, seconds), ...]}`` of one file; raises :class:`Skip` if it has no entries."""
    sizes = src.data.get("sizes")
    if not isinstance(sizes, list):  # bench.fanout's own list: one entry per announcement
        runs = src.data.get("runs")
        sizes = (
            [r for r in runs if isinstance(r, dict) and r.get("audience", "role") == "role"]
            if isinstance(runs, list)
            else None
        )
    if not sizes:
        raise Skip("no 'sizes' (or 'runs') list")
    points: dict[str, list[tuple[float, float]]] = {key: [] for key, _, _ in FANOUT_SERIES}
    for entry in sizes:
        n = entry.get("recipients") if isinstance(entry, dict) else None
        if not isinstance(n, int | float) or n <= 0:
            continue
        for key in points:
            value = entry.get(key)
            if isinstance(value, int | float) and value > 0:
                points[key].append((float(n), float(value)))
    if not any(points.values()):
        raise Skip("no entry with 'recipients' and a timing above 0")
    return points


def fanout(files: Sequence[Source], out: Path) -> list[Path]:
    """Draw ``fanout.png`` (log-log, a line per timing and file, slope-1 reference); the files drawn."""
    drawn: list[tuple[Source, dict[str, list[tuple[float, float]]]]] = []
    for src in files:
        try:
            drawn.append((src, fanout_points(src)))
        except Skip as exc:
            print(f"skipped {src.path}: {exc}")
    if not drawn:
        print("skipped fanout.png: no fan-out timings")
        return []
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    anchor: tuple[float, float] | None = None
    xs_all: list[float] = []
    for i, (src, points) in enumerate(drawn):
        style, marker = DB_STYLES[i % len(DB_STYLES)], DB_MARKERS[i % len(DB_MARKERS)]
        for key, label, colour in FANOUT_SERIES:
            pts = points[key]
            if not pts:
                continue
            ax.scatter([x for x, _ in pts], [y for _, y in pts], color=colour, marker=marker, s=14, alpha=0.6)
            xs = sorted({x for x, _ in pts})
            ys = [statistics.median(y for x2, y in pts if x2 == x) for x in xs]
            ax.plot(xs, ys, color=colour, linestyle=style, marker=marker, markersize=4, label=f"{label} ({src.db})")
            xs_all += xs
            if anchor is None and key == "stored_s":
                anchor = (xs[-1], ys[-1])
        if anchor is None:  # no "stored" timing: anchor on the first line drawn
            anchor = max(next(pts for pts in points.values() if pts))
    assert anchor is not None
    lo, hi = min(xs_all), max(xs_all)
    if hi > lo:
        x0, y0 = anchor
        ax.plot([lo, hi], [y0 * lo / x0, y0 * hi / x0], color="0.5", linestyle=":", label="slope 1 (time ∝ recipients)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("recipients of one event (log scale)")
    ax.set_ylabel("seconds from emit (log scale)")
    ax.set_title("Fan-out: time to store, last push and all recorded against audience size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [src.path for src, _ in drawn]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--hotpath", type=Path, nargs="+", help="bench.hotpath JSON files (default var/bench/hotpath-*.json)"
    )
    parser.add_argument(
        "--fanout", type=Path, nargs="+", help="bench.fanout JSON files (default var/bench/fanout-*.json)"
    )
    parser.add_argument("--out-dir", type=Path, default=FIGURES_DIR, help="where the PNGs go (default bench/figures)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw, prefix, given in (
        ("latency-cdf.png", latency_cdf, "hotpath", args.hotpath),
        ("fanout.png", fanout, "fanout", args.fanout),
    ):
        files = sources(given, prefix)
        out = args.out_dir / name
        used = draw(files, out) if files else []
        if used:
            print(f"wrote {out} from {', '.join(map(str, used))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
