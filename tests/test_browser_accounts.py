"""The account pages in a real browser: the first-run admin chooses a password before anything else,
a user signs out another of their browsers; both pages at a phone's width."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from conftest import PASSWORD
from conftest_browser import follow, open_page, sign_in
from entitle.cli.main import app as cli_app
from entitle.db import transaction
from entitle.tenancy import services as tenancy

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser

NEW = "a brand new passphrase"
PHONE = {"width": 390, "height": 844}


def first_run(ctx: Any) -> dict[str, Any]:
    run = CliRunner().invoke(cli_app, ["first-run", "--json", "--database-url", ctx.settings.database_url])
    assert run.exit_code == 0, run.output
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def fill_password_form(page: Any, current: str, new: str, again: str) -> None:
    page.get_by_label("Current password").fill(current)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(again)
    page.get_by_role("button", name="Change password").click()


def fits(page: Any) -> bool:
    """Nothing sticks out sideways: the page needs no horizontal scrolling."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def test_first_run_admin_is_asked_for_a_new_password_then_lands_on_the_dashboard(ctx, live_server, chromium):
    first = first_run(ctx)
    page, console = open_page(chromium)
    sign_in(page, live_server.url, first["email"], first["password"])
    expect(page).to_have_url(live_server.url + "/account/password")
    expect(page.get_by_role("heading", name="Choose your own password", level=1)).to_be_visible()
    expect(page.get_by_text("the one you signed in with was generated")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)

    page.goto(live_server.url + "/wallet")  # not before the password is changed
    expect(page).to_have_url(live_server.url + "/account/password")

    fill_password_form(page, first["password"], NEW, NEW + "?")
    expect(page.get_by_role("alert").filter(has_text="differ")).to_be_visible()
    expect(page).to_have_url(live_server.url + "/account/password")

    fill_password_form(page, first["password"], NEW, NEW)
    expect(page).to_have_url(live_server.url + "/")
    expect(page.get_by_role("heading", name="My organization", level=1)).to_be_visible()
    follow(page, "organization", "Wallet")
    expect(page.get_by_role("heading", name="Wallet", level=1)).to_be_visible()
    assert not [m for m in console if "Content Security Policy" in m], console


def test_revoking_another_session_signs_that_browser_out(world, live_server, chromium):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    here, console = open_page(chromium)
    there, _ = open_page(chromium)  # another browser: its own cookies
    sign_in(here, live_server.url, "ann@example.com", PASSWORD)
    sign_in(there, live_server.url, "ann@example.com", PASSWORD)
    expect(there.get_by_role("heading", name="Acme", level=1)).to_be_visible()

    follow(here, "account", "Password and sessions")
    expect(here.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    sessions = here.get_by_role("table").locator("tbody tr")
    expect(sessions).to_have_count(2)
    expect(here.locator('tr[aria-current="true"]')).to_contain_text("This session")

    here.once("dialog", lambda dialog: dialog.accept())
    here.get_by_role("button", name="Revoke").click()
    expect(here.get_by_role("status")).to_have_text("That session is signed out.")
    expect(sessions).to_have_count(1)

    there.reload()
    expect(there).to_have_url(live_server.url + "/login")
    here.reload()
    expect(here.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    assert not [m for m in console if "Content Security Policy" in m], console


def _forced_user_at_phone_width(world: Any, live_server: Any, chromium: Any) -> Any:
    with transaction(world.ctx.sessions) as s:
        ann = tenancy.create_user(s, email="ann@example.com", password=PASSWORD, now=world.now,
                                  must_change_password=True)
    world.org("Acme", owner=ann)
    page = chromium.new_page(viewport=PHONE)
    page.set_default_timeout(10_000)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    expect(page).to_have_url(live_server.url + "/account/password")
    return page


def test_account_pages_fit_a_phone(world, live_server, chromium):
    page = _forced_user_at_phone_width(world, live_server, chromium)
    assert fits(page)
    fill_password_form(page, PASSWORD, NEW, NEW)
    expect(page).to_have_url(live_server.url + "/")
    page.goto(live_server.url + "/account")
    expect(page.get_by_role("button", name="Change password")).to_be_visible()
    assert fits(page)
    page.get_by_role("button", name="Change password").scroll_into_view_if_needed()
    assert page.get_by_role("button", name="Change password").bounding_box()["width"] <= PHONE["width"]


def test_account_pages_pass_axe(world, live_server, chromium):
    from axe_playwright_python import sync_playwright as axe  # a dev dependency: never skipped

    page = _forced_user_at_phone_width(world, live_server, chromium)
    checks = []
    results = axe.Axe().run(page)
    checks.append(("/account/password", results.generate_snapshot()))
    fill_password_form(page, PASSWORD, NEW, "mistyped")  # the page with its refusal
    checks.append(("/account/password refused", axe.Axe().run(page).generate_snapshot()))
    fill_password_form(page, PASSWORD, NEW, NEW)
    page.goto(live_server.url + "/account")
    checks.append(("/account", axe.Axe().run(page).generate_snapshot()))
    assert all(snapshot == "" for _, snapshot in checks), checks
