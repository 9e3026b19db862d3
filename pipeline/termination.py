"""Letting a pool process finish the one message it is sending before it stops.

Celery's prefork pool asks Linux to SIGKILL each pool process the moment the
worker's main process dies (``prctl(PR_SET_PDEATHSIG)``), and a stop through
systemd (``KillMode=control-group``) or ``docker stop`` sends SIGTERM to every
process at once. Either can land between the SMTP server's ``250`` and the
``UPDATE`` that records it: the email was sent, the row still says it was
not, and the redelivered task sends it again.

So notiflow narrows the gap to nothing for those two stops:

- :func:`pool_process_init` (connected to ``worker_process_init``) makes
  the death signal SIGTERM instead of SIGKILL;
- :func:`termination_deferred` holds SIGTERM and SIGHUP (with
  ``pthread_sigmask``) while one message is sent and its result recorded.
  A signal that arrives meanwhile stays pending and takes effect, with its
  default action (the pool process ends), as the block exits, after the
  ``COMMIT``.

The deferral lasts one message at most: an SMTP send is bounded by
``EMAIL_TIMEOUT`` (10 s by default), well inside systemd's 90 s and
Kubernetes' 30 s grace periods before their SIGKILL. A SIGKILL of the pool
process itself (the OOM killer, ``docker kill``) cannot be deferred: that one
message may then be sent twice, with the same ``Message-ID``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard.util import set_pdeathsig  # type: ignore[attr-defined]  # missing from the billiard stubs

#: The signals held while a message is sent and recorded.
DEFERRED = frozenset({signal.SIGTERM, signal.SIGHUP})


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
    """``worker_process_init`` receiver: a pool process gets SIGTERM, not SIGKILL, when the main process dies.

    Celery resets SIGTERM to its default action in pool processes, so outside
    :func:`termination_deferred` the effect is the same as SIGKILL's. Does
    nothing where ``prctl`` is missing (not Linux).
    """
    with contextlib.suppress(OSError):
        set_pdeathsig(signal.SIGTERM)
