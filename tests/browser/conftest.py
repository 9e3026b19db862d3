"""Browser tests: Playwright's sync API driving Debian's Chromium (no browser download).

The browser is ``/usr/bin/chromium`` (``scripts/ensure-system.sh --browser``
installs it), or the one ``NOTIFLOW_CHROMIUM`` names; without it the tests
are skipped and ``-ra`` says why. Screenshots go to ``var/test-artifacts/``.

While a Playwright browser is open, its sync API keeps an asyncio event loop
in the test's thread, and Django refuses ORM calls from a thread with a
running loop (``SynchronousOnlyOperation``). The tests' own ORM calls are
plain synchronous ones, so ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set for as long
as a browser module runs, and only then.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from webapp.stack import ROOT

CHROMIUM = Path(os.environ.get("NOTIFLOW_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "var" / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `scripts/ensure-system.sh --browser` or set NOTIFLOW_CHROMIUM")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
            try:
                yield launched
            finally:
                launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:
    """``new_context()``: a fresh browser profile (its own cookies), closed after the test."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(viewport={"width": 1000, "height": 760})
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def artifact(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``artifact("bob.png")``: a path under ``var/test-artifacts/`` named after the test."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def path(name: str) -> Path:
        return ARTIFACTS / f"{test}-{name}"

    return path
