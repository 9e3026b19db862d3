"""The private PostgreSQL of the tooling (webapp.postgres): server settings given at start reach the server."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from tests.environment import VAR_DIR
from webapp.postgres import PostgresError, PrivatePostgres, postgres_bin_dir


def test_a_setting_that_could_smuggle_more_options_is_refused():
    for name, value in [("work_mem", "1MB -c fsync=off"), ("work mem", "1MB"), ("work_mem", "")]:
        with pytest.raises(ValueError, match="not a server setting"):
            PrivatePostgres(VAR_DIR / "unused", settings={name: value})


def test_settings_given_at_start_are_the_servers():
    try:
        postgres_bin_dir()
    except PostgresError:
        pytest.skip("PostgreSQL's server binaries are not installed (make system-postgres)")
    folder = VAR_DIR / "pg-settings"
    shutil.rmtree(folder, ignore_errors=True)
    server = PrivatePostgres(folder, settings={"work_mem": "7MB", "checkpoint_timeout": "30min"})
    url = server.start()
    try:
        with psycopg.connect(url) as connection:
            shown = {name: connection.execute(f"SHOW {name}").fetchone()[0] for name in server.settings}
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert shown == {"work_mem": "7MB", "checkpoint_timeout": "30min"}
