"""The Celery app: ``celery -A worker worker | beat | flower``.

Configuration lives in :mod:`celeryconfig`; tasks in :mod:`pipeline.tasks`.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.dev")

from celery import Celery

app = Celery("notiflow")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["pipeline"])
