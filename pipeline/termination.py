"""Letting a pool process finish the one message it is sending before it stops.

Celery's prefork pool asks Linux to SIGKILL each pool process the moment the
worker's main process dies (``prctl(PR_SET_PDEATHSIG)``), and a stop through
systemd (``KillMode=control-group``) or ``docker stop`` sends SIGTERM to every
process at once. Either can land between the SMTP server's ``250`` and the
``UPDATE`` that records it: the email was sent, the row still says it was
not, and the redelivered task sends it again.

So notiflow narrows the gap to nothing for those stops:

- :func:`pool_process_init` (connected to ``worker_process_init``) makes
  the parent-death signal :data:`PARENT_DEATH_SIGNAL` (SIGUSR2, which
  nothing else in a pool process uses, left to its default action: the
  process ends) instead of SIGKILL;
- :func:`termination_deferred` holds that signal, SIGTERM and SIGHUP (with
  ``pthread_sigmask``) while one group of messages is sent and its results
  recorded (:mod:`pipeline.sending`: the messages sent within
  ``DELIVERY_RECORD_INTERVAL``, 50 ms, or one message when the provider is
  slower than that).
  A signal that arrives meanwhile stays pending and takes effect as the
  block exits, after the ``COMMIT``: SIGUSR2 ends the process at once;
  SIGTERM/SIGHUP run billiard's handler, which unwinds the task with
  ``SystemExit`` (the task is redelivered, and the recorded message is not
  sent again).

SIGTERM is not used as the parent-death signal because billiard handles it
in pool processes by unwinding and then waiting up to 30 s for the (dead)
main process to read the last result.

The deferral lasts one group at most: ``DELIVERY_RECORD_INTERVAL`` plus one
send, and an SMTP send is bounded by ``EMAIL_TIMEOUT`` (10 s by default),
well inside systemd's 90 s and Kubernetes' 30 s grace periods before their
SIGKILL. A SIGKILL of the pool process itself (the OOM killer, ``docker
kill``) cannot be deferred: the messages of the group in hand (at most 50 ms
of sending) may then be sent twice, with the same ``Message-ID``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard.util import set_pdeathsig  # type: ignore[attr-defined]  # missing from the billiard stubs

#: What a pool process receives when the worker's main process dies (``prctl(PR_SET_PDEATHSIG)``).
PARENT_DEATH_SIGNAL = signal.SIGUSR2
#: The signals held while a message is sent and recorded.
DEFERRED = frozenset({signal.SIGTERM, signal.SIGHUP, PARENT_DEATH_SIGNAL})


@contextmanager
def termination_deferred() -> Iterator[None]:
    """Hold :data:`DEFERRED` signals for the calling thread during the block; on exit, a pending one acts.

    Only the calling thread is masked: with the ``threads`` pool, a process-wide
    SIGTERM goes to another thread (Celery's warm shutdown, which waits for
    running tasks anyway). Nests safely: the previous mask is restored.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def pool_process_init(**_: Any) -> None:
    """``worker_process_init`` receiver: a pool process gets :data:`PARENT_DEATH_SIGNAL`, not SIGKILL, when the
    main process dies; outside :func:`termination_deferred` it ends the process at once, as SIGKILL would.

    If the main process died before this ran, the signal is sent now. Does
    nothing where ``prctl`` is missing (not Linux).
    """
    signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        set_pdeathsig(PARENT_DEATH_SIGNAL)
        if os.getppid() == 1:  # orphaned already: the death signal will never come
            os.kill(os.getpid(), PARENT_DEATH_SIGNAL)
