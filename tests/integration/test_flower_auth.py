"""Flower asks for a login (issue 10): it shows every task's arguments and can revoke tasks and stop workers.

Flower (2.0) reads its options from ``FLOWER_*`` environment variables;
``FLOWER_BASIC_AUTH=user:password[,user:password...]`` turns on HTTP basic
auth for every page and ``/api/`` (not ``/healthcheck``, which the stack's
readiness check uses, nor ``/metrics``).

- ``docker/compose.yaml``'s ``flower`` service requires ``FLOWER_BASIC_AUTH``
  (``${FLOWER_BASIC_AUTH:?...}``: Compose refuses to start without it), read
  from the file itself.
- A real Flower, started the compose way (the service's command and ``FLOWER_*``
  environment, on loopback) and the Procfile way (``webapp.stack``, with
  ``FLOWER_BASIC_AUTH`` in the environment), against the session stack's Redis:
  401 without credentials or with a wrong password, 200 with a right one.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml

from webapp.stack import ROOT, Stack, free_port

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
#: Two logins, as Flower takes them: ``user:password`` pairs, comma-separated.
LOGINS = ("ops:flower-test-secret", "audit:second-login")
FLOWER_BASIC_AUTH = ",".join(LOGINS)
#: Pages that show task arguments or act on the workers, and the API.
PROTECTED = ("/", "/tasks", "/tasks/datatable", "/workers", "/broker", "/api/tasks", "/api/workers", "/api/task/types")
REQUIRED_VARIABLE = re.compile(r"^\$\{FLOWER_BASIC_AUTH:\?[^}]+\}$")


# -- docker/compose.yaml, read as Compose would -----------------------------------------------------


def _services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())  # safe_load resolves the `<<: *app` merge keys
    return dict(compose["services"])


def _argv(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either of Compose's forms (a mapping, or a list of ``KEY=value``)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def _flower_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in _services().items() if "flower" in _argv(service)}


def _interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$NAME``, ``${NAME}``, ``${NAME:?err}``, ``${NAME:-default}`` (and
    the forms without the colon); a missing required variable raises, as ``docker compose`` refuses to start."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        colon, operator, word = match.group("colon"), match.group("op"), match.group("word") or ""
        found = variables.get(name)
        missing = found is None or (colon and found == "")
        if operator == "?" and missing:
            raise LookupError(f"{name}: {word}")
        if operator == "-" and missing:
            return word
        return found or ""

    pattern = r"\$\$|\$\{(?P<braced>\w+)(?:(?P<colon>:?)(?P<op>[?-])(?P<word>[^}]*))?\}|\$(?P<plain>\w+)"
    return re.sub(pattern, substitute, value)


def test_compose_flower_requires_basic_auth() -> None:
    """Every compose service running Flower sets FLOWER_BASIC_AUTH in Compose's required form, and nothing undoes it."""
    flowers = _flower_services()
    assert flowers, f"no service runs `celery ... flower` in {COMPOSE_FILE}"
    for name, service in flowers.items():
        environment = _environment(service)
        assert REQUIRED_VARIABLE.match(environment.get("FLOWER_BASIC_AUTH", "")), (
            f"service {name!r}: environment must set FLOWER_BASIC_AUTH: ${{FLOWER_BASIC_AUTH:?...}} "
            f"(Compose refuses to start without it); has {environment.get('FLOWER_BASIC_AUTH')!r}"
        )
        # The API without a login, or a command-line --basic_auth / --auth that replaces the environment's login.
        assert "FLOWER_UNAUTHENTICATED_API" not in environment, f"service {name!r} opens Flower's API without a login"
        overrides = [arg for arg in _argv(service) if re.match(r"--(basic_auth|auth|auth_provider)\b", arg)]
        assert not overrides, f"service {name!r}: {overrides} on the command line"
        # Published on loopback only, as docker/README.md says (a proxy with TLS in front for anything else).
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"service {name!r} publishes {port!r} beyond loopback"
    # Nothing else serves Flower's port.
    for name, service in _services().items():
        if name not in flowers:
            assert not [p for p in service.get("ports") or [] if str(p).split(":")[-1].startswith("5555")], name


def test_compose_refuses_to_start_without_flower_basic_auth() -> None:
    """Compose's substitution fails on a missing or empty FLOWER_BASIC_AUTH: no stack without a login."""
    for service in _flower_services().values():
        value = _environment(service).get("FLOWER_BASIC_AUTH", "")
        for variables in ({}, {"FLOWER_BASIC_AUTH": ""}):
            with pytest.raises(LookupError, match="FLOWER_BASIC_AUTH"):
                _interpolate(value, variables)
        assert _interpolate(value, {"FLOWER_BASIC_AUTH": FLOWER_BASIC_AUTH}) == FLOWER_BASIC_AUTH


