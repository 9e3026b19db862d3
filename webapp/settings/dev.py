"""Local development: debug on."""

from webapp.settings.base import *  # noqa: F403

DEBUG = True
NOTIFLOW_DEMO_PAGE = env.bool("NOTIFLOW_DEMO_PAGE", default=True)  # noqa: F405
