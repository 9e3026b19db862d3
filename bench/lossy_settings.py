"""Settings of ``bench.hotpath --drop-pushes N``: production settings, with the ``websocket`` method replaced by
:class:`bench.lossy.DroppingWebSocketMethod` dropping every ``NOTIFLOW_BENCH_DROP_EVERY``-th push."""

import os

from webapp.settings.prod import *  # noqa: F403
from webapp.settings.prod import NOTIFLOW

NOTIFLOW["DELIVERY_METHODS"] = {
    "email": {"BACKEND": "delivery.email.EmailMethod"},
    "websocket": {
        "BACKEND": "bench.lossy.DroppingWebSocketMethod",
        "OPTIONS": {"every": int(os.environ.get("NOTIFLOW_BENCH_DROP_EVERY", "5"))},
    },
}
