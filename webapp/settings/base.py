"""Base settings. The environment is read here, and only here (django-environ).

Every variable is listed, with its default, in ``.env.example``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()  # admin.ModelAdmin[Model] etc. at run time, for the type checker

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

#: The development secret: public (it is in this file), so production refuses it.
DEV_SECRET_KEY = "dev-insecure-change-me"  # noqa: S105 - public on purpose, refused by prod
SECRET_KEY = env("DJANGO_SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "pipeline",
    "webapp.gallery",
    "webapp.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

_TEMPLATE_CONTEXT = [
    "django.template.context_processors.request",
    "django.contrib.auth.context_processors.auth",
    "django.contrib.messages.context_processors.messages",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": _TEMPLATE_CONTEXT},
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at
    # BEGIN, so two writers queue up (for `timeout` seconds) instead of deadlocking.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
_POSTGRES_ENGINES = {"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"}
if DATABASES["default"]["ENGINE"] in _POSTGRES_ENGINES and importlib.util.find_spec("psycopg") is not None:
    # psycopg 3 (which Django prefers when installed; psycopg2 has no such option): a connection prepares a
    # statement bound on the server (the hot path's: pipeline.bulk) once it has run it this many times, after
    # which PostgreSQL neither parses nor plans it again (planning alone was a third of the server's statement
    # time in a sustained run: bench/README.md, eighth pass). Django's default (None) never prepares. "none"
    # turns it off, as PgBouncer before 1.21 needs in transaction pooling. DATABASE_URL's ?prepare_threshold= wins.
    _threshold = env.str("DATABASE_PREPARE_THRESHOLD", default="5").strip().lower()
    if _threshold not in ("", "none") and not re.fullmatch(r"[0-9]+", _threshold):
        raise ImproperlyConfigured(f"DATABASE_PREPARE_THRESHOLD must be a whole number or 'none', not {_threshold!r}.")
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "prepare_threshold", None if _threshold in ("", "none") else int(_threshold)
    )
# Seconds a database connection is kept between requests or tasks (0: one per request or task).
# worker.py sets 600 for the Celery worker, whose tasks run back to back in the same processes:
# opening a connection per task cost about a tenth of the pool's time.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Static files (the admin's) are served by WhiteNoise; without collectstatic it reads the apps' folders.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# The worker's task events, which Flower shows (celeryconfig.py); off, the worker saves their Redis traffic.
CELERY_TASK_EVENTS = env.bool("CELERY_TASK_EVENTS", default=True)

# Redis: broker (db 0), channel layer (db 1) and cache (db 2) by default.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Seconds Redis waits for a worker to acknowledge a message before handing it to another
# worker: a message held by a worker killed with SIGKILL comes back after this long.
# celeryconfig refuses a value not longer than the longest retry countdown.
BROKER_VISIBILITY_TIMEOUT = env.int("BROKER_VISIBILITY_TIMEOUT", default=3600)
CHANNEL_LAYER_REDIS_URL = env("CHANNEL_LAYER_REDIS_URL", default=urlsplit(REDIS_URL)._replace(path="/1").geturl())
# In production give the channel layer a Redis of its own (README, "Security"): a flood of sockets then
# cannot take connections or memory from the Celery broker.
CHANNEL_LAYERS = {
    "default": {
        # channels_redis with a bounded connection pool per event loop (delivery/layers.py).
        "BACKEND": "delivery.layers.BoundedRedisChannelLayer",
        "CONFIG": {
            "hosts": [CHANNEL_LAYER_REDIS_URL],
            "capacity": 1500,
            "expiry": 60,
            # Seconds a socket stays a group member without renewing it; sockets renew every quarter of it,
            # so a member left behind by a crashed process is gone within this (channels_redis: 86,400).
            "group_expiry": env.int("CHANNEL_LAYER_GROUP_EXPIRY", default=3600),
            "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=50),  # per event loop
            "pool_timeout": 10,  # seconds a command waits for a free connection
            "receive_batch": env.int("CHANNEL_LAYER_RECEIVE_BATCH", default=100),  # messages per Redis round trip
        },
    }
}

# Django's cache (the API's throttles count in it): Redis db 2 by default, shared by every process.
CACHE_REDIS_URL = env("CACHE_REDIS_URL", default=urlsplit(REDIS_URL)._replace(path="/2").geturl())
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_REDIS_URL}}

EMAIL_BACKEND = env("EMAIL_BACKEND", default="delivery.smtp.EmailBackend")  # Django's, with SMTP PIPELINING
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=1025)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # seconds
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="notiflow <notifications@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.api.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # POST /api/token/ per client address, failed passwords included; POST /api/ws-ticket/ per user. Counted in
    # Django's cache: CACHES below, shared by every process.
    "DEFAULT_THROTTLE_RATES": {
        "token": env("NOTIFLOW_THROTTLE_TOKEN", default="10/min"),
        "ws-ticket": env("NOTIFLOW_THROTTLE_WS_TICKET", default="30/min"),
    },
    # Client addresses behind this many proxies (X-Forwarded-For); 0 trusts none of its entries.
    "NUM_PROXIES": env.int("NOTIFLOW_NUM_PROXIES", default=0),
}

NOTIFLOW: dict[str, Any] = {
    "EVENT_TYPES": {
        "critique.created": {
            "category": "critiques",
            "methods": ["websocket", "email"],
            "template": "critique_created",
            "digestible": True,
        },
        "critique.helpful": {
            "category": "critiques",
            "methods": ["websocket", "email"],
            "template": "critique_helpful",
            "digestible": True,
        },
        "like.created": {
            "category": "likes",
            "methods": ["websocket", "email"],
            "template": "like_created",
            "digestible": True,
        },
        "announcement.posted": {
            "category": "announcements",
            "methods": ["websocket"],
            "template": "announcement_posted",
        },
    },
    "JWT": {
        "SECRET": env("NOTIFLOW_JWT_SECRET", default=SECRET_KEY),
        "TTL": env.int("NOTIFLOW_JWT_TTL", default=3600),
        # Tokens from an identity provider (Auth0, Clerk, Cognito): its JWKS URL, issuer and audience.
        "ALGORITHMS": env.list("NOTIFLOW_JWT_ALGORITHMS", default=["HS256"]),
        "JWKS_URL": env("NOTIFLOW_JWT_JWKS_URL", default=None),
        "ISSUER": env("NOTIFLOW_JWT_ISSUER", default=None),
        "AUDIENCE": env("NOTIFLOW_JWT_AUDIENCE", default=None),
        "ROLES_CLAIM": env("NOTIFLOW_JWT_ROLES_CLAIM", default=None),
    },
    "WEBSOCKET": {
        "ALLOWED_ORIGINS": env.list("NOTIFLOW_WS_ALLOWED_ORIGINS", default=None),
        "GAP_WAIT": env.float("NOTIFLOW_WS_GAP_WAIT", default=1.0),
    },
}

# The demo inbox page (/demo/) signs people in as a demo user without a password: on in dev and tests only.
NOTIFLOW_DEMO_PAGE = env.bool("NOTIFLOW_DEMO_PAGE", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
