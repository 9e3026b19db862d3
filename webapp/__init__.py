"""The Django project: settings, URLs, ASGI app, the Channels relay, the REST API and the demo app."""

from worker import app as celery_app

__all__ = ["celery_app"]
