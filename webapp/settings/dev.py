"""Local development: debug on."""

from webapp.settings.base import *  # noqa: F403

DEBUG = True
