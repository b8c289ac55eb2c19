"""A real headless browser for the page tests: Debian's chromium driven by Playwright.

Playwright launches the system browser (``/usr/bin/chromium``, or ``$FASHATTR_CHROMIUM``); it never
downloads one. ``make test`` installs the package (``tools/system-deps.sh``). The flags keep chromium
off the network it cannot reach here (background updates, sync, QUIC) and run it as root in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

CHROMIUM = os.environ.get("FASHATTR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class PageLog:
    """What the page said while a test used it: console errors, uncaught exceptions, failed requests."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests


def require_chromium() -> None:
    """Skip (fail under CI=true) when the browser or Playwright is missing."""
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"no chromium at {CHROMIUM} (tools/system-deps.sh installs Debian's package)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run under CI: {reason}")
        pytest.skip(reason)


@contextmanager
def open_page(width: int = 1280, height: int = 900) -> Iterator[tuple[Any, PageLog]]:
    """A fresh page in a new headless chromium, and the log of its errors."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: log.failed_requests.append(f"{r.url}: {r.failure}"))
            yield page, log
        finally:
            browser.close()


def wait_until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` (JavaScript) until it is truthy. Playwright's ``wait_for_function`` polls by ``eval``
    inside the page, which a page's Content-Security-Policy (no 'unsafe-eval') refuses whenever the first check
    fails; ``page.evaluate`` goes through the DevTools protocol, which the CSP does not govern."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        time.sleep(0.05)
