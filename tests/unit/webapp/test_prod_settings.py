"""Production settings fail closed (issue 10): each unsafe value stops the process with an error naming the
setting, and the entry points load the production settings unless told otherwise.

Each case runs a fresh interpreter (settings are read once per process) with an explicit environment: every
variable the case depends on is given, so a developer's ``.env`` (read with ``overwrite=False``) cannot fill
one in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GOOD = {
    "DJANGO_SECRET_KEY": "k" * 50,
    "NOTIFLOW_JWT_SECRET": "j" * 32,
    "NOTIFLOW_JWT_ALGORITHMS": "HS256",
    "NOTIFLOW_DEMO_PAGE": "false",
}
SETUP = "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)"


def run(code: str, *, settings: str | None = "webapp.settings.prod", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environment.update(GOOD)
    environment.update(env)
    if settings:
        environment["DJANGO_SETTINGS_MODULE"] = settings
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_good_production_settings_load_with_debug_off():
    done = run(SETUP)
    assert done.returncode == 0, done.stderr
    assert "DEBUG False" in done.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "dev-insecure-change-me"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "short-secret"}, "DJANGO_SECRET_KEY"),
        ({"NOTIFLOW_JWT_SECRET": ""}, "NOTIFLOW_JWT_SECRET"),
        ({"NOTIFLOW_JWT_SECRET": "dev-insecure-change-me"}, "NOTIFLOW_JWT_SECRET"),
        ({"NOTIFLOW_JWT_SECRET": "j" * 31}, "NOTIFLOW_JWT_SECRET"),
        ({"NOTIFLOW_DEMO_PAGE": "true"}, "NOTIFLOW_DEMO_PAGE"),
    ],
    ids=["empty-key", "dev-key", "short-key", "empty-jwt", "dev-jwt", "short-jwt", "demo-page"],
)
def test_production_refuses_to_start_naming_the_unsafe_setting(env, named):
    done = run(SETUP, **env)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert named in done.stderr.strip().splitlines()[-1]


def test_a_jwt_secret_is_not_required_when_no_hmac_algorithm_is_accepted():
    done = run(
        SETUP, NOTIFLOW_JWT_SECRET="x", NOTIFLOW_JWT_ALGORITHMS="RS256", NOTIFLOW_JWT_JWKS_URL="https://idp/jwks"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import webapp.asgi",
        "import worker; worker.app.loader.import_default_modules()",
        "import runpy, sys; sys.argv = ['manage.py', 'check']; runpy.run_path('manage.py', run_name='__main__')",
    ],
    ids=["asgi", "worker", "manage.py"],
)
def test_the_entry_points_load_the_production_settings_unless_told_otherwise(code):
    refused = run(code, settings=None, DJANGO_SECRET_KEY="dev-insecure-change-me")
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY" in refused.stderr.strip().splitlines()[-1]
    assert run(code, settings="webapp.settings.dev").returncode == 0


def test_the_stack_runs_the_development_settings_unless_a_module_was_chosen():
    """``make demo`` and ``make run`` (``webapp.stack``) run their processes with ``webapp.settings.dev``, though
    importing ``webapp`` imports ``worker``, whose default is now the production settings."""
    code = (
        "from pathlib import Path; from webapp.stack import Stack; "
        "print(Stack(var_dir=Path('var/unused')).env['DJANGO_SETTINGS_MODULE'])"
    )
    assert run(code, settings=None).stdout.split() == ["webapp.settings.dev"]
    assert run(code, settings="tests.settings").stdout.split() == ["tests.settings"]
