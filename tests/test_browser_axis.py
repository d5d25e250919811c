"""AXIS License Manager in a real browser: Playwright driving Debian's chromium against a live
uvicorn (SPEC §3): register a system with devices, start the subscription, redeem a key in
Product wallet, allocate in Product licensing, confirm, and be fully licensed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import open_page, sign_in

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser


def test_register_start_redeem_allocate_fully_licensed(world, live_server, chromium):  # R-AX-1 R-AX-3 R-AX-4 R-AX-5
    ann = world.user("ann@example.com")
    world.org("Cams", owner=ann)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=5)

    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    expect(page.get_by_role("heading", name="Cams", level=1)).to_be_visible()

    # R-AX-1: register an online system from the Product list.
    page.get_by_role("link", name="AXIS", exact=True).click()
    expect(page.get_by_role("heading", name="Licenses (AXIS)", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Upload system file")).to_have_attribute("href", "/systems")
    page.get_by_label("System ID").fill("ACS-1")
    page.get_by_label("System name (optional)").fill("HQ")
    page.get_by_role("button", name="Register system").click()
    expect(page.get_by_role("status")).to_have_text(
        "System HQ (ACS-1) is registered to Cams. Add its devices in System setup.")
    expect(page.locator('tr[data-product="axis-camera-station"] td.axis-state')).to_have_text("Trial")

    # A marker on the window survives only if the page is not reloaded (htmx swaps the content).
    page.evaluate("window.__stillTheSamePage = true")

    # Its devices, in System setup.
    tabs = page.get_by_role("navigation", name="Product")
    page.get_by_role("link", name="Add the devices of HQ in System setup").click()
    expect(page.get_by_role("heading", name="System setup", level=2)).to_be_visible()
    page.get_by_label("Serial numbers of devices to add to HQ").fill("CAM-1\nCAM-2\nCAM-3")
    page.get_by_role("button", name="Add devices").click()
    expect(page.get_by_role("status")).to_contain_text("3 Core devices added to HQ.")
    expect(page.locator('tr[data-serial="CAM-3"]')).to_be_visible()

    # R-AX-3: start the subscription in Product overview; the grace period's end is shown.
    tabs.get_by_role("link", name="Product overview").click()
    expect(page.locator('[data-field="state"]')).to_have_text("Trial")
    page.get_by_role("button", name="Start your subscription").click()
    expect(page.get_by_role("status")).to_contain_text("Subscription has started on 2026-01-15")
    expect(page.locator('[data-field="subscription"]')).to_contain_text("Subscription has started")
    expect(page.locator('[data-field="grace-end"]')).to_have_text("2026-02-14")
    expect(page.locator('[data-field="state"]')).to_have_text("In grace period")

    # R-AX-4: redeem the key in Product wallet.
    tabs.get_by_role("link", name="Product wallet").click()
    page.get_by_label("License key").fill(code)
    page.get_by_role("button", name="Redeem license key").click()
    expect(page.get_by_role("status")).to_have_text(
        "License key redeemed: 5 × AXIS-ACS-CORE-1Y added to the product wallet.")
    expect(page.locator('tr[data-part="AXIS-ACS-CORE-1Y"] td.units')).to_have_text("5")

    # R-AX-5: allocate the current need in Product licensing, then confirm.
    tabs.get_by_role("link", name="Product licensing").click()
    expect(page.locator('tr[data-year="0"] td.ratio[data-type="core"]').first).to_have_text("3 / 0")
    field = page.get_by_label(re.compile(r"^Core licenses for 2026-01-15"))
    expect(field).to_have_value("3")
    page.get_by_role("button", name="Confirm allocation").click()
    expect(page.get_by_role("heading", name="Confirm the allocation")).to_be_visible()
    expect(page.locator('tr[data-type="core"][data-year="0"]')).to_contain_text("2026-01-15 – 2027-01-15")
    expect(page.locator('[data-field="state-after"]')).to_have_text("Fully licensed")
    page.get_by_role("button", name="Confirm", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("3 licenses allocated. The product is fully licensed.")

    tabs.get_by_role("link", name="Product overview").click()
    expect(page.locator('[data-field="state"]')).to_have_text("Fully licensed")
    expect(page.locator(".axis-status")).to_contain_text("Subscription has started")
    tabs.get_by_role("link", name="Product wallet").click()
    expect(page.locator('tr[data-part="AXIS-ACS-CORE-1Y"] td.units')).to_have_text("2")
    tabs.get_by_role("link", name="History").click()
    expect(page.locator("table.history")).to_contain_text("axis.allocated")
    assert page.evaluate("window.__stillTheSamePage") is True
    # Everything the page uses is allowed by its Content-Security-Policy.
    assert not [m for m in console if "Content Security Policy" in m], console
