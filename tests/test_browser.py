"""The web UI in a real browser: Playwright driving Debian's chromium against a live uvicorn."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import open_page, switch_organization
from entitle.db import transaction
from entitle.keys import services as keys
from entitle.tenancy.models import Role

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser


def test_sign_in_redeem_and_switch_organization(world, live_server, chromium):
    # R-CORE-4 through the form; R-CORE-1 the switcher shows only the user's organizations.
    ann = world.user("ann@example.com")
    alpha = world.org("Alpha GmbH", owner=ann)
    beta = world.org("Beta Ltd", region="APAC")
    world.member(beta, ann, Role.admin)
    world.org("Secret Corp", owner=world.user("zed@example.com"))
    [earlier] = world.mint("91379040", quantity=2)
    with transaction(world.ctx.sessions) as s:
        keys.redeem(s, org_id=alpha, typed_key=earlier, actor=world.actor(ann), now=world.now)
    [code] = world.mint("91379040", quantity=5)

    page, console = open_page(chromium)
    page.goto(live_server.url + "/wallet")
    expect(page).to_have_url(live_server.url + "/login?next=%2Fwallet")

    page.get_by_label("E-mail").fill("ann@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_server.url + "/wallet")

    page.get_by_role("link", name="Home", exact=True).click()
    expect(page.get_by_role("heading", name="Alpha GmbH", level=1)).to_be_visible()
    tile = page.get_by_role("region", name="Wallet")
    expect(tile).to_be_visible()
    expect(tile.get_by_role("row", name="91379040")).to_contain_text("2")

    tile.get_by_role("link", name="Open the wallet").click()
    expect(page.get_by_role("heading", name="Wallet", level=1)).to_be_visible()
    units = page.locator('tr[data-part="91379040"] td.units')
    expect(units).to_have_text("2")

    # A marker on the window survives only if the page is not reloaded.
    page.evaluate("window.__stillTheSamePage = true")
    page.get_by_label("Redeem a license key").fill(code.lower())
    page.get_by_role("button", name="Redeem").click()
    expect(page.get_by_role("status")).to_have_text("Redeemed 5 × 91379040")
    expect(units).to_have_text("7")
    assert page.evaluate("window.__stillTheSamePage") is True

    # A refused key shows its code in the same place, still without a reload.
    page.get_by_label("Redeem a license key").fill(code)
    page.get_by_role("button", name="Redeem").click()
    expect(page.get_by_role("alert")).to_contain_text("key_already_redeemed")
    expect(units).to_have_text("7")
    assert page.evaluate("window.__stillTheSamePage") is True

    expect(page.get_by_label("Organization").locator("option")).to_have_text(["Alpha GmbH", "Beta Ltd"])
    switch_organization(page, "Beta Ltd")
    expect(page.get_by_text("Units redeemed into Beta Ltd")).to_be_visible()
    expect(page.get_by_text("The wallet is empty.")).to_be_visible()
    page.get_by_role("link", name="Home", exact=True).click()
    expect(page.get_by_role("heading", name="Beta Ltd", level=1)).to_be_visible()
    expect(page.locator(".org-line")).to_contain_text("Region APAC")
    # Everything the pages use is allowed by their Content-Security-Policy.
    assert not [m for m in console if "Content Security Policy" in m], console
