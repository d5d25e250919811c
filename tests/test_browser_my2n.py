"""My2N in a real browser: Playwright driving Debian's chromium against a live uvicorn (SPEC §4):
assigning devices to an apartment up to its four paid devices, the migration of a custom-model
site from the checklist to the vendor's model change, the sign-in it forces and the site-type
choice, and a CSV import (an htmx file upload) refused row by row, then accepted, then exported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import follow, open_page, sign_in
from entitle.actors import operator
from entitle.db import transaction
from entitle.my2n import services as my2n

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser

VENDOR = operator("2n-support")


def test_devices_go_into_an_apartment_up_to_four_paid_ones(world, live_server, chromium):  # R-MY-2 R-MY-3
    world.org("Residence", owner=world.user("ann@example.com"))

    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    page.get_by_role("link", name="My2N", exact=True).click()
    expect(page.get_by_role("heading", name="Sites (My2N)", level=1)).to_be_visible()
    page.get_by_label("Site name").fill("Block A")
    page.get_by_role("button", name="Create site").click()
    expect(page.get_by_role("status")).to_have_text(
        "Site Block A is created with the apartment model. Add its apartments and devices.")
    # A marker on the window survives only if the page is not reloaded (htmx swaps the content).
    page.evaluate("window.__stillTheSamePage = true")

    page.get_by_role("link", name="Add the apartments of the new site").click()
    expect(page.get_by_role("heading", name="Apartments", level=2)).to_be_visible()
    page.get_by_label("Apartment name").fill("2B")
    page.get_by_role("button", name="Create apartment").click()
    expect(page.get_by_role("status")).to_contain_text("Apartment 2B is created.")

    # Five paid devices, and a free 2N answering unit, arrive outside every apartment.
    for serial, kind in (("D1", "Phone"), ("D2", "Tablet"), ("D3", "Third-party device"), ("D4", "Phone"),
                         ("D5", "Tablet"), ("AU", "2N answering unit")):
        page.get_by_label("Serial number").fill(serial)
        page.get_by_label("Kind").select_option(label=kind)
        page.get_by_role("button", name="Add device").click()
        expect(page.get_by_role("status")).to_have_text(f"{kind} {serial} is added to the site, outside every apartment.")
    loose = page.locator("section.my2n-loose")
    expect(loose.locator("tr[data-serial]")).to_have_count(6)

    apartment = page.locator('section.my2n-apartment[data-apartment="2B"]')
    for n, serial in enumerate(("AU", "D1", "D2", "D3", "D4"), start=0):
        page.get_by_label(f"Apartment for {serial}").fill("2B")
        page.get_by_role("button", name=f"Assign {serial}", exact=True).click()
        expect(page.get_by_role("status")).to_have_text(f"Device {serial} is assigned to apartment 2B.")
        expect(apartment.locator(f'tr[data-serial="{serial}"]')).to_be_visible()
        expect(apartment.locator('[data-field="paid-devices"]')).to_have_text(f"{n} / 4")

    # The fifth paid device is refused, with the message that says to create another apartment.
    page.get_by_label("Apartment for D5").fill("2B")
    page.get_by_role("button", name="Assign D5", exact=True).click()
    alert = page.locator("#content").get_by_role("alert")
    # The sentence first, the stable code in small print after it.
    expect(alert).to_have_text("This apartment already holds 4 paid devices (phones, tablets, third-party devices), "
                               "the most it can; create another apartment for this device. "
                               "Code: apartment_paid_device_limit")
    expect(page.get_by_label("Apartment for D5")).to_have_value("2B")  # what was typed is kept
    expect(loose.locator('tr[data-serial="D5"]')).to_be_visible()
    expect(apartment.locator('[data-field="paid-devices"]')).to_have_text("4 / 4")

    # So another apartment: it takes the fifth.
    page.get_by_role("link", name="Create another apartment").click()
    page.get_by_label("Apartment name").fill("2C")
    page.get_by_role("button", name="Create apartment").click()
    expect(page.get_by_role("status")).to_contain_text("Apartment 2C is created.")
    page.get_by_label("Apartment for D5").fill("2C")
    page.get_by_role("button", name="Assign D5", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Device D5 is assigned to apartment 2C.")
    expect(page.locator('section.my2n-apartment[data-apartment="2C"] tr[data-serial="D5"]')).to_be_visible()
    expect(loose.locator("tr[data-serial]")).to_have_count(0)

    # R-MY-3: both apartments need a license; the dashboard says what to order.
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Site dashboard").click()
    expect(page.locator('[data-field="apartments"]')).to_have_text("2")
    expect(page.locator('[data-field="needing-license"]')).to_have_text("2")
    expect(page.locator('[data-field="order"]')).to_have_text("2 × 9137958")
    assert page.evaluate("window.__stillTheSamePage") is True
    # Everything the page uses is allowed by its Content-Security-Policy.
    assert not [m for m in console if "Content Security Policy" in m], console


def test_migration_checklist_model_change_sign_in_again_site_type(world, live_server, chromium):  # R-MY-4 R-MY-1
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    world.user("support@2n.example", issuer=True)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org, name="Old Block", model="custom", actor=VENDOR, now=world.now,
                                custom_expires_at=world.now + timedelta(days=60))
        for serial, kind in (("IC-1", "intercom"), ("PH-1", "phone"), ("AU-1", "answering_unit")):
            my2n.add_device(s, site=site, serial=serial, kind=kind, actor=VENDOR, now=world.now)

    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    page.get_by_role("link", name="My2N", exact=True).click()
    page.get_by_role("link", name="Old Block").click()
    expect(page.locator('[data-field="custom-expiry"]')).to_contain_text("expires on 2026-03-16")
    tabs = page.get_by_role("navigation", name="Site")

    # The checklist lists the unassigned devices, never the intercom.
    tabs.get_by_role("link", name="Migration").click()
    expect(page.locator('[data-field="unassigned-count"]')).to_have_text("2 devices are not in an apartment yet.")
    checklist = page.locator("table.my2n-checklist")
    expect(checklist.locator("tr[data-serial]")).to_have_count(2)
    expect(checklist.locator('tr[data-serial="IC-1"]')).to_have_count(0)
    expect(page.get_by_role("button", name="Change model")).to_have_count(0)  # not the company's to do

    # Create an apartment and assign the devices from the checklist.
    page.get_by_role("link", name="Create the apartments").click()
    page.get_by_label("Apartment name").fill("1")
    page.get_by_role("button", name="Create apartment").click()
    expect(page.get_by_role("status")).to_contain_text("Apartment 1 is created.")
    tabs.get_by_role("link", name="Migration").click()
    expect(page.get_by_role("heading", name="Checklist")).to_be_visible()  # the Apartments tab lists them too
    for serial in ("PH-1", "AU-1"):
        page.get_by_label(f"Apartment for {serial}").fill("1")
        page.get_by_role("button", name=f"Assign {serial}", exact=True).click()
        expect(page.get_by_role("status")).to_have_text(f"Device {serial} is assigned to apartment 1.")
    expect(page.locator('[data-field="checklist-done"]')).to_have_text(
        "All devices are assigned to apartments — contact 2N Tech Support to change the site to the apartment model.")
    expect(checklist).to_have_count(0)

    # 2N Tech Support (the issuer) changes the model, in its own browser session.
    vendor, vendor_console = open_page(chromium)
    sign_in(vendor, live_server.url, "support@2n.example", PASSWORD)
    follow(vendor, "vendor", "My2N support")
    card = vendor.locator('section.my2n-support-site[data-site="Old Block"]')
    expect(card.locator('[data-field="ready"]')).to_be_visible()
    card.get_by_role("button", name="Change model").click()
    expect(vendor.get_by_role("status")).to_contain_text(
        "Site Old Block has the apartment model now. 1 user of the company was logged out")
    expect(vendor.get_by_text("No site is on the custom model.")).to_be_visible()

    # The company's admin is logged out: the next click lands on the sign-in page.
    tabs.get_by_role("link", name="Site dashboard").click()
    expect(page).to_have_url(live_server.url + "/login")
    page.get_by_label("E-mail").fill("ann@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Legacy", level=1)).to_be_visible()

    # Signed in again, the admin chooses the site type.
    page.get_by_role("link", name="My2N", exact=True).click()
    expect(page.locator('tr[data-site="Old Block"] td[data-model]')).to_have_text("Apartment model")
    page.get_by_role("link", name="Old Block").click()
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Migration").click()
    expect(page.locator('[data-field="migrated"]')).to_have_text("The site has the apartment model since 2026-01-15.")
    page.get_by_label("Apartment building").check()
    page.get_by_role("button", name="Choose site type").click()
    expect(page.get_by_role("status")).to_have_text("The site type is apartment building.")
    expect(page.locator('[data-field="site-type"]')).to_have_text("Apartment building")
    for messages in (console, vendor_console):
        assert not [m for m in messages if "Content Security Policy" in m], messages


def test_csv_import_lists_refused_rows_then_imports_and_exports(world, live_server, chromium):  # R-MY-2
    org = world.org("Residence", owner=world.user("ann@example.com"))
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org, name="Block A", actor=VENDOR, now=world.now)
        apt = my2n.create_apartment(s, site=site, name="1A", actor=VENDOR, now=world.now)
        for i in range(1, 5):
            my2n.add_device(s, site=site, serial=f"P{i}", kind="phone", apartment_id=apt.id, actor=VENDOR,
                            now=world.now)
    header = "apartment,serial,kind,local_mode\n"

    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    page.get_by_role("link", name="My2N", exact=True).click()
    page.get_by_role("link", name="Block A").click()
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Apartments").click()
    expect(page.get_by_role("heading", name="Import CSV")).to_be_visible()
    page.evaluate("window.__stillTheSamePage = true")

    # A fifth paid phone for 1A and an unknown kind: each refused row is listed, nothing is imported.
    page.get_by_label("CSV file (UTF-8)").set_input_files(files=[{
        "name": "site.csv", "mimeType": "text/csv",
        "buffer": (header + "2A,T1,tablet,false\n1A,P5,phone,false\n2A,X1,toaster,false\n").encode()}])
    page.get_by_role("button", name="Import CSV").click()
    expect(page.locator("#content").get_by_role("alert")).to_contain_text(
        "The file has 2 problems; nothing was imported.")
    problems = page.locator("table.my2n-csv-problems tbody tr")
    expect(problems).to_have_count(2)
    expect(problems.nth(0).locator("td")).to_have_text([
        "3", "apartment", "apartment_paid_device_limit",
        ("This apartment already holds 4 paid devices (phones, tablets, third-party devices), the most it can; create "
         "another apartment for this device.")])
    expect(problems.nth(1).locator("td").nth(2)).to_have_text("device_kind_invalid")
    expect(page.locator('section.my2n-apartment[data-apartment="2A"]')).to_have_count(0)

    # The corrected file is imported, and the export downloads it back with the rest of the site.
    page.get_by_label("CSV file (UTF-8)").set_input_files(files=[{
        "name": "site.csv", "mimeType": "text/csv", "buffer": (header + "2A,T1,tablet,false\n2A,P5,phone,false\n").encode()}])
    page.get_by_role("button", name="Import CSV").click()
    expect(page.get_by_role("status")).to_have_text(
        "The file is imported (2 rows): 1 apartment created, 2 devices added, 0 devices assigned to an "
        "apartment, local mode changed on 0 devices.")
    expect(page.locator("table.my2n-csv-problems")).to_have_count(0)
    expect(page.locator('section.my2n-apartment[data-apartment="2A"] tr[data-serial]')).to_have_count(2)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert download.value.suggested_filename == f"site-{site.id}-Block-A.csv"
    with open(download.value.path(), encoding="utf-8") as f:
        exported = f.read().splitlines()
    assert exported == ["apartment,serial,kind,local_mode", *(f"1A,P{i},phone,false" for i in range(1, 5)),
                        "2A,P5,phone,false", "2A,T1,tablet,false"]
    assert page.evaluate("window.__stillTheSamePage") is True
    assert not [m for m in console if "Content Security Policy" in m], console
