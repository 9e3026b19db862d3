"""Production: secrets must come from the environment; HTTPS assumed.

It refuses to load (``ImproperlyConfigured``, naming the setting) on a
configuration that fails open: a ``DJANGO_SECRET_KEY`` that is empty, the
public development key or shorter than 50 characters (Django's own
``security.W009`` threshold); a ``NOTIFLOW_JWT_SECRET`` that is empty, the
development key or shorter than 32 bytes while an HMAC algorithm is
accepted (RFC 7518, section 3.2: a key of at least the hash's size, 256 bits
for HS256); ``NOTIFLOW_DEMO_PAGE`` on (its password-less sign-in).
``manage.py``, ``webapp/asgi.py`` and ``worker.py`` load these settings
unless ``DJANGO_SETTINGS_MODULE`` says otherwise.
"""

from django.core.exceptions import ImproperlyConfigured

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import DEV_SECRET_KEY, env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
NOTIFLOW["JWT"]["SECRET"] = env("NOTIFLOW_JWT_SECRET")  # noqa: F405 - no fallback to a default key

_HINT = " (webapp.settings.prod refuses to start; for development set DJANGO_SETTINGS_MODULE=webapp.settings.dev)"


def _refuse(setting: str, why: str) -> None:
    raise ImproperlyConfigured(f"{setting} {why}{_HINT}")


if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50:
    _refuse("DJANGO_SECRET_KEY", "must be a secret of at least 50 characters, not empty nor the development key")
_HMAC = {"HS256", "HS384", "HS512"}
if _HMAC.intersection(NOTIFLOW["JWT"]["ALGORITHMS"]):  # noqa: F405
    _jwt_secret = str(NOTIFLOW["JWT"]["SECRET"] or "")  # noqa: F405
    if _jwt_secret == DEV_SECRET_KEY or len(_jwt_secret.encode()) < 32:
        _refuse(
            "NOTIFLOW_JWT_SECRET",
            "must be at least 32 bytes, not empty nor the development key, while NOTIFLOW_JWT_ALGORITHMS accepts "
            "an HMAC algorithm (HS256/384/512)",
        )
if NOTIFLOW_DEMO_PAGE:  # noqa: F405
    _refuse("NOTIFLOW_DEMO_PAGE", "must be off in production: the demo page signs anyone in without a password")
