"""Settings for the test suite: fast password hashing, the database file shared with the worker."""

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The worker, beat and daphne open the database DATABASE_URL names: pytest-django must create
# the test database there (the SQLite file, not one in memory; on PostgreSQL the same database
# name, which it drops first if left over, and drops at the end).
DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}
