"""My2N apartment licenses through the REST API (SPEC §4, R-MY-1 … R-MY-6) with real tokens."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from conftest import auth
from entitle.actors import operator
from entitle.db import transaction
from entitle.clock import add_years
from entitle.my2n import services as my2n
from entitle.my2n.payments import LocalProvider
from entitle.tenancy.models import Role
from helpers import Member, join, org_with_owner, person

_idem = itertools.count()
API = "/api/v1"
ERROR_KEYS = {"code", "message", "detail"}


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    """The refusal has the one error shape, the code and a sentence to act on."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"].strip(), body
    return body["error"]["detail"]  # type: ignore[no-any-return]


class Company:
    """One organization's My2N sites, driven through the API (by its owner unless told)."""

    def __init__(self, world: Any, client: Any, name: str = "Residence", email: str = "owner@example.com",
                 region: str = "EU") -> None:
        self.world, self.client = world, client
        self.org, self.owner = org_with_owner(world, name, email, region=region)
        self.base = f"{API}/orgs/{self.org}"
        self.token = self.owner.token

    def h(self, token: str | None = None, idem: str | bool | None = None) -> dict[str, str]:
        key = f"my2n-{next(_idem)}" if idem is True else (idem or None)
        return auth(token or self.token, key)

    def get(self, path: str, token: str | None = None) -> Any:
        return self.client.get(self.base + path, headers=self.h(token))

    def post(self, path: str, body: Any = None, token: str | None = None, idem: str | bool | None = None) -> Any:
        return self.client.post(self.base + path, json=body, headers=self.h(token, idem))

    def put(self, path: str, body: Any, token: str | None = None) -> Any:
        return self.client.put(self.base + path, json=body, headers=self.h(token))

    def ok(self, r: Any, status: int = 200) -> Any:
        assert r.status_code == status, r.text
        return r.json()

    def site(self, name: str = "Block A") -> int:
        return int(self.ok(self.post("/sites", {"name": name}), 201)["id"])

    def apartment(self, site: int, name: str) -> int:
        return int(self.ok(self.post(f"/sites/{site}/apartments", {"name": name}), 201)["id"])

    def device(self, site: int, serial: str, kind: str, apartment: int | None = None, local_mode: bool = False,
               token: str | None = None) -> Any:
        return self.post(f"/sites/{site}/devices", {"serial": serial, "kind": kind, "apartment_id": apartment,
                                                    "local_mode": local_mode}, token=token)

    def assign(self, site: int, serial: str, apartment: int | None, token: str | None = None) -> Any:
        return self.put(f"/sites/{site}/devices/{serial}/apartment", {"apartment_id": apartment}, token=token)


def issuer(world: Any) -> Member:
    return person(world, "support@2n.example", issuer=True)


def mint(client: Any, token: str, *, part: str = "9137958", years: int = 1, subscriptions: int = 1,
         scope: str = "apartment", idem: str | None = None) -> Any:
    return client.post(f"{API}/issuer/voucher-batches", headers=auth(token, idem or f"mint-{next(_idem)}"),
                       json={"part_number": part, "name": "Distributor order 42", "years": years,
                             "subscriptions": subscriptions, "scope": scope})


# --- sites (R-MY-1) ------------------------------------------------------------------------------

