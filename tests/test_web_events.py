"""Events delivered in the web UI (R-CORE-8): Notifications (the unread count in the navigation,
mark read) and Webhooks (add an endpoint, its secret shown once; edit its types and switch it
off; its deliveries with every attempt; Redeliver), through the HTTP interface; roles, CSRF and
isolation (R-CORE-1)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import World
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.delivery.models import Notification, WebhookDelivery, WebhookEndpoint
from entitle.history.models import HistoryEntry
from entitle.platform import events
from entitle.tenancy.models import Role
from helpers import join, org_with_owner
from test_web import HTMX, sign_in
from test_web_ac import content_of, error_text, text_of
from webhook_receiver import Receiver, running_receiver

LAPSED = "My2N: the license of apartment {} (Riverside) lapsed; its paid devices stopped."


def lapse(world: World, org_id: int, apartment: str) -> None:
    with transaction(world.ctx.sessions) as s:
        events.emit(s, org_id=org_id, type="my2n.apartment.lapsed", now=world.now, apartment=apartment,
                    site="Riverside")


def nav_count(page: str) -> str:
    m = re.search(r'<span id="nav-unread"[^>]*>(.*?)</span>\s*</a>', page, re.S)
    assert m, "no unread count in the navigation"
    return text_of(m.group(1))


def deliver(world: World) -> dict[str, int]:
    with httpx.Client(timeout=2) as client:
        return webhooks.deliver_due(world.ctx.sessions, now=world.ctx.clock.now, key=world.ctx.secret, client=client)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


# --- notifications -----------------------------------------------------------------------------

def test_notifications_show_the_unread_count_and_are_marked_read(world, client):  # R-CORE-8
    org, _owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    lapse(world, org, "A-1")
    lapse(world, org, "A-2")
    csrf = sign_in(client, "owner@example.com")

    home = client.get("/").text
    assert nav_count(home) == "2 unread"
    page = client.get("/notifications").text
    assert nav_count(page) == "2 unread"
    content = text_of(content_of(page))
    assert LAPSED.format("A-2") in content and LAPSED.format("A-1") in content
    assert content.index(LAPSED.format("A-2")) < content.index(LAPSED.format("A-1"))  # newest first
    assert "Riverside Homes" in content and "Unread (2)" in content

    with world.ctx.sessions() as s:
        first, second = s.scalars(select(Notification.id).order_by(Notification.id)).all()
    r = client.post(f"/notifications/{first}/read", data={"csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 200, r.text
    # the navigation is not swapped by htmx: the new count comes out of band
    assert re.search(r'<span id="nav-unread" hx-swap-oob="true"> <span class="tag">1<span class="visually-hidden"> '
                     r'unread</span></span></span>', r.text)
    assert re.search(rf'<tr data-notification="{first}" class="read">', r.text)
    assert re.search(rf'<tr data-notification="{second}" class="unread">', r.text)

    unread = client.get("/notifications?show=unread").text
    assert LAPSED.format("A-2") in unread and LAPSED.format("A-1") not in unread
    assert nav_count(unread) == "1 unread"

    r = client.post("/notifications/read-all", data={"csrf_token": csrf})
    assert "1 notification marked read." in text_of(r.text)
    assert nav_count(client.get("/").text) == ""
    assert "No unread notifications." in text_of(client.get("/notifications?show=unread").text)


def test_nobody_marks_anyone_elses_notification_and_posts_need_the_csrf_token(world, client):  # R-CORE-1
    org_b, _bob = org_with_owner(world, "Bravo Hidden Works", "bob@example.com")
    org_with_owner(world, "Alpha", "alice@example.com")
    lapse(world, org_b, "B-SECRET")
    with world.ctx.sessions() as s:
        [bobs] = s.scalars(select(Notification.id)).all()
    csrf = sign_in(client, "alice@example.com")
    assert "B-SECRET" not in client.get("/notifications").text
    r = client.post(f"/notifications/{bobs}/read", data={"csrf_token": csrf})
    assert r.status_code == 404 and "notification_not_found" in r.text and "B-SECRET" not in r.text
    r = client.post("/notifications/read-all", data={"csrf_token": "forged"})
    assert r.status_code == 403 and "csrf_invalid" in r.text
    with world.ctx.sessions() as s:
        assert s.get(Notification, bobs).read_at is None


def test_a_viewer_has_no_notifications_and_no_webhooks(world, client):
    org, _owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    join(world, org, "viewer@example.com", Role.viewer)
    lapse(world, org, "A-1")
    sign_in(client, "viewer@example.com")
    home = client.get("/").text
    assert nav_count(home) == "" and 'href="/webhooks"' not in home
    assert "No notifications yet." in text_of(client.get("/notifications").text)
    r = client.get("/webhooks")
    assert r.status_code == 403 and "role_insufficient" in r.text


# --- webhooks ----------------------------------------------------------------------------------

class WebhookPages:
    def __init__(self, world: World, client: Any, email: str) -> None:
        self.world, self.client = world, client
        self.csrf = sign_in(client, email)

    def add(self, url: str, types: str = "", description: str = "") -> Any:
        return self.client.post("/webhooks", data={"csrf_token": self.csrf, "url": url, "event_types": types,
                                                   "description": description}, headers=HTMX)

    def edit(self, endpoint_id: int, url: str, types: str, active: bool) -> Any:
        data = {"csrf_token": self.csrf, "url": url, "event_types": types}
        if active:
            data["active"] = "on"
        return self.client.post(f"/webhooks/{endpoint_id}", data=data, headers=HTMX)

    def redeliver(self, endpoint_id: int, delivery_id: int) -> Any:
        return self.client.post(f"/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
                                data={"csrf_token": self.csrf}, headers=HTMX)


def only_endpoint(world: World) -> WebhookEndpoint:
    with world.ctx.sessions() as s:
        [endpoint] = s.scalars(select(WebhookEndpoint)).all()
        return endpoint


def attempts_of(page: str, delivery_id: int) -> list[tuple[str, str]]:
    m = re.search(rf'<article class="delivery" id="delivery-{delivery_id}".*?</article>', page, re.S)
    assert m, f"no delivery {delivery_id} on the page"
    return [(text_of(code), text_of(err)) for code, err in
            re.findall(r'<td class="n status">(.*?)</td>\s*<td class="error">(.*?)</td>', m.group(0), re.S)]


def state_of(page: str, delivery_id: int) -> str:
    m = re.search(rf'id="delivery-{delivery_id}".*?data-field="state">(\w+)<', page, re.S)
    assert m
    return m.group(1)


def test_an_endpoint_is_added_with_its_secret_shown_once(world, client):  # R-CORE-8
    org_with_owner(world, "Riverside Homes", "owner@example.com")
    pages = WebhookPages(world, client, "owner@example.com")

    r = pages.add("https://hooks.example.com/entitle", "my2n.apartment.lapsed, my2n.apartment.expiring", "ERP")
    assert r.status_code == 200, r.text
    secret = re.search(r'<input id="endpoint-secret" readonly value="(whsec_[^"]+)"', r.text)
    assert secret and "This secret is shown once." in r.text
    assert "Endpoint https://hooks.example.com/entitle added" in text_of(r.text)
    endpoint = only_endpoint(world)
    assert webhooks.endpoint_secret(endpoint, world.ctx.secret) == secret.group(1)
    assert endpoint.event_types == ["my2n.apartment.expiring", "my2n.apartment.lapsed"]
    assert endpoint.description == "ERP" and endpoint.active

    listing = client.get("/webhooks").text
    assert secret.group(1) not in listing
    row = re.search(rf'<tr data-endpoint="{endpoint.id}">(.*?)</tr>', listing, re.S)
    assert row and "my2n.apartment.expiring , my2n.apartment.lapsed On" in text_of(row.group(1))
    assert secret.group(1) not in client.get(f"/webhooks/{endpoint.id}").text


@pytest.mark.parametrize(("url", "types", "code"), [
    ("https://hooks.example.com/x", "my2n.apartment.lasped", "event_type_unknown"),
    ("ftp://hooks.example.com/x", "", "webhook_url_invalid"),
])
def test_a_refused_endpoint_keeps_the_form(world, client, url, types, code):
    org_with_owner(world, "Riverside Homes", "owner@example.com")
    pages = WebhookPages(world, client, "owner@example.com")
    r = pages.add(url, types)
    assert r.status_code in (400, 422), r.text
    assert error_text(r.text).startswith(code)
    assert f'value="{url}"' in r.text
    with world.ctx.sessions() as s:
        assert s.scalars(select(WebhookEndpoint)).all() == []


def test_deliveries_show_their_attempts_and_are_redelivered(world, client, receiver):  # R-CORE-8
    org, _owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    pages = WebhookPages(world, client, "owner@example.com")
    pages.add(receiver.url())
    endpoint = only_endpoint(world)
    assert "No deliveries yet" in client.get(f"/webhooks/{endpoint.id}").text

    lapse(world, org, "A-1")
    with world.ctx.sessions() as s:
        [delivery] = s.scalars(select(WebhookDelivery)).all()
    page = client.get(f"/webhooks/{endpoint.id}").text
    assert state_of(page, delivery.id) == "Pending" and "Not attempted yet." in page

    receiver.script = ["fail"]
    assert deliver(world) == {"delivered": 0, "pending": 1, "failed": 0}
    page = client.get(f"/webhooks/{endpoint.id}").text
    assert state_of(page, delivery.id) == "Pending"
    assert attempts_of(page, delivery.id) == [("500", "HTTP 500")]
    assert "2026-01-15 09:00:00 UTC" in text_of(page)

    # Redeliver: due now, not after the back-off
    r = pages.redeliver(endpoint.id, delivery.id)
    assert r.status_code == 200, r.text
    assert f"evt_{delivery.event_id} will be sent again shortly" in text_of(r.text)
    assert deliver(world) == {"delivered": 1, "pending": 0, "failed": 0}
    page = client.get(f"/webhooks/{endpoint.id}").text
    assert state_of(page, delivery.id) == "Delivered"
    assert attempts_of(page, delivery.id) == [("500", "HTTP 500"), ("200", "")]
    assert receiver.ids() == [f"evt_{delivery.event_id}"] * 2  # the same event id both times

    # a delivered one can be sent again too (the receiver lost it)
    pages.redeliver(endpoint.id, delivery.id)
    assert deliver(world)["delivered"] == 1
    assert len(attempts_of(client.get(f"/webhooks/{endpoint.id}").text, delivery.id)) == 3
    counts = re.search(rf'<tr data-endpoint="{endpoint.id}">(.*?)</tr>', client.get("/webhooks").text, re.S)
    assert counts and re.findall(r'<td class="n">(\d+)</td>', counts.group(1)) == ["0", "1", "0"]
    with world.ctx.sessions() as s:
        actions = s.scalars(select(HistoryEntry.action).where(HistoryEntry.org_id == org)).all()
    assert actions.count("webhook.delivery.redelivered") == 2


def test_an_endpoint_is_edited_and_switched_off(world, client):  # R-CORE-8
    org, _owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    pages = WebhookPages(world, client, "owner@example.com")
    pages.add("https://hooks.example.com/a")
    endpoint = only_endpoint(world)

    r = pages.edit(endpoint.id, "https://hooks.example.com/b", "my2n.*", active=False)
    assert r.status_code == 200, r.text
    assert "Endpoint saved; it is off" in text_of(r.text)
    assert 'value="my2n.*"' in r.text and '<span data-field="active">Off</span>' in r.text
    edited = only_endpoint(world)
    assert (edited.url, edited.event_types, edited.active) == ("https://hooks.example.com/b", ["my2n.*"], False)
    lapse(world, org, "A-1")  # an endpoint switched off gets no deliveries
    with world.ctx.sessions() as s:
        assert s.scalars(select(WebhookDelivery)).all() == []

    r = pages.edit(endpoint.id, "https://hooks.example.com/b", "key.redemed", active=True)
    assert error_text(r.text).startswith("event_type_unknown")
    assert only_endpoint(world).active is False  # nothing saved

    pages.edit(endpoint.id, "https://hooks.example.com/b", "", active=True)
    assert only_endpoint(world).event_types == [] and only_endpoint(world).active


def test_another_organizations_endpoints_and_deliveries_are_not_found(world, client):  # R-CORE-1
    org_b, _bob = org_with_owner(world, "Bravo Hidden Works", "bob@example.com")
    org_a, _alice = org_with_owner(world, "Alpha", "alice@example.com")
    pages_b = WebhookPages(world, client, "bob@example.com")
    pages_b.add("https://bravo.example.com/SECRET-HOOK")
    b_endpoint = only_endpoint(world)
    lapse(world, org_b, "B-1")
    with world.ctx.sessions() as s:
        [b_delivery] = s.scalars(select(WebhookDelivery)).all()
    client.cookies.clear()

    pages_a = WebhookPages(world, client, "alice@example.com")
    pages_a.add("https://alpha.example.com/hook")
    with world.ctx.sessions() as s:
        a_endpoint = s.scalar(select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_a))
    assert "SECRET-HOOK" not in client.get("/webhooks").text
    for r in (client.get(f"/webhooks/{b_endpoint.id}"),
              pages_a.edit(b_endpoint.id, "https://alpha.example.com/x", "", active=False),
              pages_a.redeliver(b_endpoint.id, b_delivery.id),
              pages_a.redeliver(a_endpoint.id, b_delivery.id)):  # B's delivery under A's own endpoint
        assert r.status_code == 404, r.text
        assert "SECRET-HOOK" not in r.text
    with world.ctx.sessions() as s:
        assert s.get(WebhookEndpoint, b_endpoint.id).active
        assert s.scalars(select(HistoryEntry.action).where(HistoryEntry.org_id == org_b,
                                                           HistoryEntry.action.like("webhook.delivery%"))).all() == []
