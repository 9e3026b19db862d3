"""Settings for the test suite: fast password hashing, the database file shared with the worker."""

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The worker processes read the same database: pytest-django must create the
# test database at the file named by DATABASE_URL, not in memory.
DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}
