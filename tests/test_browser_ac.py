"""Access Commander's License settings in a real browser: Playwright driving Debian's chromium
against a live uvicorn (SPEC §2)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import follow, open_page, sign_in

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser


def test_register_license_and_activate_in_order(world, live_server, chromium):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    [code] = world.mint("91379040")

    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    expect(page.get_by_role("heading", name="Acme", level=1)).to_be_visible()

    # Register an installation; its device-report token is shown once.
    page.get_by_role("link", name="Access Commander", exact=True).click()
    expect(page.get_by_role("heading", name="Access Commander", level=1)).to_be_visible()
    page.get_by_label("Installation name").fill("Plant")
    page.get_by_role("button", name="Register installation").click()
    expect(page.get_by_role("status")).to_contain_text("Installation Plant")
    expect(page.get_by_role("textbox", name="Device-report token")).to_have_value(re.compile(r"^eac_\S{20,}$"))
    page.get_by_role("link", name="Open the License settings of Plant").click()
    expect(page.get_by_role("heading", name="Plant: License settings", level=1)).to_be_visible()
    # R-AC-2: a new installation runs on the trial.
    expect(page.locator(".license-state")).to_have_text("Trial")

    # Two devices, reported connected as they are added (R-AC-4: a license needs a connected one).
    for serial in ("LD-1", "D-2"):
        page.get_by_label("Serial number").fill(serial)
        page.get_by_role("button", name="Add device").click()
        expect(page.get_by_role("status")).to_have_text(f"Device {serial} is added and connected.")
        expect(page.locator(f'tr[data-serial="{serial}"] td.connected')).to_have_text("connected")

    # Redeem a key into the wallet.
    follow(page, "organization", "Wallet")
    page.get_by_label("Redeem a license key").fill(code)
    page.get_by_role("button", name="Redeem").click()
    expect(page.get_by_role("status")).to_have_text("Redeemed 1 × 91379040")

    page.get_by_role("link", name="Access Commander", exact=True).click()
    page.get_by_role("link", name="Plant").click()
    expect(page.locator('tr[data-part="91379040"] td.wallet-units')).to_have_text("1")

    # A marker on the window survives only if the page is not reloaded (htmx swaps the content).
    page.evaluate("window.__stillTheSamePage = true")

    # R-AC-3, R-AC-4: generate a license for LD-1 from the wallet.
    # R-AC-1: the default is what the 2 devices need, previewed before anything moves.
    page.get_by_label("License device", exact=True).select_option("LD-1")
    page.get_by_role("button", name="Preview license").click()
    expect(page.get_by_role("heading", name="Preview: what the new license for LD-1 moves")).to_be_visible()
    expect(page.locator('tr[data-move="91379040"]')).to_contain_text("01372-001")
    expect(page.locator('tr[data-part="91379040"] td.wallet-units')).to_have_text("1")  # nothing moved yet
    _no_axe_violations(page)  # the page with its preview and the file forms
    page.get_by_role("button", name="Generate this license").click()
    expect(page.get_by_role("status")).to_contain_text("License 1 is generated for the license device LD-1")
    expect(page.locator(".license-state")).to_have_text("Active")
    expect(page.locator('[data-field="license-serial"]')).to_have_text("LD-1")
    expect(page.locator('tr[data-count="devices"] td.ratio')).to_have_text("2 / 5")

    # R-AC-7: the second device first is refused, with a message that names the license device.
    page.get_by_role("button", name="Activate D-2", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("license_device_first")
    expect(alert).to_contain_text("Activate the license device LD-1 first")
    expect(page.locator('tr[data-serial="D-2"] td.state')).to_have_text("inactive")
    expect(page.get_by_role("heading", name="Active licenses")).to_be_visible()  # the page is kept

    page.get_by_role("button", name="Activate LD-1", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Device LD-1 is active.")
    expect(page.locator('tr[data-serial="LD-1"] td.state')).to_have_text("active")
    page.get_by_role("button", name="Activate D-2", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Device D-2 is active.")
    expect(page.locator('tr[data-serial="LD-1"] td.state')).to_have_text("active")
    expect(page.locator('tr[data-serial="D-2"] td.state')).to_have_text("active")
    expect(page.locator('tr[data-count="devices"] td.n').nth(1)).to_have_text("2 active")
    assert page.evaluate("window.__stillTheSamePage") is True
    _no_axe_violations(page)
    # Everything the page uses is allowed by its Content-Security-Policy.
    assert not [m for m in console if "Content Security Policy" in m], console



def _no_axe_violations(page) -> None:
    from axe_playwright_python import sync_playwright as axe  # a dev dependency: never skipped

    snapshot = axe.Axe().run(page).generate_snapshot()
    assert snapshot == "", snapshot
