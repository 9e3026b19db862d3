"""The benchmarks' CPU meter (``bench.cpu.CpuMeter``): what a phase counts when processes come and go."""

import subprocess
import sys

import psutil

from bench.cpu import CpuMeter


def burner(cpu_seconds: float) -> subprocess.Popen:
    """A child (role "other") that spends ``cpu_seconds`` of CPU, says so, then sleeps until killed."""
    code = (
        f"import time\nend = time.process_time() + {cpu_seconds}\n"
        "while time.process_time() < end: pass\nprint('ready', flush=True)\ntime.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def cpu(child: subprocess.Popen) -> float:
    times = psutil.Process(child.pid).cpu_times()
    return times.user + times.system


def stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait()


def test_a_process_that_ended_before_a_phase_is_not_counted_in_it_and_one_that_ends_during_it_is():
    meter = CpuMeter()
    earlier = burner(0.4)  # a worker that an earlier phase restarted
    meter.snapshot()
    earlier_cpu = cpu(earlier)
    stop(earlier)
    idle = burner(0.0)  # alive through the phase, spending nothing in it

    before = meter.snapshot()
    ended = burner(0.1)  # starts and ends inside the phase: counted as far as the meter's last look at it
    meter.snapshot()
    ended_cpu = cpu(ended)
    stop(ended)
    spent = meter.since(before)
    stop(idle)

    assert ended_cpu - 0.02 <= spent["other"] < earlier_cpu  # 0.02: a clock tick either way
