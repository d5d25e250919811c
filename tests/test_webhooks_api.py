"""Webhooks through the REST API (R-CORE-8): endpoints with a secret shown once, event-type
filters, deliveries with their attempts, redelivery, the test event, the list of event types.
Deliveries go to a real receiver on 127.0.0.1, sent by the worker the test runs."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from conftest import World, auth
from entitle.delivery.webhooks import EVENT_TYPES, TEST_EVENT
from entitle.delivery import notifications, webhooks
from entitle.delivery.models import Notification
from entitle.tenancy.models import Role
from helpers import REPO, dump_database, error_code, history_of, join, org_with_owner, redeem
from webhook_receiver import Receiver, running_receiver

API = "/api/v1"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


class Org:
    def __init__(self, world: World, client: Any, name: str = "Hooks Inc", email: str = "owner@example.com") -> None:
        self.world, self.client = world, client
        self.org, self.owner = org_with_owner(world, name, email)
        self.base = f"{API}/orgs/{self.org}/webhooks"

    def get(self, path: str = "", token: str | None = None, **params: Any) -> Any:
        return self.client.get(self.base + path, params=params, headers=auth(token or self.owner.token))

    def post(self, path: str = "", body: Any = None, token: str | None = None) -> Any:
        return self.client.post(self.base + path, json=body, headers=auth(token or self.owner.token))

    def patch(self, path: str, body: Any, token: str | None = None) -> Any:
        return self.client.patch(self.base + path, json=body, headers=auth(token or self.owner.token))

    def endpoint(self, url: str, types: list[str] | None = None, **more: Any) -> dict[str, Any]:
        r = self.post(body={"url": url, "event_types": types or [], **more})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def deliver(self) -> Counter[str]:
        """The worker, run until a pass sends nothing."""
        ctx = self.world.ctx
        total: Counter[str] = Counter()
        with httpx.Client(timeout=2) as http:
            for _ in range(50):
                counts = webhooks.deliver_due(ctx.sessions, now=ctx.clock.now, key=ctx.secret, client=http)
                total.update(counts)
                if not sum(counts.values()):
                    break
        return total


@pytest.fixture
def org(world: World, client: Any) -> Org:
    return Org(world, client)


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"], r.text
    return r.json()["error"]["detail"]  # type: ignore[no-any-return]


# --- endpoints -------------------------------------------------------------------------------------

def test_a_new_endpoint_shows_its_secret_once_and_deliveries_are_signed_with_it(world, org, receiver):
    # R-CORE-8: the secret is in the creation answer only, stored sealed, and signs the deliveries
    # of a real change (a key redeemed through the API).
    made = org.endpoint(receiver.url(), ["key.redeemed"], description="ERP")
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert made["event_types"] == ["key.redeemed"] and made["active"] and made["description"] == "ERP"
    listed = org.get().json()
    assert [e["id"] for e in listed] == [made["id"]] and "secret" not in listed[0]
    one = org.get(f"/{made['id']}").json()
    assert one == {k: v for k, v in made.items() if k != "secret"}
    assert secret not in dump_database(world.ctx.engine)  # sealed at rest

    [key] = world.mint("91379040", quantity=2)
    assert redeem(org.client, org.owner.token, org.org, key).status_code == 200
    assert org.deliver() == Counter({"delivered": 1})
    [got] = receiver.received
    assert got.json["type"] == "key.redeemed" and got.json["data"]["quantity"] == 2
    assert got.json["org_id"] == org.org and got.event_id == got.json["id"]
    assert webhooks.verify(secret, got.body, got.signature, now=world.now.timestamp())


def test_refusals_when_creating_an_endpoint(org):
    # R-CORE-8: a URL that is not http(s), an unknown or malformed event type: refused, nothing made.
    refused(org.post(body={"url": "ftp://example.com/hook"}), 400, "webhook_url_invalid")
    refused(org.post(body={"url": "example.com/hook"}), 400, "webhook_url_invalid")
    detail = refused(org.post(body={"url": "http://127.0.0.1:9/h", "event_types": ["key.redeemd"]}),
                     400, "event_type_unknown")
    assert detail == {"event_type": "key.redeemd"}
    refused(org.post(body={"url": "http://127.0.0.1:9/h", "event_types": ["nothing.*"]}), 400, "event_type_unknown")
    refused(org.post(body={"url": "http://127.0.0.1:9/h", "event_types": ["my2n apartment"]}), 400,
            "event_type_unknown")
    refused(org.post(body={"url": "http://127.0.0.1:9/h\x00"}), 422, "invalid_request")
    assert org.get().json() == []
    # An area filter of a real area is fine.
    assert org.endpoint("http://127.0.0.1:9/h", ["my2n.*", "axis.grace.ended"])["event_types"] == \
        ["axis.grace.ended", "my2n.*"]


def test_an_organization_has_at_most_twenty_endpoints(org):
    for i in range(webhooks.MAX_ENDPOINTS):
        org.endpoint(f"http://127.0.0.1:9/h{i}")
    detail = refused(org.post(body={"url": "http://127.0.0.1:9/one-more"}), 409, "webhook_endpoints_full")
    assert detail == {"limit": webhooks.MAX_ENDPOINTS}


def test_patch_changes_url_types_and_switches_an_endpoint_off_and_on(world, org, receiver):
    # R-CORE-8: the filter is replaced whole; switched off, the endpoint gets nothing; history keeps each change.
    made = org.endpoint("http://127.0.0.1:9/old", ["key.redeemed"])
    path = f"/{made['id']}"
    r = org.patch(path, {"url": receiver.url("/new"), "event_types": ["my2n.*"]})
    assert r.status_code == 200, r.text
    assert (r.json()["url"], r.json()["event_types"], r.json()["active"]) == (receiver.url("/new"), ["my2n.*"], True)
    refused(org.patch(path, {"event_types": ["my2n.nope"]}), 400, "event_type_unknown")
    refused(org.patch(path, {"url": "mailto:ops@example.com"}), 400, "webhook_url_invalid")
    assert org.patch(path, {"active": False}).json()["active"] is False
    assert org.get(path).json()["event_types"] == ["my2n.*"]  # untouched by a patch without it
    refused(org.post(f"{path}/test"), 409, "webhook_endpoint_inactive")
    assert org.patch(path, {"active": True}).json()["active"] is True
    actions = [a for _, a, _ in history_of(world.ctx.engine, org.org) if a.startswith("webhook.")]
    assert actions == ["webhook.endpoint.created"] + ["webhook.endpoint.updated"] * 3


def test_viewers_and_strangers_are_refused(world, org):
    # R-CORE-2: only owners and admins manage webhooks (a URL often carries a credential); a
    # viewer is refused, an admin may; without a token nothing.
    made = org.endpoint("http://127.0.0.1:9/h")
    viewer = join(world, org.org, "viewer@example.com", Role.viewer).token
    admin = join(world, org.org, "admin@example.com", Role.admin).token
    for r in (org.get(token=viewer), org.get(f"/{made['id']}", token=viewer),
              org.get(f"/{made['id']}/deliveries", token=viewer),
              org.post(body={"url": "http://127.0.0.1:9/v"}, token=viewer),
              org.patch(f"/{made['id']}", {"active": False}, token=viewer),
              org.post(f"/{made['id']}/test", token=viewer)):
        refused(r, 403, "role_insufficient")
    assert org.get(token=admin).status_code == 200
    assert org.post(body={"url": "http://127.0.0.1:9/a"}, token=admin).status_code == 201
    assert org.client.get(org.base).status_code == 401


# --- deliveries, attempts, redelivery ------------------------------------------------------------

def test_deliveries_are_listed_newest_first_a_page_at_a_time_with_every_attempt(world, org, receiver):
    # R-CORE-8: each attempt's time, status code and error are kept and shown.
    from entitle.db import transaction
    from entitle.platform import events

    made = org.endpoint(receiver.url())
    for i in range(3):
        with transaction(world.ctx.sessions) as s:
            events.emit(s, org_id=org.org, type="my2n.apartment.lapsed", now=world.now, apartment=f"Flat {i}")
    receiver.script = ["fail"]
    org.deliver()  # the first fails once; the others wait behind it
    world.ctx.clock.advance(timedelta(minutes=1))
    org.deliver()
    path = f"/{made['id']}/deliveries"
    first = org.get(path, limit=2).json()
    assert [d["state"] for d in first["items"]] == ["delivered", "delivered"]
    rest = org.get(path, limit=2, cursor=first["next_cursor"]).json()
    assert rest["next_cursor"] is None and len(rest["items"]) == 1
    oldest = rest["items"][0]
    assert [d["event"]["id"] for d in first["items"] + rest["items"]] == list(reversed(receiver.acknowledged()))
    assert oldest["attempts"] == 2 and oldest["last_status"] == 200 and oldest["next_attempt_at"] is None
    log = oldest["attempt_log"]
    assert [(a["status_code"], a["error"]) for a in log] == [(500, "HTTP 500"), (200, None)]
    assert log[0]["at"] == (world.now - timedelta(minutes=1)).isoformat() and log[1]["at"] == world.now.isoformat()
    assert oldest["event"]["type"] == "my2n.apartment.lapsed" and oldest["delivered_at"] == world.now.isoformat()
    refused(org.get(path, limit=0), 422, "invalid_request")


def test_redeliver_sends_a_delivery_again_under_the_same_event_id(world, org, receiver):
    # R-CORE-8: manual redelivery (here of a delivery the receiver acknowledged and then lost).
    made = org.endpoint(receiver.url())
    other = org.endpoint(receiver.url("/other"))
    r = org.post(f"/{made['id']}/test")
    assert r.status_code == 202, r.text
    delivery = r.json()
    org.deliver()
    path = f"/{made['id']}/deliveries/{delivery['id']}/redeliver"
    r = org.post(path)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "pending" and r.json()["next_attempt_at"] == world.now.isoformat()
    assert r.json()["event"]["id"] == delivery["event"]["id"]
    assert org.deliver() == Counter({"delivered": 1})
    assert receiver.ids() == [delivery["event"]["id"]] * 2
    after = org.get(f"/{made['id']}/deliveries").json()["items"][0]
    assert after["state"] == "delivered" and after["attempts"] == 2
    # Under another endpoint's path, or a delivery that does not exist: none.
    refused(org.post(f"/{other['id']}/deliveries/{delivery['id']}/redeliver"), 404, "webhook_delivery_not_found")
    refused(org.post(f"/{made['id']}/deliveries/999999/redeliver"), 404, "webhook_delivery_not_found")
    refused(org.post(f"/999999/deliveries/{delivery['id']}/redeliver"), 404, "webhook_endpoint_not_found")
    actions = [a for _, a, _ in history_of(world.ctx.engine, org.org)]
    assert actions.count("webhook.delivery.redelivered") == 1


def test_a_failed_delivery_is_redelivered_after_the_window(world, org, receiver):
    # R-CORE-8: given up after the retry window; redelivered by hand, it is sent once more.
    made = org.endpoint(receiver.url())
    org.post(f"/{made['id']}/test")
    receiver.mode = "fail"
    for _ in range(60):
        org.deliver()
        [d] = org.get(f"/{made['id']}/deliveries").json()["items"]
        if d["state"] != "pending":
            break
        world.ctx.clock.advance(timedelta(hours=1))
    assert d["state"] == "failed" and d["next_attempt_at"] is None and len(d["attempt_log"]) == d["attempts"]
    receiver.mode = "ok"
    assert org.post(f"/{made['id']}/deliveries/{d['id']}/redeliver").status_code == 202
    org.deliver()
    [d] = org.get(f"/{made['id']}/deliveries").json()["items"]
    assert d["state"] == "delivered" and d["attempt_log"][-1]["status_code"] == 200


# --- the test event --------------------------------------------------------------------------------

def test_the_test_event_goes_to_that_endpoint_only_whatever_its_filter(world, org, receiver):
    # R-CORE-8: POST …/test queues a webhook.test event for one endpoint; the organization's other
    # endpoints (even one that wants every type) and the admins' notifications are not involved.
    picky = org.endpoint(receiver.url("/picky"), ["key.redeemed"])
    org.endpoint(receiver.url("/everything"))
    r = org.post(f"/{picky['id']}/test")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "pending" and r.json()["event"]["type"] == TEST_EVENT
    org.deliver()
    assert [x.json["type"] for x in receiver.at("/picky")] == [TEST_EVENT]
    assert receiver.at("/everything") == []
    assert receiver.at("/picky")[0].json["data"]["endpoint_id"] == picky["id"]
    assert webhooks.verify(picky["secret"], receiver.received[0].body, receiver.received[0].signature,
                           now=world.now.timestamp())
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Notification)) == 0
    assert "webhook.endpoint.tested" in [a for _, a, _ in history_of(world.ctx.engine, org.org)]
    refused(org.post("/999999/test"), 404, "webhook_endpoint_not_found")


# --- event types -----------------------------------------------------------------------------------

def _types_emitted_in_code() -> set[str]:
    """Event types named in ``events.emit(..., type="…")`` calls and in the sweep finders'
    ``Transition("…", …)`` (and notifications.TITLES covers the finders that build the kind)."""
    found: set[str] = set()
    for path in (REPO / "src" / "entitle").rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"events\.emit\((.*?)\)", text, re.S):
            found.update(re.findall(r'type="([a-z0-9_.]+)"', call.group(1)))
        found.update(re.findall(r'Transition\(\s*"([a-z0-9_.]+)"', text))
    return found


def test_the_event_types_are_every_type_the_software_emits(client, org):
    # R-CORE-8: the list an endpoint's filter is checked against holds every emitted type.
    emitted = _types_emitted_in_code()
    assert {"key.redeemed", "axis.grace.started", "my2n.apartment.lapsed"} <= emitted
    assert emitted | set(notifications.TITLES) | {TEST_EVENT} <= set(EVENT_TYPES)
    r = client.get(f"{API}/webhooks/event-types", headers=auth(org.owner.token))
    assert r.status_code == 200
    listed = {t["type"]: t for t in r.json()}
    assert set(listed) == set(EVENT_TYPES) and all(t["description"] for t in listed.values())
    assert listed["my2n.apartment.lapsed"]["notifies_admins"] and not listed[TEST_EVENT]["notifies_admins"]
    assert client.get(f"{API}/webhooks/event-types").status_code == 401


def test_an_endpoint_can_ask_for_each_listed_type(org):
    # Every listed type is accepted by the filter check (no listed type is malformed).
    made = org.endpoint("http://127.0.0.1:9/h", sorted(EVENT_TYPES))
    assert made["event_types"] == sorted(EVENT_TYPES)
    assert error_code(org.post(body={"url": "http://127.0.0.1:9/h", "event_types": ["*"]})) == "event_type_unknown"
