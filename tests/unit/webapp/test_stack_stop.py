"""Stack.stop_process leaves nothing running, even when the honcho dies before its commands do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from webapp.stack import Stack, process_groups_below

# A stand-in for honcho: starts a command in a session of its own (as honcho does) that takes its time to stop
# (as a Celery worker in a warm shutdown does: it ignores SIGTERM here), writes its pid, then dies at the first
# SIGTERM without stopping the command (as a honcho killed by SIGPIPE when its output pipe is gone).
HONCHO = """
import os, signal, subprocess, sys, time
command = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
    start_new_session=True,
)
open(sys.argv[1], "w").write(str(command.pid))
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def test_a_command_left_running_by_a_dead_honcho_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr("webapp.stack.ORPHAN_GRACE", 1.0)
    pid_file = tmp_path / "command.pid"
    honcho = subprocess.Popen([sys.executable, "-c", HONCHO, str(pid_file)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    command = int(pid_file.read_text())
    assert process_groups_below(honcho.pid) == {command}  # the command leads a group of its own

    stack = Stack.__new__(Stack)  # only the honcho table matters to stop_process
    stack._honchos = {"worker": honcho}
    try:
        stack.stop_process("worker", timeout=5.0)
        deadline = time.monotonic() + 5
        while alive(command) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(command)  # before: it ran on, a child of init, after the stack had stopped
    finally:
        if alive(command):
            os.killpg(command, signal.SIGKILL)