def test_sites_are_created_listed_by_page_and_read(world, client):
    c = Company(world, client)
    ids = [c.site(n) for n in ("Block A", "Block B", "Block C")]
    page = c.ok(c.get("/sites?limit=2"))
    assert [s["id"] for s in page["items"]] == ids[:2] and page["next_cursor"] == ids[1]
    rest = c.ok(c.get(f"/sites?limit=2&cursor={page['next_cursor']}"))
    assert [s["id"] for s in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    site = c.ok(c.get(f"/sites/{ids[0]}"))
    # R-MY-1: a new site has the apartment model; the region (which part to order) is the company's.
    assert (site["name"], site["model"], site["region"]) == ("Block A", "apartment", "EU")
    assert site["custom_expires_at"] is None and site["custom_expired"] is None
    assert (site["site_type"], site["site_type_required"]) == ("apartment_building", False)
    assert c.ok(c.post("/sites", {"name": "House", "site_type": "family_house"}), 201)["site_type"] == "family_house"
    refused(c.post("/sites", {"name": "Castle", "site_type": "castle"}), 422, "invalid_request")
    refused(c.post("/sites", {"name": "Block A"}), 409, "site_exists")
    refused(c.get("/sites/999999"), 404, "site_not_found")


def test_the_custom_model_is_retired_and_cannot_be_newly_chosen(world, client):
    # R-MY-1: only the vendor records a legacy custom site; an admin choosing it is refused.
    c = Company(world, client)
    later = (world.now + timedelta(days=60)).isoformat()
    detail = refused(c.post("/sites", {"name": "Old", "model": "custom", "custom_expires_at": later}),
                     409, "model_retired")
    assert detail["model"] == "custom"
    refused(c.post("/sites", {"name": "Odd", "model": "flat"}), 400, "model_unknown")
    # A time without its zone is refused as input, never guessed.
    refused(c.post("/sites", {"name": "Naive", "model": "custom", "custom_expires_at": "2026-03-01T00:00:00"}),
            422, "invalid_request")
    assert c.ok(c.get("/sites"))["items"] == []


def test_a_viewer_reads_sites_but_changes_nothing(world, client):
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    c.ok(c.device(site, "PH-1", "phone", apt), 201)
    viewer = join(world, c.org, "viewer@example.com", Role.viewer)
    assert c.ok(c.get(f"/sites/{site}/dashboard", token=viewer.token))["apartments"] == 1
    assert c.ok(c.get(f"/sites/{site}/apartments/{apt}", token=viewer.token))["paid_devices"] == 1
    refused(c.post("/sites", {"name": "Mine"}, token=viewer.token), 403, "role_insufficient")
    refused(c.post(f"/sites/{site}/apartments", {"name": "2B"}, token=viewer.token), 403, "site_admin_required")
    refused(c.device(site, "PH", "phone", apt, token=viewer.token), 403, "apartment_admin_required")
    refused(c.assign(site, "PH-1", None, token=viewer.token), 403, "site_admin_required")
    refused(c.put(f"/sites/{site}/devices/PH-1/local-mode", {"local_mode": True}, token=viewer.token), 403,
            "apartment_admin_required")
    refused(c.put(f"/sites/{site}/type", {"site_type": "office"}, token=viewer.token), 403, "site_admin_required")
    # R-MY-5: only company admins and site admins with the payments permission pay or see prices.
    refused(c.post(f"/sites/{site}/vouchers/redeem", {"code": "X"}, token=viewer.token, idem=True),
            403, "payments_permission_required")
    refused(c.post(f"/sites/{site}/apartments/{apt}/pay-from-credit", token=viewer.token, idem=True),
            403, "payments_permission_required")
    plan = c.ok(c.get(f"/sites/{site}/payment-plan", token=viewer.token))
    assert plan["may_pay"] is False and plan["price"] is None
    refused(c.get(f"/sites/{site}/payments", token=viewer.token), 403, "payments_permission_required")
    refused(c.post(f"/sites/{site}/roles", {"email": "viewer@example.com", "role": "site_admin"},
                   token=viewer.token), 403, "role_insufficient")
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["rows"][0]["paid_devices"] == 1  # nothing changed


# --- the site dashboard (R-MY-3, R-MY-6) ---------------------------------------------------------

def _seed_site(c: Company) -> tuple[int, list[int]]:
    """The seed's site: 5 apartments, 4 with a phone, one empty; an intercom at the door."""
    site = c.site("Block A")
    apts = [c.apartment(site, f"A{i}") for i in range(1, 6)]
    c.ok(c.device(site, "IC-1", "intercom"), 201)
    for i, apt in enumerate(apts[:4]):
        c.ok(c.device(site, f"PHONE-{i}", "phone", apt), 201)
    return site, apts


def test_the_seed_dashboard_five_apartments_one_empty_four_to_order(world, client):
    # R-MY-3: "Even though 5 apartments are displayed, only 4 require a license": order 4x 9137958.
    c = Company(world, client)
    site, apts = _seed_site(c)
    board = c.ok(c.get(f"/sites/{site}/dashboard"))
    assert (board["apartments"], board["needing_license"]) == (5, 4)
    assert board["order"] == {"part_number": "9137958", "quantity": 4}
    assert board["site"]["id"] == site and board["site"]["model"] == "apartment"
    assert [(r["name"], r["needs_license"], r["paid_devices"]) for r in board["rows"]] == [
        ("A1", True, 1), ("A2", True, 1), ("A3", True, 1), ("A4", True, 1), ("A5", False, 0)]
    # R-MY-6: never paid, so the four are "not paid" (their phones stop), not "lapsed": nothing
    # ended (issue 14 point 10); the empty one needs nothing.
    assert (board["not_paid"], board["lapsed"], board["lapsing_soon"]) == (["A1", "A2", "A3", "A4"], [], [])
    assert [r["state"] for r in board["rows"]] == ["not_paid"] * 4 + ["no_license_needed"]
    # The fifth apartment using a device in local mode needs no license either (the seed's "or").
    c.ok(c.device(site, "TAB-5", "tablet", apts[4], local_mode=True), 201)
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["needing_license"] == 4


def test_a_us_site_orders_part_02683_001(world, client):
    # R-MY-3 / R-MY-5: 02683-001 for US & APAC sites only.
    c = Company(world, client, "Tower", "us@example.com", region="US")
    site, _ = _seed_site(c)
    board = c.ok(c.get(f"/sites/{site}/dashboard"))
    assert board["order"] == {"part_number": "02683-001", "quantity": 4} and board["site"]["region"] == "US"


def test_local_mode_turns_the_need_for_a_license_off_and_on(world, client):
    # R-MY-3: an apartment whose paid devices are all in local mode needs none.
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    c.ok(c.device(site, "TAB-1", "tablet", apt, local_mode=True), 201)
    c.ok(c.device(site, "AU-1", "answering_unit", apt), 201)  # free: never makes a license necessary
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["needing_license"] == 0
    out = c.ok(c.put(f"/sites/{site}/devices/TAB-1/local-mode", {"local_mode": False}))
    assert out["local_mode"] is False and out["paid"] is True
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["needing_license"] == 1
    row = c.ok(c.get(f"/sites/{site}/apartments/{apt}"))
    assert (row["needs_license"], row["paid_devices"], row["devices"], row["lapsed"], row["state"]) == (
        True, 1, 2, False, "not_paid")  # never paid: not lapsed (issue 14 point 10)
    refused(c.put(f"/sites/{site}/devices/NOPE/local-mode", {"local_mode": True}), 404, "device_not_found")


# --- apartments and devices (R-MY-2) -------------------------------------------------------------

def test_apartments_and_devices_are_listed_by_page_and_read(world, client):
    c = Company(world, client)
    site = c.site()
    apts = [c.apartment(site, n) for n in ("1A", "1B", "1C")]
    refused(c.post(f"/sites/{site}/apartments", {"name": "1A"}), 409, "apartment_exists")
    page = c.ok(c.get(f"/sites/{site}/apartments?limit=2"))
    assert [a["name"] for a in page["items"]] == ["1A", "1B"] and page["next_cursor"] == apts[1]
    rest = c.ok(c.get(f"/sites/{site}/apartments?cursor={apts[1]}"))
    assert [a["name"] for a in rest["items"]] == ["1C"] and rest["next_cursor"] is None

    c.ok(c.device(site, "IC-1", "intercom"), 201)
    made = c.ok(c.device(site, "PH-1", "phone", apts[0]), 201)
    assert made == {**made, "serial": "PH-1", "kind": "phone", "apartment_id": apts[0], "paid": True,
                    "local_mode": False}
    c.ok(c.device(site, "AU-1", "answering_unit", apts[0]), 201)
    refused(c.device(site, "PH-1", "tablet"), 409, "device_exists")
    refused(c.device(site, "PH-9", "phone", 999999), 404, "apartment_not_found")
    refused(c.device(site, "XX-1", "toaster"), 422, "invalid_request")  # the kinds are in the OpenAPI document
    # R-MY-2: intercoms belong to the site, never to an apartment.
    refused(c.device(site, "IC-2", "intercom", apts[1]), 409, "intercom_not_in_apartment")
    refused(c.assign(site, "IC-1", apts[1]), 409, "intercom_not_in_apartment")

    devices = c.ok(c.get(f"/sites/{site}/devices?limit=2"))
    assert [d["serial"] for d in devices["items"]] == ["IC-1", "PH-1"] and devices["next_cursor"] is not None
    more = c.ok(c.get(f"/sites/{site}/devices?cursor={devices['next_cursor']}"))
    assert [d["serial"] for d in more["items"]] == ["AU-1"] and more["next_cursor"] is None

    apt = c.ok(c.get(f"/sites/{site}/apartments/{apts[0]}"))
    assert (apt["name"], apt["devices"], apt["paid_devices"]) == ("1A", 2, 1)
    assert [(d["serial"], d["paid"]) for d in apt["device_list"]] == [("AU-1", False), ("PH-1", True)]
    refused(c.get(f"/sites/{site}/apartments/999999"), 404, "apartment_not_found")

    # Moving a device between apartments, and out of every apartment.
    assert c.ok(c.assign(site, "PH-1", apts[1]))["apartment_id"] == apts[1]
    assert c.ok(c.assign(site, "PH-1", None))["apartment_id"] is None
    refused(c.assign(site, "NOPE", apts[1]), 404, "device_not_found")


def test_a_fifth_paid_device_is_refused_whoever_adds_it(world, client):
    # R-MY-2: at most 4 paid devices (phones, tablets, third-party) per apartment, a local-mode one
    # included; a fifth is refused for the company's owner and its admin alike, by adding or by
    # assigning, with a message to create another apartment.
    c = Company(world, client)
    admin = join(world, c.org, "site-admin@example.com", Role.admin)
    site = c.site()
    apt = c.apartment(site, "2B")
    for i, (kind, local) in enumerate((("phone", False), ("tablet", False), ("third_party", False),
                                       ("phone", True))):
        c.ok(c.device(site, f"D{i}", kind, apt, local_mode=local), 201)
    c.ok(c.device(site, "AU", "answering_unit", apt), 201)  # free devices do not count
    c.ok(c.device(site, "LOOSE", "tablet"), 201)
    for token in (c.token, admin.token):
        detail = refused(c.device(site, "D5", "tablet", apt, token=token), 409, "apartment_paid_device_limit")
        assert (detail["paid_devices"], detail["limit"], detail["serial"]) == (4, 4, "D5")
        r = c.device(site, "D5", "phone", apt, token=token)
        assert "create another apartment" in r.json()["error"]["message"]
        refused(c.assign(site, "LOOSE", apt, token=token), 409, "apartment_paid_device_limit")
    # Nothing half-done: D5 does not exist, LOOSE is still outside every apartment.
    serials = {d["serial"]: d["apartment_id"] for d in c.ok(c.get(f"/sites/{site}/devices"))["items"]}
    assert "D5" not in serials and serials["LOOSE"] is None
    assert c.ok(c.get(f"/sites/{site}/apartments/{apt}"))["paid_devices"] == 4
    # Another apartment takes it.
    other = c.apartment(site, "2C")
    assert c.ok(c.assign(site, "LOOSE", other))["apartment_id"] == other


# --- migration (R-MY-4) --------------------------------------------------------------------------

def test_migration_check_then_the_vendors_model_change_logs_every_member_out(world, client):
    # R-MY-4 R-MY-1: a legacy custom site (recorded by the vendor) is migrated through the API.
    c = Company(world, client, "Legacy", "legacy-owner@example.com")
    admin = join(world, c.org, "legacy-admin@example.com", Role.admin)
    support = issuer(world)  # 2N Tech Support: the issuer, not a member of the company
    expires = world.now + timedelta(days=60)
    # The vendor records the legacy site through the API without being a member of the company.
    site = c.ok(c.post("/sites", {"name": "Old", "model": "custom", "custom_expires_at": expires.isoformat()},
                       token=support.token), 201)["id"]
    shown = c.ok(c.get(f"/sites/{site}"))
    assert shown["model"] == "custom" and shown["custom_expired"] is False  # R-MY-1: shows when it expires
    assert shown["custom_expires_at"] == expires.isoformat()

    # No site type, no paying until the site has the apartment model.
    refused(c.put(f"/sites/{site}/type", {"site_type": "office"}), 409, "site_type_needs_apartment_model")
    apt = c.apartment(site, "1")
    refused(c.post(f"/sites/{site}/apartments/{apt}/pay-from-credit", idem=True), 409, "model_retired")
    for serial, kind in (("IC", "intercom"), ("PH", "phone"), ("AU", "answering_unit")):
        c.ok(c.device(site, serial, kind), 201)
    check = c.ok(c.get(f"/sites/{site}/migration-check"))
    assert {d["serial"] for d in check["unassigned"]} == {"PH", "AU"} and check["ready"] is False  # not the intercom

    # Only the vendor's support changes the model, and not while any device is unassigned.
    refused(c.post(f"/sites/{site}/model", {"model": "apartment"}), 403, "vendor_support_only")
    detail = refused(c.post(f"/sites/{site}/model", {"model": "apartment"}, token=support.token),
                     409, "migration_devices_unassigned")
    assert detail["count"] == 2 and sorted(detail["serials"]) == ["AU", "PH"]
    assert c.ok(c.get(f"/sites/{site}"))["model"] == "custom"

    c.ok(c.assign(site, "PH", apt))
    assert [d["serial"] for d in c.ok(c.get(f"/sites/{site}/migration-check"))["unassigned"]] == ["AU"]
    c.ok(c.assign(site, "AU", apt))
    assert c.ok(c.get(f"/sites/{site}/migration-check")) == {**check, "unassigned": [], "ready": True}

    out = c.ok(c.post(f"/sites/{site}/model", {"model": "apartment"}, token=support.token))
    assert out["site"]["model"] == "apartment" and out["site"]["custom_expires_at"] is None
    assert out["site"]["model_changed_at"] == world.now.isoformat()
    assert out["users_logged_out"] == 2 and out["sessions_revoked"] >= 2
    # Every member is logged out: their app tokens no longer work; the vendor's does.
    for token in (c.token, admin.token):
        refused(client.get(f"{API}/me", headers=auth(token)), 401, "token_invalid")
        refused(c.get(f"/sites/{site}", token=token), 401, "token_invalid")
    assert client.get(f"{API}/me", headers=auth(support.token)).status_code == 200
    refused(c.post(f"/sites/{site}/model", {"model": "apartment"}, token=support.token), 409, "model_unchanged")
    refused(c.post(f"/sites/{site}/model", {"model": "custom"}, token=support.token), 409, "model_retired")
    # Logging in again works; then the admin chooses the site type.
    fresh = world.token(c.owner.user)
    shown = c.ok(c.get(f"/sites/{site}", token=fresh))
    assert (shown["model"], shown["site_type"], shown["site_type_required"]) == ("apartment", None, True)
    chosen = c.ok(c.put(f"/sites/{site}/type", {"site_type": "apartment_building"}, token=fresh))
    assert (chosen["site_type"], chosen["site_type_required"]) == ("apartment_building", False)


# --- vouchers and the site credit pool (R-MY-5) --------------------------------------------------

def test_the_issuer_mints_voucher_batches_and_sees_the_codes_once(world, client):
    # R-MY-5: a distributor's batch (name, years, subscriptions, per apartment or per device),
    # valid for 3 years from purchase.
    support = issuer(world)
    r = mint(client, support.token, years=2, subscriptions=3, scope="device", idem="batch-1")
    assert r.status_code == 201, r.text
    batch, codes = r.json()["batch"], r.json()["codes"]
    assert len(codes) == len(set(codes)) == 3
    assert (batch["part_number"], batch["years"], batch["subscriptions"], batch["scope"]) == ("9137958", 2, 3,
                                                                                            "device")
    assert batch["valid_until"] == world.now.replace(year=world.now.year + 3).isoformat()
    again = mint(client, support.token, years=2, subscriptions=3, scope="device", idem="batch-1")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["batch"] == batch and again.json()["codes"] is None  # codes are never stored in clear
    refused(mint(client, support.token, part="91379040"), 400, "sku_not_voucher")
    owner = Company(world, client).owner
    refused(mint(client, owner.token), 403, "issuer_only")
    refused(client.post(f"{API}/issuer/voucher-batches", headers=auth(support.token), json={
        "part_number": "9137958", "name": "No key", "subscriptions": 1}), 400, "idempotency_key_required")
    refused(mint(client, support.token, scope="floor"), 422, "invalid_request")


def test_voucher_redeem_is_idempotent_and_pays_apartment_years_from_credit(world, client):
    # R-MY-5 R-MY-6: codes add to the site credit pool; an apartment-year is paid from it.
    support = issuer(world)
    codes = mint(client, support.token, subscriptions=2).json()["codes"]
    [us_code] = mint(client, support.token, part="02683-001").json()["codes"]
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    empty = c.apartment(site, "1B")
    c.ok(c.device(site, "PH-1", "phone", apt), 201)
    assert c.ok(c.get(f"/sites/{site}/credit")) == {"apartment_years": 0, "device_years": 0}

    redeem = f"/sites/{site}/vouchers/redeem"
    r = c.post(redeem, {"code": codes[0]}, idem="redeem-1")
    assert c.ok(r) == {"scope": "apartment", "years": 1, "pool": {"apartment_years": 1, "device_years": 0}}
    # The same request retried with the same key moves nothing and answers the same.
    again = c.post(redeem, {"code": codes[0]}, idem="redeem-1")
    assert c.ok(again) == r.json() and again.headers["Idempotent-Replayed"] == "true"
    assert c.ok(c.get(f"/sites/{site}/credit")) == {"apartment_years": 1, "device_years": 0}
    refused(c.post(redeem, {"code": codes[1]}, idem="redeem-1"), 422, "idempotency_key_reused")
    refused(c.post(redeem, {"code": codes[1]}), 400, "idempotency_key_required")
    # A used code, a code of another region, a key that is not a voucher.
    refused(c.post(redeem, {"code": codes[0]}, idem=True), 409, "key_already_redeemed")
    refused(c.post(redeem, {"code": us_code}, idem=True), 403, "key_wrong_region")
    [plain] = world.mint("91379040")
    refused(c.post(redeem, {"code": plain}, idem=True), 409, "key_not_voucher")
    assert c.ok(c.get(f"/sites/{site}/credit")) == {"apartment_years": 1, "device_years": 0}

    pay = f"/sites/{site}/apartments/{apt}/pay-from-credit"
    paid = c.post(pay, idem="pay-1")
    year_on = world.now.replace(year=world.now.year + 1).isoformat()
    assert c.ok(paid) == {"apartment": "1A", "paid_through": year_on, "devices_paid_for": None, "top_up": False,
                          "pool": {"apartment_years": 0, "device_years": 0}}  # an apartment-year: every device
    replay = c.post(pay, idem="pay-1")
    assert c.ok(replay) == paid.json() and replay.headers["Idempotent-Replayed"] == "true"
    assert c.ok(c.get(f"/sites/{site}/apartments/{apt}"))["paid_through"] == year_on  # paid once
    refused(c.post(pay), 400, "idempotency_key_required")
    detail = refused(c.post(pay, idem=True), 409, "credit_insufficient")
    assert detail["needed_device_years"] == 1
    refused(c.post(f"/sites/{site}/apartments/{empty}/pay-from-credit", idem=True), 409,
            "apartment_needs_no_license")
    refused(c.post(f"/sites/{site}/apartments/999999/pay-from-credit", idem=True), 404, "apartment_not_found")
    board = c.ok(c.get(f"/sites/{site}/dashboard"))
    assert board["lapsed"] == [] and board["rows"][0]["paid_through"] == year_on

    # R-MY-6: 30 days before the year ends the dashboard warns; at its end the license lapses.
    world.ctx.clock.set(world.now.replace(year=world.now.year + 1) - timedelta(days=30))
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["lapsing_soon"] == ["1A"]
    world.ctx.clock.advance(timedelta(days=30))
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["lapsed"] == ["1A"]


def test_device_vouchers_pay_one_device_year_per_billable_device(world, client):
    # R-MY-5: without apartment-years, one device-year per paid device not in local mode.
    support = issuer(world)
    [code] = mint(client, support.token, years=3, scope="device").json()["codes"]
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    for serial, local in (("PH-1", False), ("PH-2", False), ("TAB-1", True)):
        c.ok(c.device(site, serial, "phone", apt, local_mode=local), 201)
    assert c.ok(c.post(f"/sites/{site}/vouchers/redeem", {"code": code}, idem=True))["pool"] == {
        "apartment_years": 0, "device_years": 3}
    out = c.ok(c.post(f"/sites/{site}/apartments/{apt}/pay-from-credit", idem=True))
    assert out["pool"] == {"apartment_years": 0, "device_years": 1}
    detail = refused(c.post(f"/sites/{site}/apartments/{apt}/pay-from-credit", idem=True), 409,
                     "credit_insufficient")
    assert (detail["needed_device_years"], detail["device_years"]) == (2, 1)


def test_a_voucher_batch_is_valid_three_years_from_purchase(world, client):
    # R-MY-5: codes of a batch can be activated until purchase + 3 years, not after.
    support = issuer(world)
    first, second = mint(client, support.token, subscriptions=2).json()["codes"]
    c = Company(world, client)
    site = c.site()
    three_years = world.now.replace(year=world.now.year + 3)
    world.ctx.clock.set(three_years - timedelta(seconds=1))
    c.ok(c.post(f"/sites/{site}/vouchers/redeem", {"code": first}, idem=True))
    world.ctx.clock.set(three_years)
    detail = refused(c.post(f"/sites/{site}/vouchers/redeem", {"code": second}, idem=True), 409, "voucher_expired")
    assert detail["valid_until"] == three_years.isoformat()
    assert c.ok(c.get(f"/sites/{site}/credit"))["apartment_years"] == 1


# --- site roles (R-MY-2, R-MY-5) -----------------------------------------------------------------

def test_site_and_apartment_admins_meet_the_same_four_device_limit(world, client):
    # R-MY-2: a site admin and an apartment admin (both only viewers of the company) add devices
    # within their reach; the fifth paid device is refused for each of them alike.
    c = Company(world, client)
    site = c.site()
    apt, other = c.apartment(site, "1A"), c.apartment(site, "1B")
    site_admin = join(world, c.org, "site-admin@example.com", Role.viewer)
    apt_admin = join(world, c.org, "apt-admin@example.com", Role.viewer)
    roles = f"/sites/{site}/roles"
    assert c.ok(c.post(roles, {"email": "site-admin@example.com", "role": "site_admin"})) == {
        "user_id": site_admin.user.id, "email": "site-admin@example.com", "role": "site_admin",
        "apartment_id": None, "payments": False}
    c.ok(c.post(roles, {"email": "apt-admin@example.com", "role": "apartment_admin", "apartment_id": apt}))
    assert [(r["email"], r["role"], r["apartment_id"]) for r in c.ok(c.get(roles))["items"]] == [
        ("site-admin@example.com", "site_admin", None), ("apt-admin@example.com", "apartment_admin", apt)]

    c.ok(c.post(f"/sites/{site}/apartments", {"name": "1C"}, token=site_admin.token), 201)
    for i, kind in enumerate(("phone", "tablet", "third_party")):
        c.ok(c.device(site, f"D{i}", kind, apt, token=site_admin.token), 201)
    c.ok(c.device(site, "D3", "phone", apt, token=apt_admin.token), 201)
    for who in (site_admin, apt_admin):
        refused(c.device(site, "D4", "tablet", apt, token=who.token), 409, "apartment_paid_device_limit")
    # The apartment admin's reach is their apartment: its devices' local mode, nothing else.
    assert c.ok(c.put(f"/sites/{site}/devices/D3/local-mode", {"local_mode": True}, token=apt_admin.token))[
        "local_mode"] is True
    refused(c.device(site, "X1", "phone", other, token=apt_admin.token), 403, "apartment_admin_required")
    refused(c.post(f"/sites/{site}/apartments", {"name": "1D"}, token=apt_admin.token), 403, "site_admin_required")

    # Revoking: the site admin is back to reading.
    r = client.delete(f"{c.base}{roles}/{site_admin.user.id}", headers=c.h())
    assert r.status_code == 204 and r.content == b""
    refused(c.post(f"/sites/{site}/apartments", {"name": "1E"}, token=site_admin.token), 403, "site_admin_required")
    refused(client.delete(f"{c.base}{roles}/{site_admin.user.id}", headers=c.h()), 409, "site_role_missing")
    assert [r["email"] for r in c.ok(c.get(roles))["items"]] == ["apt-admin@example.com"]

    # Refusals of the grant itself.
    person(world, "stranger@example.com")  # a user, not a member of this company
    for email in ("stranger@example.com", "nobody@example.com"):
        refused(c.post(roles, {"email": email, "role": "site_admin"}), 404, "member_not_found")
    refused(c.post(roles, {"email": "apt-admin@example.com", "role": "apartment_admin"}), 400, "apartment_required")
    refused(c.post(roles, {"email": "apt-admin@example.com", "role": "apartment_admin", "apartment_id": apt,
                           "payments": True}), 400, "payments_permission_site_admins_only")
    refused(c.post(roles, {"email": "apt-admin@example.com", "role": "apartment_admin", "apartment_id": 999999}),
            404, "apartment_not_found")
    refused(c.post(roles, {"email": "apt-admin@example.com", "role": "owner"}), 422, "invalid_request")


def test_only_payers_see_prices_and_pay(world, client):
    # R-MY-5: company admins, and site admins with the payments permission, pay or see prices.
    support = issuer(world)
    [code_1] = mint(client, support.token, subscriptions=1).json()["codes"]
    c = Company(world, client)
    site, _ = _seed_site(c)
    admin = join(world, c.org, "site-admin@example.com", Role.viewer)
    roles = f"/sites/{site}/roles"
    c.ok(c.post(roles, {"email": "site-admin@example.com", "role": "site_admin"}))
    plan = c.ok(c.get(f"/sites/{site}/payment-plan", token=admin.token))
    assert (plan["may_pay"], plan["price"], plan["needing_license"]) == (False, None, 4)
    refused(c.post(f"/sites/{site}/vouchers/redeem", {"code": code_1}, token=admin.token, idem=True),
            403, "payments_permission_required")
    refused(c.put(f"/sites/{site}/payment-plan/card", {"payment_method": "pm_card_visa"}, token=admin.token),
            403, "payments_permission_required")

    c.ok(c.post(roles, {"email": "site-admin@example.com", "role": "site_admin", "payments": True}))
    plan = c.ok(c.get(f"/sites/{site}/payment-plan", token=admin.token))
    assert plan["may_pay"] is True
    assert plan["price"] == {"per_apartment_year_minor": 1200, "currency": "EUR", "year_total_minor": 4800}
    # The company's owner is a company admin: pays and sees prices with no site role.
    assert c.ok(c.get(f"/sites/{site}/payment-plan"))["price"]["year_total_minor"] == 4800
    c.ok(c.post(f"/sites/{site}/vouchers/redeem", {"code": code_1}, idem=True))
    # The paying site admin pays an apartment-year from the credit pool and sets the card.
    apt = c.ok(c.get(f"/sites/{site}/dashboard"))["rows"][0]["id"]
    paid = c.ok(c.post(f"/sites/{site}/apartments/{apt}/pay-from-credit", token=admin.token, idem=True))
    assert paid["pool"] == {"apartment_years": 0, "device_years": 0}
    assert c.ok(c.put(f"/sites/{site}/payment-plan/card", {"payment_method": "pm_card_visa"}, token=admin.token))
    assert c.ok(c.get(f"/sites/{site}/payments", token=admin.token))["items"] == []


def test_a_site_admin_with_the_payments_permission_activates_a_voucher(world, client):
    # R-MY-5: activating a voucher code is paying; a site admin with the payments permission may.
    [code] = mint(client, issuer(world).token).json()["codes"]
    c = Company(world, client)
    site = c.site()
    admin = join(world, c.org, "site-admin@example.com", Role.viewer)
    c.ok(c.post(f"/sites/{site}/roles", {"email": "site-admin@example.com", "role": "site_admin", "payments": True}))
    out = c.ok(c.post(f"/sites/{site}/vouchers/redeem", {"code": code}, token=admin.token, idem=True))
    assert out["pool"]["apartment_years"] == 1


# --- card payments (R-MY-5) ----------------------------------------------------------------------

def _local(world: Any) -> LocalProvider:
    provider = world.ctx.payments
    assert isinstance(provider, LocalProvider)  # the tests' configuration: no call leaves the machine
    return provider


def _webhook(client: Any, delivery: tuple[bytes, str]) -> Any:
    return client.post(f"{API}/my2n/payments/webhook", content=delivery[0],
                       headers={"Stripe-Signature": delivery[1], "Content-Type": "application/json"})


def test_card_and_recurring_payment_pay_every_apartment_once(world, client):
    # R-MY-5: a card, recurring payment on (the first year of the 4 apartments is paid now), the
    # provider's webhook of that same payment delivered twice pays nothing more; off again to change the card.
    local = _local(world)
    c = Company(world, client)
    site, _ = _seed_site(c)
    plan = f"/sites/{site}/payment-plan"
    shown = c.ok(c.get(plan))
    assert (shown["card"], shown["recurring"], shown["needing_license"], shown["may_pay"]) == (None, False, 4, True)
    refused(c.post(f"{plan}/recurring/activate", idem=True), 409, "card_missing")
    assert c.ok(c.put(f"{plan}/card", {"payment_method": "pm_card_visa"}))["card"]

    preview = c.ok(c.get(f"{plan}/recurring/preview"))
    assert (preview["amount_minor"], preview["currency"], len(preview["lines"])) == (4800, "EUR", 4)
    r = c.post(f"{plan}/recurring/activate", idem="recurring-1")
    assert c.ok(r) == {"recurring": True, "apartments_covered": 4, "paid": ["A1", "A2", "A3", "A4"],
                       "charged_minor": 4800, "currency": "EUR", "renews_at": add_years(world.now, 1).isoformat()}
    again = c.post(f"{plan}/recurring/activate", idem="recurring-1")
    assert c.ok(again) == r.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(local.subscriptions) == 1
    refused(c.post(f"{plan}/recurring/activate"), 400, "idempotency_key_required")
    refused(c.post(f"{plan}/recurring/activate", idem=True), 409, "recurring_payment_active")
    year = add_years(world.now, 1).isoformat()
    board = c.ok(c.get(f"/sites/{site}/dashboard"))
    assert board["lapsed"] == [] and {row["paid_through"] for row in board["rows"][:4]} == {year}
    assert c.ok(c.get(plan))["recurring"] is True and c.ok(c.get(plan))["apartments_covered"] == 4

    # The provider's invoice.paid for that first year, delivered twice: handled once, paid once.
    [first_year] = local.outbox
    assert c.ok(_webhook(client, first_year))["outcome"] == "paid"
    assert c.ok(_webhook(client, first_year))["outcome"] == "duplicate"
    [payment] = c.ok(c.get(f"/sites/{site}/payments"))["items"]
    assert (payment["apartments"], payment["amount_minor"]) == (4, 4800)
    assert c.ok(c.get(f"/sites/{site}/apartments/{board['rows'][0]['id']}"))["paid_through"] == year

    # The card changes only while recurring payment is off.
    refused(c.put(f"{plan}/card", {"payment_method": "pm_card_mastercard"}), 409, "recurring_payment_active")
    assert c.ok(c.post(f"{plan}/recurring/deactivate"))["recurring"] is False
    refused(c.post(f"{plan}/recurring/deactivate"), 409, "recurring_payment_off")
    assert c.ok(c.put(f"{plan}/card", {"payment_method": "pm_card_mastercard"}))["card"] == "Mastercard •••• 4444"  # R-MY-5: brand and last four digits


def test_a_declined_or_unreachable_payment_leaves_nothing_paid_and_the_retry_pays_once(world, client):
    # R-MY-5: a payment that fails or times out leaves no apartment paid and no credit taken.
    local = _local(world)
    c = Company(world, client)
    site, _ = _seed_site(c)
    plan = f"/sites/{site}/payment-plan"
    c.ok(c.put(f"{plan}/card", {"payment_method": "pm_card_0002"}))
    local.declining = True
    refused(c.post(f"{plan}/recurring/activate", idem="start"), 402, "payment_declined")
    local.declining, local.timing_out = False, True
    refused(c.post(f"{plan}/recurring/activate", idem="start"), 503, "payment_provider_unreachable")
    board = c.ok(c.get(f"/sites/{site}/dashboard"))
    assert board["not_paid"] == ["A1", "A2", "A3", "A4"] and c.ok(c.get(f"/sites/{site}/payments"))["items"] == []
    assert c.ok(c.get(plan))["recurring"] is False
    assert c.ok(c.get(f"/sites/{site}/credit")) == {"apartment_years": 0, "device_years": 0}
    # The retry with the same key (nothing was kept for the failed attempts) pays once.
    local.timing_out = False
    assert c.ok(c.post(f"{plan}/recurring/activate", idem="start"))["paid"] == ["A1", "A2", "A3", "A4"]
    assert len(local.subscriptions) == 1 and len(c.ok(c.get(f"/sites/{site}/payments"))["items"]) == 1


def test_the_renewal_webhook_pays_a_year_once_and_a_forged_one_nothing(world, client):
    # R-MY-5 R-MY-6: a year on, the provider's renewal arrives (three times): one more year, once.
    local = _local(world)
    c = Company(world, client)
    site, _ = _seed_site(c)
    plan = f"/sites/{site}/payment-plan"
    c.ok(c.put(f"{plan}/card", {"payment_method": "pm_card_visa"}))
    c.ok(c.post(f"{plan}/recurring/activate", idem=True))
    year = add_years(world.now, 1)
    world.ctx.clock.set(year - timedelta(days=10))
    assert c.ok(c.get(f"/sites/{site}/dashboard"))["lapsing_soon"] == []  # recurring payment renews it
    world.ctx.clock.set(year)
    renewal = local.renewal_webhook(next(iter(local.subscriptions)))
    outcomes = [c.ok(_webhook(client, renewal))["outcome"] for _ in range(3)]
    assert outcomes == ["paid", "duplicate", "duplicate"]
    rows = c.ok(c.get(f"/sites/{site}/dashboard"))["rows"]
    assert {r["paid_through"] for r in rows[:4]} == {add_years(year, 1).isoformat()}
    assert len(c.ok(c.get(f"/sites/{site}/payments"))["items"]) == 2

    # A forged or unsigned delivery is refused and changes nothing.
    payload, header = local.make_webhook("payment_succeeded", site_reference=f"site-{site}",
                                         subscription_id="sub_x", payment_id="in_forged", amount_minor=1,
                                         currency="eur", apartments=4)
    refused(_webhook(client, (payload.replace(b"in_forged", b"in_other"), header)), 400, "webhook_signature_invalid")
    refused(client.post(f"{API}/my2n/payments/webhook", content=payload), 400, "webhook_signature_invalid")
    assert len(c.ok(c.get(f"/sites/{site}/payments"))["items"]) == 2


def test_devices_show_whether_they_work_across_the_paid_through_moment(world, client):
    # R-MY-6: a paid device of a lapsed apartment stops; intercoms and 2N answering units do not.
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "A1")
    for serial, kind, into in (("IC", "intercom", None), ("AU", "answering_unit", apt), ("PH", "phone", apt)):
        c.ok(c.device(site, serial, kind, into), 201)
    with transaction(world.ctx.sessions) as s:
        my2n.get_apartment(s, my2n.get_site(s, c.org, site), apt).paid_through = world.now + timedelta(days=3)

    def works() -> dict[str, bool]:
        return {d["serial"]: d["works"] for d in c.ok(c.get(f"/sites/{site}/devices"))["items"]}

    world.ctx.clock.advance(timedelta(days=3) - timedelta(microseconds=1))
    assert works() == {"IC": True, "AU": True, "PH": True}
    world.ctx.clock.advance(timedelta(microseconds=1))
    assert works() == {"IC": True, "AU": True, "PH": False}
    detail = c.ok(c.get(f"/sites/{site}/apartments/{apt}"))
    assert detail["lapsed"] is True and {d["serial"]: d["works"] for d in detail["device_list"]} == {"AU": True,
                                                                                                   "PH": False}


