"""Loaded with ``-p tests.environment`` before pytest-django reads the settings.

It builds the test stack's environment (free ports, a private ``var/test``
folder, the database file the worker shares) and exports it, so the test
process and every process the stack starts agree on Redis, SMTP and the
database.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.identity_provider import IdentityProvider
from webapp.stack import ROOT, Stack, free_port

VAR_DIR = Path(os.environ.get("NOTIFLOW_TEST_VAR", ROOT / "var" / "test"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["NOTIFLOW_TEST_RECORD"] = str(VAR_DIR / "recorded.jsonl")

# The identity provider whose JWKS the ASGI server fetches (RS256/ES256 tokens), served by this process.
IDENTITY_PROVIDER = IdentityProvider(port=free_port())
IDENTITY_PROVIDER.start()
os.environ["NOTIFLOW_TEST_JWKS_URL"] = IDENTITY_PROVIDER.jwks_url

STACK = Stack(
    var_dir=VAR_DIR,
    processes=("redis", "smtp", "web", "worker", "beat"),
    settings_module="tests.settings",
)
STACK.prepare(fresh=True)
STACK.apply_env()
