"""Production: secrets must come from the environment; HTTPS assumed."""

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
NOTIFLOW["JWT"]["SECRET"] = env("NOTIFLOW_JWT_SECRET")  # noqa: F405 - no fallback to a default key
