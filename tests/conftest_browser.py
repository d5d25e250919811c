"""Browser-test plumbing (a pytest plugin loaded by tests/test_browser.py).

Playwright drives Debian's chromium; it never downloads a browser. When chromium is missing the
browser tests are skipped (or fail, with ENTITLE_REQUIRE_BROWSER=1) and the run says so plainly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
MISSING = "Debian's chromium is not installed (apt-get install chromium): browser tests skipped"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("ENTITLE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ENTITLE_REQUIRE_BROWSER=1 but {CHROMIUM} does not exist: install Debian's "
                        "chromium (apt-get install chromium) to run the browser tests.")
        pytest.skip(MISSING)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any) -> tuple[Any, list[str]]:
    """A new page with a 10 s default timeout, and the list its console errors land in."""
    page = browser.new_page()
    page.set_default_timeout(10_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    return page, console


def sign_in(page: Any, url: str, email: str, password: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def follow(page: Any, menu: str, link: str) -> None:
    """Open one of the navigation's menus ("licenses", "organization", "vendor", "account") and
    follow a link in it: the menus are <details>, closed until their button is pressed."""
    details = page.locator(f'header details[data-menu="{menu}"]')
    details.locator("> summary").click()
    details.get_by_role("link", name=link, exact=True).click()


def switch_organization(page: Any, name: str) -> None:
    """Choose another organization in the switcher at the top right."""
    details = page.locator('header details[data-menu="organization-switcher"]')
    details.locator("> summary").click()
    details.get_by_label("Organization").select_option(label=name)
    details.get_by_role("button", name="Switch").click()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if any(MISSING in str(getattr(report, "longrepr", "")) for report in skipped):
        terminalreporter.write_line(MISSING, yellow=True, bold=True)
