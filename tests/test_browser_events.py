"""Webhooks and notifications in a real browser: Playwright driving Debian's chromium against a
live uvicorn (R-CORE-8): add an endpoint (its secret shown once), see a delivery with its
attempts after the worker ran against a local receiver, redeliver it; read a notification."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import follow, open_page, sign_in
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.platform import events
from webhook_receiver import running_receiver

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser


def test_add_an_endpoint_see_the_attempts_redeliver_and_read_the_notification(world, live_server, chromium):  # R-CORE-8
    ann = world.user("ann@example.com")
    org = world.org("Riverside Homes", owner=ann)

    def deliver() -> dict[str, int]:
        with httpx.Client(timeout=2) as client:
            return webhooks.deliver_due(world.ctx.sessions, now=world.ctx.clock.now, key=world.ctx.secret,
                                        client=client)

    with running_receiver() as receiver:
        page, console = open_page(chromium)
        sign_in(page, live_server.url, "ann@example.com", PASSWORD)
        expect(page.get_by_role("heading", name="Riverside Homes", level=1)).to_be_visible()

        follow(page, "organization", "Webhooks")
        expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
        page.get_by_label("Endpoint URL").fill(receiver.url())
        page.get_by_label("Event types (optional)").fill("my2n.*")
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.get_by_role("status")).to_contain_text(f"Endpoint {receiver.url()} added")
        secret = page.get_by_role("textbox", name="Signing secret")
        expect(secret).to_have_value(re.compile(r"^whsec_"))
        shown = secret.input_value()

        # An event happens; the worker sends it, the receiver fails the first attempt.
        with transaction(world.ctx.sessions) as s:
            events.emit(s, org_id=org, type="my2n.apartment.lapsed", now=world.now, apartment="A-1",
                        site="Riverside")
        receiver.script = ["fail"]
        assert deliver()["pending"] == 1

        page.get_by_role("link", name="Open the endpoint and its deliveries").click()
        expect(page.get_by_role("heading", name=receiver.url(), level=1)).to_be_visible()
        assert shown not in page.content()  # shown once
        delivery = page.locator("article.delivery")
        expect(delivery.locator('[data-field="state"]')).to_have_text("Pending")
        expect(delivery.locator("tr[data-attempt]")).to_have_count(1)
        expect(delivery.locator('tr[data-attempt="1"] td.status')).to_have_text("500")
        expect(delivery.locator('tr[data-attempt="1"] td.error')).to_have_text("HTTP 500")

        page.evaluate("window.__stillTheSamePage = true")
        delivery.get_by_role("button", name=re.compile(r"^Redeliver evt_")).click()
        expect(page.get_by_role("status")).to_contain_text("will be sent again shortly, under the same event id")
        assert deliver()["delivered"] == 1
        page.reload()
        delivery = page.locator("article.delivery")
        expect(delivery.locator('[data-field="state"]')).to_have_text("Delivered")
        expect(delivery.locator("tr[data-attempt]")).to_have_count(2)
        expect(delivery.locator('tr[data-attempt="2"] td.status')).to_have_text("200")
        assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == 2

        # The same event is a notification: the count in the navigation, then read.
        nav = page.locator("header.topbar")  # the count is at the top right
        expect(nav.get_by_role("link", name="Notifications 1 unread")).to_be_visible()
        nav.get_by_role("link", name=re.compile(r"^Notifications")).click()
        expect(page.get_by_role("heading", name="Notifications", level=1)).to_be_visible()
        page.evaluate("window.__stillTheSamePage = true")
        page.get_by_role("button", name=re.compile(r"^Mark read: My2N: the license of apartment A-1")).click()
        expect(nav.get_by_role("link", name="Notifications", exact=True)).to_be_visible()
        expect(page.locator("tr.read")).to_have_count(1)
        assert page.evaluate("window.__stillTheSamePage") is True  # htmx swapped the content, and the count
        assert console == []