# -- a real Flower ---------------------------------------------------------------------------------


def _get(url: str, login: str | None = None, scheme: str = "Basic") -> tuple[int, Message]:
    """``GET url`` (with ``login``, ``user:password``, in an Authorization header): the status and the headers."""
    request = urllib.request.Request(url)
    if login is not None:
        request.add_header("Authorization", f"{scheme} {base64.b64encode(login.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Flower exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if _get(f"{url}/healthcheck")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Flower not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def _flower_like_compose(tmp_path: Path) -> Iterator[str]:
    """The compose ``flower`` service's command and ``FLOWER_*`` environment (substituted with this test's
    FLOWER_BASIC_AUTH), run here on a free loopback port instead of 0.0.0.0:5555."""
    (service,) = _flower_services().values()
    port = free_port()
    argv = _argv(service)
    assert argv[0] == "celery", argv
    argv[0] = str(Path(sys.executable).parent / "celery")
    for option, value in (("--address", "127.0.0.1"), ("--port", str(port))):
        found = [i for i, arg in enumerate(argv) if arg.startswith(f"{option}=")]
        assert found, f"{option}= not in the compose command {argv}"
        argv[found[0]] = f"{option}={value}"
    flower_environment = {
        key: _interpolate(value, {"FLOWER_BASIC_AUTH": FLOWER_BASIC_AUTH})
        for key, value in _environment(service).items()
        if key.startswith("FLOWER_")
    }
    # The test environment (its Redis, its settings), but only the FLOWER_* options compose gives the service.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")} | flower_environment
    log = tmp_path / "flower.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _flower_like_procfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The Procfile's ``flower`` under honcho, as ``make run`` / ``make demo`` start it, with FLOWER_BASIC_AUTH in
    the environment the stack starts from."""
    monkeypatch.setenv("FLOWER_BASIC_AUTH", FLOWER_BASIC_AUTH)
    flower = Stack(var_dir=tmp_path / "var", processes=("flower",), settings_module="tests.settings")
    flower.prepare(fresh=True)
    try:
        flower.start(log_to=tmp_path / "flower.log")
        flower.wait_ready(timeout=60)
        yield flower.flower_url
    finally:
        flower.stop()


@pytest.fixture(scope="module", params=["compose", "procfile"])
def flower_url(request: Any, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Flower with FLOWER_BASIC_AUTH, against the session stack's Redis (and its worker)."""
    tmp_path = tmp_path_factory.mktemp(f"flower-{request.param}")
    if request.param == "compose":
        yield from _flower_like_compose(tmp_path)
    else:
        with pytest.MonkeyPatch.context() as monkeypatch:
            yield from _flower_like_procfile(tmp_path, monkeypatch)


@pytest.mark.integration
def test_flower_refuses_requests_without_a_login(flower_url: str) -> None:
    for path in PROTECTED:
        status, _ = _get(f"{flower_url}{path}")
        assert status == 401, f"GET {path} without credentials: {status}"
    status, headers = _get(f"{flower_url}/")
    assert (headers["WWW-Authenticate"] or "").startswith("Basic"), headers.items()


@pytest.mark.integration
def test_flower_refuses_a_wrong_password(flower_url: str) -> None:
    # A wrong password, none, an unknown user, and each password with the other login's user name.
    wrong = ["ops:not-the-password", "ops:", "nobody:flower-test-secret"]
    wrong += ["ops:second-login", "audit:flower-test-secret"]
    for login in wrong:
        for path in ("/", "/tasks", "/api/tasks"):
            status, _ = _get(f"{flower_url}{path}", login)
            assert status == 401, f"GET {path} as {login!r}: {status}"
    # The right pair, but not as basic auth.
    assert _get(f"{flower_url}/", LOGINS[0], scheme="Bearer")[0] == 401


@pytest.mark.integration
def test_flower_answers_the_right_login(flower_url: str) -> None:
    for login in LOGINS:  # each of the comma-separated pairs
        for path in ("/", "/tasks", "/workers", "/api/tasks", "/api/workers"):
            status, _ = _get(f"{flower_url}{path}", login)
            assert status == 200, f"GET {path} as {login.split(':')[0]}: {status}"
    # Readiness checks (webapp.stack, a container's health check) need no login.
    assert _get(f"{flower_url}/healthcheck")[0] == 200
