"""``DATABASE_PREPARE_THRESHOLD``: psycopg's ``prepare_threshold`` for PostgreSQL (5 unless told otherwise, "none"
to never prepare, a value in ``DATABASE_URL``'s query first), nothing for SQLite, and a clear error for a value
that is neither. Each case runs a fresh interpreter: settings are read once per process."""

from __future__ import annotations

import pytest

from tests.unit.webapp.test_prod_settings import run

SHOW = (
    "import django; django.setup(); from django.conf import settings; "
    "options = settings.DATABASES['default'].get('OPTIONS', {}); "
    "print('THRESHOLD', options.get('prepare_threshold', 'absent'))"
)
POSTGRES = "postgres://notiflow:pw@127.0.0.1:1/notiflow"


@pytest.mark.parametrize(
    ("url", "setting", "shown"),
    [
        (POSTGRES, None, "5"),
        (POSTGRES, "2", "2"),
        (POSTGRES, "0", "0"),
        (POSTGRES, "none", "None"),
        (POSTGRES, "", "None"),
        (POSTGRES + "?prepare_threshold=9", "2", "9"),
        ("sqlite:////tmp/notiflow-settings-check.sqlite3", "2", "absent"),
    ],
    ids=["default", "given", "at-once", "none", "empty", "url-wins", "sqlite"],
)
def test_prepare_threshold_is_set_for_postgresql_only(url, setting, shown):
    env = {"DATABASE_URL": url}
    if setting is not None:
        env["DATABASE_PREPARE_THRESHOLD"] = setting
    done = run(SHOW, settings="webapp.settings.dev", **env)
    assert done.returncode == 0, done.stderr
    assert f"THRESHOLD {shown}\n" in done.stdout


# The last: a superscript two, which str.isdigit() calls a digit and int() refuses.
@pytest.mark.parametrize("value", ["often", "-1", "2.5", "\u00b2"])
def test_a_prepare_threshold_that_is_not_a_whole_number_stops_the_process_naming_the_setting(value):
    done = run(SHOW, settings="webapp.settings.dev", DATABASE_URL=POSTGRES, DATABASE_PREPARE_THRESHOLD=value)
    assert done.returncode != 0
    assert f"DATABASE_PREPARE_THRESHOLD must be a whole number or 'none', not {value!r}" in done.stderr


def test_without_psycopg_3_the_option_is_left_out_for_psycopg2_which_would_refuse_it():
    # The settings module alone: without psycopg 3 (nor psycopg2 here) Django's backend cannot load.
    code = (
        "import importlib, sys; sys.modules['psycopg'] = None; "
        "settings = importlib.import_module('webapp.settings.dev'); "
        "print('THRESHOLD', settings.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold', 'absent'))"
    )
    done = run(code, settings="webapp.settings.dev", DATABASE_URL=POSTGRES)
    assert done.returncode == 0, done.stderr
    assert "THRESHOLD absent\n" in done.stdout
