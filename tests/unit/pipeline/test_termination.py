"""A pool process finishes the message in hand before a SIGTERM ends it (real processes, real signals)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# A "pool process" (the grandchild) records in a file; the "main process" (the child) dies with SIGKILL.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pipeline.termination import pool_process_init, termination_deferred
    log = open(sys.argv[1], "a", buffering=1)
    ready_r, ready_w = os.pipe()
    main = os.getpid()
    if os.fork() == 0:  # the pool process
        pool_process_init()
        with termination_deferred():
            os.write(ready_w, b"x")
            log.write("sending\\n")
            while os.getppid() == main:  # until the main process is gone and SIGTERM is pending
                time.sleep(0.01)
            time.sleep(0.2)
            log.write("recorded\\n")  # the UPDATE: must still happen
        log.write("next message\\n")  # must not: the pending SIGTERM acts as the block exits
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(main, signal.SIGKILL)
    """
)


def test_a_pool_process_records_the_message_in_hand_when_its_main_process_is_killed(tmp_path: Path):
    log = tmp_path / "log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=Path(__file__).parents[3], timeout=30)
    assert done.returncode == -signal.SIGKILL
    time.sleep(1.0)  # the orphaned pool process outlives its main process by about 0.2 s
    assert log.read_text().splitlines() == ["sending", "recorded"]


def test_a_sigterm_outside_the_block_ends_the_process_at_once(tmp_path: Path):
    script = "import os, signal\nfrom pipeline.termination import termination_deferred\n"
    script += "with termination_deferred():\n    pass\nos.kill(os.getpid(), signal.SIGTERM)\nprint('still here')\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[3], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -signal.SIGTERM
    assert "still here" not in done.stdout
