"""The Celery app: ``celery -A worker worker | beat | flower``.

Configuration lives in :mod:`celeryconfig`; tasks in :mod:`pipeline.tasks`.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.prod")  # fail closed: dev settings by choice
# Persistent database connections in the worker (Celery's Django fix-up closes them only when obsolete).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "600")

from celery import Celery

app = Celery("notiflow")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["pipeline"])
