"""Every main page in a real browser, on a laptop and on a phone (issue 16 points 5 and 7):
Playwright driving Debian's chromium against a live uvicorn. At 1280 and at 390 px wide no page
scrolls sideways (the document is never wider than the window) and axe-core finds no serious or
critical violation. Nothing is written to the repository (no screenshots are kept)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import sign_in
from test_portal_home import AXIS_PRODUCT, build_scenario

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser

LAPTOP, PHONE = 1280, 390
RULE_ID = re.compile(r"\bR-(?:AC|AX|MY|CORE)-\d+")  # the spec's rule IDs belong in the code, not on pages


def main_pages(sc) -> dict[str, str]:
    """The pages a user of the vendors' portals lands on: home, each model's main pages (list and
    the object's own page), history, wallet and the account."""
    return {
        "home": "/",
        "access commander": "/ac",
        "installation": f"/ac/installations/{sc.installation}",
        "axis": "/axis",
        "axis product": f"/axis/products/{AXIS_PRODUCT}",
        "axis licensing": f"/axis/products/{AXIS_PRODUCT}?tab=licensing",
        "my2n": "/my2n",
        "site": f"/my2n/sites/{sc.site}",
        "site apartments": f"/my2n/sites/{sc.site}?tab=apartments",
        "history": "/history",
        "wallet": "/wallet",
        "systems": "/systems",
        "people": "/people",
        "account": "/account",
        "tokens": "/tokens",
    }


def _serious_violations(page) -> list[tuple[str, list[str]]]:
    from axe_playwright_python import sync_playwright as axe  # a dev dependency: never skipped

    results = axe.Axe().run(page)
    return [(v["id"], n["target"]) for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical") for n in v["nodes"]]


def _sideways(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def _widest(page) -> list[str]:
    """What sticks out beyond the window's right edge: the clue when the check fails."""
    return page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .filter(e => !e.closest('.scroll, details:not([open])'))
        .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')
                       + ' ' + Math.round(e.getBoundingClientRect().right))""")


@contextmanager
def signed_in(chromium: Any, url: str, email: str, *, width: int, height: int) -> Iterator[Any]:
    """A page of a new browser context ``width`` px wide, signed in as ``email``; closed after."""
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        sign_in(page, url, email, PASSWORD)
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("width", [LAPTOP, PHONE], ids=["1280px", "390px"])
def test_no_main_page_scrolls_sideways_and_axe_finds_nothing_serious(world, live_server, chromium, width):
    sc = build_scenario(world)
    with signed_in(chromium, live_server.url, "ann@example.com", width=width, height=900) as page:
        expect(page.get_by_role("heading", name="Acme", level=1)).to_be_visible()
        overflowing, violations = {}, {}
        for name, path in main_pages(sc).items():
            page.goto(live_server.url + path)
            expect(page.locator("main h1")).to_be_visible()
            scroll_width, inner_width = _sideways(page)
            if scroll_width > inner_width:
                overflowing[name] = (scroll_width, _widest(page))
            assert not RULE_ID.search(page.locator("body").inner_text()), f"a rule ID on {name}"
            if found := _serious_violations(page):
                violations[name] = found
        assert not overflowing, f"wider than {width} px: {overflowing}"
        assert not violations, violations


def test_on_a_phone_the_navigation_collapses_and_a_skip_link_reaches_the_content(world, live_server, chromium):
    sc = build_scenario(world)
    with signed_in(chromium, live_server.url, "ann@example.com", width=PHONE, height=800) as page:
        nav = page.get_by_role("navigation", name="Main")
        # Collapsed: the pages are behind the menus' buttons until one is opened.
        expect(nav.get_by_role("link", name="Wallet")).to_be_hidden()
        nav.locator('details[data-menu="organization"] > summary').click()
        expect(nav.get_by_role("link", name="Wallet")).to_be_visible()
        assert _sideways(page)[0] <= PHONE
        nav.get_by_role("link", name="Wallet").click()
        expect(page.get_by_role("heading", name="Wallet", level=1)).to_be_visible()

        # The first Tab shows the skip link; following it puts the focus on the content.
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to the content")
        expect(skip).to_be_focused()
        expect(skip).to_be_in_viewport()
        page.keyboard.press("Enter")
        expect(page.locator("main#content")).to_be_focused()

        # The installation page keeps each device's state and action on screen.
        page.goto(f"{live_server.url}/ac/installations/{sc.installation}")
        row = page.locator('table.devices tbody tr').first
        for label in ("State", "Action"):
            cell = row.locator(f"td[data-label={label}]")
            expect(cell).to_be_visible()
            box = cell.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE, (label, box)


def test_one_menu_is_open_at_a_time_and_a_click_elsewhere_or_escape_closes_it(world, live_server, chromium):
    build_scenario(world)
    with signed_in(chromium, live_server.url, "ann@example.com", width=LAPTOP, height=900) as page:
        organization = page.locator('header details[data-menu="organization"]')
        account = page.locator('header details[data-menu="account"]')
        organization.locator("> summary").click()
        expect(organization).to_have_attribute("open", "")
        account.locator("> summary").click()  # opening another menu closes the first
        expect(account).to_have_attribute("open", "")
        expect(organization).not_to_have_attribute("open", "")
        page.locator("main h1").click()  # a click outside closes it
        expect(account).not_to_have_attribute("open", "")
        organization.locator("> summary").click()
        expect(organization.get_by_role("link", name="People")).to_be_visible()
        page.keyboard.press("Escape")  # Escape closes it and gives the focus back to its button
        expect(organization).not_to_have_attribute("open", "")
        expect(organization.locator("> summary")).to_be_focused()
        organization.locator("> summary").click()
        organization.get_by_role("link", name="People").click()
        expect(page.get_by_role("heading", name="People", level=1)).to_be_visible()


@pytest.mark.parametrize("width", [LAPTOP, PHONE], ids=["1280px", "390px"])
def test_the_vendors_pages_fit_too(world, live_server, chromium, width):
    # The issuer's pages (license keys, vouchers, My2N support), reached through the Vendor menu.
    world.user("vendor@example.com", issuer=True)
    with signed_in(chromium, live_server.url, "vendor@example.com", width=width, height=900) as page:
        menu = page.locator('header details[data-menu="vendor"]')
        menu.locator("> summary").click()
        menu.get_by_role("link", name="License keys").click()
        expect(page.get_by_role("heading", name="License keys", level=1)).to_be_visible()
        # A batch minted, so that the page shows its keys and their CSV download.
        page.get_by_label("Number of keys").fill("2")
        page.get_by_role("button", name="Mint keys").click()
        expect(page.get_by_role("button", name="Download the keys as CSV")).to_be_visible()
        overflowing, violations = {}, {}
        for name, path in {"license keys": None, "vouchers": "/issuer/my2n/vouchers",
                           "catalog": "/issuer/catalog", "my2n support": "/issuer/my2n"}.items():
            if path:
                page.goto(live_server.url + path)
            expect(page.locator("main h1")).to_be_visible()
            scroll_width, inner_width = _sideways(page)
            if scroll_width > inner_width:
                overflowing[name] = (scroll_width, _widest(page))
            if found := _serious_violations(page):
                violations[name] = found
        assert not overflowing, f"wider than {width} px: {overflowing}"
        assert not violations, violations
