"""``bench.noop``: the raw Celery task the hot-path benchmark measures notiflow against.

Its whole body is one ``os.write()`` of its completion time (``time.time()``,
seconds, as ``"%.6f\\n"``: about 18 bytes, a few microseconds) to
``noop-<pid>.log``, one file per pool process, in the folder named by
``NOTIFLOW_BENCH_NOOP_DIR``. So the benchmark times the first and last
completions without a result backend or task events, and the worker's own
overhead (receive, acknowledge, log, prefork hand-off) is all that is
measured. The idea is the peer benchmark's (``shared/peers/django-notifs``,
``benchapp/tasks.py``).

It goes to the default queue, ``events``, the one the pipeline's first task
uses. The worker loads it only for benchmarks: the ``Procfile``'s worker line
ends with ``$WORKER_OPTIONS``, which ``bench.hotpath`` sets to
``--include=bench.noop``.
"""

from __future__ import annotations

import os
import time

from celery import shared_task

#: The environment variable naming the folder of the completion files.
NOOP_DIR_ENV = "NOTIFLOW_BENCH_NOOP_DIR"

_files: dict[int, int] = {}  # pid -> open file descriptor (a forked pool process opens its own)


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """Append ``time.time()`` to this process's completion file. Raises ``RuntimeError`` if the folder is unset."""
    pid = os.getpid()
    fd = _files.get(pid)
    if fd is None:
        folder = os.environ.get(NOOP_DIR_ENV)
        if not folder:
            raise RuntimeError(f"bench.noop: {NOOP_DIR_ENV} is not set in the worker's environment")
        fd = _files[pid] = os.open(
            os.path.join(folder, f"noop-{pid}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
    os.write(fd, b"%.6f\n" % time.time())
