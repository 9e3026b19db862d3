"""The Django project: settings, URLs, ASGI app, the Channels relay, the REST API and the demo app."""

import os

#: ``DJANGO_SETTINGS_MODULE`` as this process was started with it, read before :mod:`worker` sets its
#: default (the production settings): :class:`webapp.stack.Stack` passes on only a module someone chose.
SETTINGS_CHOSEN = os.environ.get("DJANGO_SETTINGS_MODULE")

from worker import app as celery_app  # noqa: E402 - after reading the environment as it was

__all__ = ["SETTINGS_CHOSEN", "celery_app"]