def test_the_dashboard_counts_the_whole_site_and_pages_its_rows(world, client):
    # R-MY-3: the figures are the site's; the rows come a page at a time, every apartment once.
    c = Company(world, client)
    site = c.site()
    apartments = [c.apartment(site, f"A{i:02}") for i in range(7)]
    for i, apt in enumerate(apartments[:5]):
        c.ok(c.device(site, f"PH-{i}", "phone", apt), 201)
    seen, cursor = [], None
    while True:
        page = c.ok(c.get(f"/sites/{site}/dashboard?limit=3" + (f"&cursor={cursor}" if cursor else "")))
        assert (page["apartments"], page["needing_license"], page["order"]["quantity"]) == (7, 5, 5)
        assert len(page["rows"]) <= 3
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == apartments


def test_the_issuer_lists_voucher_batches_with_their_code_states(world, client):
    # R-MY-5: Active / Used / Cancelled; only the issuer cancels (the key rules) and lists.
    c = Company(world, client)
    site = c.site()
    support = issuer(world)
    used, cancelled, _ = mint(client, support.token, subscriptions=3).json()["codes"]
    c.ok(c.post(f"/sites/{site}/vouchers/redeem", {"code": used}, idem=True))
    r = client.post(f"{API}/issuer/keys/cancel", json={"key": cancelled}, headers=auth(support.token, "cancel-1"))
    assert r.status_code == 200, r.text
    [batch] = c.ok(client.get(f"{API}/issuer/voucher-batches", headers=auth(support.token)))["items"]
    assert batch["codes"] == {"active": 1, "used": 1, "cancelled": 1}
    refused(client.get(f"{API}/issuer/voucher-batches", headers=auth(c.token)), 403, "issuer_only")
