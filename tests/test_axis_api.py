"""AXIS licensing through the REST API (SPEC §3) with real tokens, the clock moved across grace ends."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from conftest import auth
from entitle.ledger import services as ledger
from entitle.tenancy.models import Role
from helpers import error_code, join, org_with_owner, redeem

_idem = itertools.count()
API = "/api/v1"
P = "axis-camera-station"
ERROR_KEYS = {"code", "message", "detail"}


class Org:
    """One organization's AXIS licensing, driven through the API as its owner."""

    def __init__(self, world: Any, client: Any, name: str = "Cams", email: str = "owner@example.com") -> None:
        self.world, self.client = world, client
        self.org, self.owner = org_with_owner(world, f"Org {name}", email)
        self.base = f"{API}/orgs/{self.org}/axis"
        self.token = self.owner.token

    def h(self, idem: bool = False, token: str | None = None) -> dict[str, str]:
        return auth(token or self.token, f"axis-{next(_idem)}" if idem else None)

    def get(self, path: str, token: str | None = None) -> Any:
        return self.client.get(self.base + path, headers=self.h(token=token))

    def post(self, path: str, body: Any = None, idem: bool = False, token: str | None = None) -> Any:
        return self.client.post(self.base + path, json=body, headers=self.h(idem, token))

    def system(self, uid: str = "ACS-1", cams: int = 0, license_type: str = "core") -> int:
        r = self.post("/systems", {"uid": uid, "name": "HQ", "product": P})
        assert r.status_code == 201, r.text
        system_id = int(r.json()["id"])
        if cams:
            self.add(system_id, [f"{uid}-CAM-{i}" for i in range(cams)], license_type)
        return system_id

    def add(self, system_id: int, serials: list[str], license_type: str = "core", hardware: str | None = None) -> Any:
        r = self.post(f"/systems/{system_id}/devices", {"devices": [
            {"serial": s, "license_type": license_type, "hardware_serial": hardware} for s in serials]})
        assert r.status_code == 201, r.text
        return r.json()

    def start(self) -> dict[str, Any]:
        r = self.post(f"/products/{P}/subscription")
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def redeem(self, part: str, quantity: int) -> None:
        for key in self.world.mint(part, quantity=quantity):
            r = redeem(self.client, self.token, self.org, key)
            assert r.status_code == 200, r.text

    def allocate(self, *lines: tuple[str, int, int] | tuple[str, int, int, int]) -> Any:
        body = {"lines": [dict(zip(("license_type", "year", "units", "term_years"), line, strict=False))
                          for line in lines]}
        return self.post(f"/products/{P}/allocations", body, idem=True)

    def status(self) -> dict[str, Any]:
        r = self.get(f"/products/{P}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    """The refusal has the one error shape, the code and a sentence to act on."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"].strip(), body
    return body["error"]["detail"]  # type: ignore[no-any-return]


def test_register_add_devices_start_redeem_allocate_fully_licensed(world, client):
    # R-AX-1 R-AX-2 R-AX-3 R-AX-4 R-AX-5: the whole online flow with real tokens.
    o = Org(world, client)
    system_id = o.system("ACS-1")
    out = o.add(system_id, [f"CAM-{i}" for i in range(8)])
    assert out["added"] == 8 and out["system"]["devices"] == {"core": 8}
    devices = o.get(f"/systems/{system_id}/devices").json()["items"]
    assert [d["serial"] for d in devices] == sorted(f"CAM-{i}" for i in range(8))
    assert {d["license_type"] for d in devices} == {"core"} and devices[0]["hardware_serial"] is None
    assert [s["uid"] for s in o.get("/systems").json()["items"]] == ["ACS-1"]
    assert o.get(f"/systems/{system_id}").json()["devices"] == {"core": 8}

    # R-AX-13: registered, not started: the product's trial.
    st = o.status()
    assert st["state"] == "trial" and st["registered"] and st["current_year"] is None
    assert st["license_types"]["core"]["need_now"] == 8
    [row] = o.get("/products").json()["items"]
    assert row["product"] == P and row["state"] == "trial" and row["systems"] == 1

    # R-AX-3: starting fixes the years and opens a 30-day grace period.
    st = o.start()
    start = datetime.fromisoformat(st["subscription_start"])
    assert st["state"] == "in_grace"
    assert datetime.fromisoformat(st["current_year"]["grace_end"]) == start + timedelta(days=30)
    assert [y["index"] for y in st["years"]] == [0, 1, 2, 3, 4, 5]  # R-AX-5: five years ahead
    refused(o.post(f"/products/{P}/subscription"), 409, "subscription_already_started")

    # R-AX-4: redeemed units land in the wallet as a lot; R-AX-12: guidance counts them.
    o.redeem("AXIS-ACS-CORE-1Y", 10)
    st = o.status()
    assert [(lot["part_number"], lot["units"]) for lot in st["wallet"]["lots"]] == [("AXIS-ACS-CORE-1Y", 10)]
    assert st["buying_guidance"]["core"]["0"] == 0 and st["buying_guidance"]["core"]["1"] == 6

    r = o.allocate(("core", 0, 8))
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "fully_licensed"
    [made] = r.json()["allocations"]
    assert (made["year"], made["units"], made["part_number"]) == (0, 8, "AXIS-ACS-CORE-1Y")
    assert made["compensation_license_days"] == 0  # inside the grace period: no compensation (R-AX-7)
    st = o.status()
    assert st["state"] == "fully_licensed" and st["years"][0]["fully_licensed"]
    assert st["license_types"]["core"] == {"need_now": 8, "need": 8, "allocated": 8, "state": "fully_licensed"}
    assert st["wallet"]["lots"][0]["units"] == 2
    [row] = o.get(f"/products/{P}/allocations").json()["items"]
    assert (row["kind"], row["license_type"], row["year"], row["units"]) == ("allocation", "core", 0, 8)
    assert o.get("/products").json()["items"][0]["state"] == "fully_licensed"
    with world.ctx.sessions() as s:
        assert ledger.unbalanced_transactions(s) == [] and ledger.negative_accounts(s) == []


def test_allocation_posts_are_idempotent(world, client):
    # R-CORE-5: a retry with the same Idempotency-Key moves nothing; no key, no move.
    o = Org(world, client)
    o.system("ACS-1", cams=4)
    o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 10)
    body = {"lines": [{"license_type": "core", "year": 0, "units": 4}]}
    refused(o.post(f"/products/{P}/allocations", body), 400, "idempotency_key_required")
    headers = auth(o.token, "same-key")
    first = client.post(f"{o.base}/products/{P}/allocations", json=body, headers=headers)
    again = client.post(f"{o.base}/products/{P}/allocations", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert len(o.get(f"/products/{P}/allocations").json()["items"]) == 1
    assert o.status()["wallet"]["lots"][0]["units"] == 6
    other = {"lines": [{"license_type": "core", "year": 1, "units": 4}]}
    refused(client.post(f"{o.base}/products/{P}/allocations", json=other, headers=headers), 422,
            "idempotency_key_reused")


def test_a_short_wallet_refuses_the_whole_allocation_with_what_is_missing(world, client):
    # R-AX-5: confirming is refused when the wallet holds too few units, with how many are missing.
    o = Org(world, client)
    o.system("ACS-1", cams=8)
    o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 5)
    o.redeem("AXIS-ACS-UNIVERSAL-1Y", 1)
    detail = refused(o.allocate(("universal", 0, 1), ("core", 0, 8)), 409, "insufficient_units")
    assert detail["missing"] == 3
    assert detail["lines"] == [{"license_type": "core", "term_years": 1, "needed": 8, "available": 5, "missing": 3}]
    # every line or none: the universal line did not go through either
    assert o.get(f"/products/{P}/allocations").json()["items"] == []
    assert sum(lot["units"] for lot in o.status()["wallet"]["lots"]) == 6
    # five-year units are another pool
    refused(o.allocate(("core", 0, 1, 5)), 409, "insufficient_units")
    refused(o.allocate(("core", 9, 1)), 400, "year_out_of_range")
    refused(o.allocate(("pro", 0, 1)), 400, "license_type_unknown")


def test_refusals_before_a_subscription_and_for_unknown_things(world, client):
    o = Org(world, client)
    refused(o.get(f"/products/{P}"), 404, "product_not_registered")
    refused(o.post(f"/products/{P}/subscription"), 409, "product_not_registered")
    refused(o.get("/products/no-such-product"), 404, "product_not_found")
    refused(o.post("/systems", {"uid": "X", "product": "my2n"}), 404, "product_not_found")
    system_id = o.system("ACS-1", cams=1)
    refused(o.post("/systems", {"uid": "ACS-1", "product": P}), 409, "system_exists")
    refused(o.allocate(("core", 0, 1)), 409, "subscription_not_started")
    refused(o.post(f"/systems/{system_id}/devices", {"devices": [{"serial": "ACS-1-CAM-0", "license_type": "core"}]}),
            409, "device_exists")
    refused(o.post(f"/systems/{system_id}/devices", {"devices": [{"serial": "N", "license_type": "pro"}]}),
            400, "license_type_unknown")
    refused(o.post(f"/systems/{system_id}/devices/remove", {"serials": ["NOPE"]}), 404, "device_not_found")
    refused(o.get("/systems/999999"), 404, "system_not_found")
    refused(o.get("/hardware/NOPE"), 404, "hardware_not_found")
    r = o.post(f"/systems/{system_id}/devices/remove", {"serials": ["ACS-1-CAM-0"]})
    assert r.status_code == 200 and r.json()["removed"] == 1 and r.json()["system"]["devices"] == {}
    assert o.get(f"/systems/{system_id}/devices").json()["items"] == []


def test_a_viewer_reads_but_may_not_license(world, client):
    # R-CORE-2: viewers see the licensing; only owners and admins change it.
    o = Org(world, client)
    system_id = o.system("ACS-1", cams=2)
    viewer = join(world, o.org, "viewer@example.com", Role.viewer).token
    assert o.get(f"/products/{P}", token=viewer).status_code == 200
    assert o.get(f"/systems/{system_id}/devices", token=viewer).status_code == 200
    for path, body, idem in [
        (f"/products/{P}/subscription", None, False),
        ("/systems", {"uid": "ACS-2", "product": P}, False),
        (f"/systems/{system_id}/devices", {"devices": [{"serial": "V", "license_type": "core"}]}, False),
        (f"/systems/{system_id}/devices/remove", {"serials": ["ACS-1-CAM-0"]}, False),
        (f"/products/{P}/allocations", {"lines": [{"license_type": "core", "year": 0, "units": 1}]}, True),
        (f"/products/{P}/allocations", {"lines": [{"license_type": "core", "year": 0, "units": 1}]}, False),
        (f"/products/{P}/renew", {"years_ahead": 1}, True),
        (f"/products/{P}/upgrades", {"year": 0, "units": 1}, True),
        ("/hardware", {"serial": "HW", "product": P, "license_type": "core"}, False),
        ("/hardware/HW/allocations", {"units": 1}, True),
    ]:
        detail = refused(o.post(path, body, idem=idem, token=viewer), 403, "role_insufficient")
        assert detail["role"] == "viewer", path
    # an admin may
    admin = join(world, o.org, "admin@example.com", Role.admin).token
    assert o.post(f"/products/{P}/subscription", token=admin).status_code == 201


def test_another_organization_sees_nothing_and_changes_nothing(world, client):
    # R-CORE-1: another organization's ids look exactly like ids that do not exist.
    a = Org(world, client, "A", "a@example.com")
    system_id = a.system("ACS-A", cams=2)
    a.start()
    a.redeem("AXIS-ACS-CORE-1Y", 5)
    [key] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=4)
    assert a.post("/hardware", {"serial": "HW-A", "product": P, "preloaded_key": key}, idem=True).status_code == 201
    b = Org(world, client, "B", "b@example.com")
    b.system("ACS-B", cams=1)
    for path in [f"/products/{P}", f"/products/{P}/allocations", "/systems", f"/systems/{system_id}",
                 f"/systems/{system_id}/devices", "/hardware", "/hardware/HW-A", "/products"]:
        r = client.get(a.base + path, headers=b.h())
        assert r.status_code == 404, (path, r.text)
        assert error_code(r) == "organization_not_found" and "ACS-A" not in r.text and "HW-A" not in r.text
    for path, body in [(f"/products/{P}/allocations", {"lines": [{"license_type": "core", "year": 0, "units": 2}]}),
                       (f"/systems/{system_id}/devices", {"devices": [{"serial": "X", "license_type": "core"}]}),
                       (f"/systems/{system_id}/devices/remove", {"serials": ["ACS-A-CAM-0"]}),
                       ("/hardware/HW-A/allocations", {"units": 1})]:
        refused(client.post(a.base + path, json=body, headers=b.h(idem=True)), 404, "organization_not_found")
    # B's own routes with A's ids: not found either
    refused(b.get(f"/systems/{system_id}/devices"), 404, "system_not_found")
    refused(b.get("/hardware/HW-A"), 404, "hardware_not_found")
    # R-AX-1, R-AX-10: registrations never move to another organization
    refused(b.post("/systems", {"uid": "ACS-A", "product": P}), 409, "system_registered_elsewhere")
    refused(b.post("/hardware", {"serial": "HW-A", "product": P, "license_type": "core"}), 409,
            "hardware_registered_elsewhere")
    st = a.status()
    assert st["license_types"]["core"]["allocated"] == 0 and st["wallet"]["lots"][0]["units"] == 5
    assert a.get(f"/systems/{system_id}").json()["devices"] == {"core": 2}


def test_states_across_the_grace_end_and_compensation_after_it(world, client):
    # R-AX-3 R-AX-6 R-AX-7: in grace until 30 days after the start, then partially licensed;
    # allocating after the grace end compensates the overlapping days in license-days.
    clock = world.ctx.clock
    o = Org(world, client)
    o.system("ACS-1", cams=8)
    st = o.start()
    grace_end = datetime.fromisoformat(st["current_year"]["grace_end"])
    o.redeem("AXIS-ACS-CORE-1Y", 10)
    assert o.allocate(("core", 0, 3)).json()["state"] == "in_grace"
    clock.set(grace_end - timedelta(seconds=1))
    assert o.status()["state"] == "in_grace"
    clock.set(grace_end)
    st = o.status()
    assert st["state"] == "partially_licensed"
    assert st["license_types"]["core"]["state"] == "partially_licensed"
    assert st["years"][0]["license_types"]["core"] == {"need": 8, "allocated": 3, "missing": 5}
    r = o.allocate(("core", 0, 5))
    assert r.status_code == 201 and r.json()["state"] == "fully_licensed"
    # 5 units x 30 days = 150 license-days: no whole unit of the 365-day year; the rest is kept.
    assert r.json()["allocations"][0]["compensation_license_days"] == 150
    assert r.json()["allocations"][0]["compensation_units"] == 0
    assert o.status()["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 150}


def test_without_any_allocation_the_product_is_not_licensed_after_the_grace_end(world, client):
    # R-AX-6: a product not fully licensed when the grace period ends is unlicensed.
    clock = world.ctx.clock
    o = Org(world, client)
    o.system("ACS-1", cams=2)
    grace_end = datetime.fromisoformat(o.start()["current_year"]["grace_end"])
    clock.set(grace_end + timedelta(days=1))
    st = o.status()
    assert st["state"] == "not_licensed" and st["license_types"]["core"]["state"] == "not_licensed"
    assert o.get("/products").json()["items"][0]["state"] == "not_licensed"


def test_renew_ahead_covers_the_coming_years_and_the_renewal_opens_a_new_grace(world, client):
    # R-AX-5 R-AX-6 R-AX-8: renew allocates what the coming years miss; a device added mid-year
    # needs nothing at once, it counts toward the renewal.
    clock = world.ctx.clock
    o = Org(world, client)
    system_id = o.system("ACS-1", cams=4)
    st = o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 20)
    assert o.allocate(("core", 0, 4)).status_code == 201
    clock.set(datetime.fromisoformat(st["current_year"]["grace_end"]) + timedelta(days=10))
    o.add(system_id, ["LATE-1"])  # R-AX-8: mid-period, no allocation needed
    st = o.status()
    assert st["state"] == "fully_licensed"  # the year is measured by its need at the grace end (4)...
    assert st["license_types"]["core"]["need_now"] == 5 and st["license_types"]["core"]["need"] == 4
    assert st["years"][1]["license_types"]["core"] == {"need": 5, "allocated": 0, "missing": 5}
    # ...and the added device counts toward the renewal: renew covers it for the coming years
    r = o.post(f"/products/{P}/renew", {"years_ahead": 2}, idem=True)
    assert r.status_code == 200, r.text
    assert sorted((a["year"], a["units"]) for a in r.json()["allocations"]) == [(1, 5), (2, 5)]
    st = o.status()
    assert [y["fully_licensed"] for y in st["years"][1:3]] == [True, True]
    r = o.post(f"/products/{P}/renew", {"years_ahead": 2}, idem=True)
    assert r.status_code == 200 and r.json()["allocations"] == [] and r.json()["message"]
    # the renewal date: year 1 is fully licensed from its first day
    year1 = st["years"][1]
    clock.set(datetime.fromisoformat(year1["start"]))
    st = o.status()
    assert st["current_year"]["index"] == 1 and st["state"] == "fully_licensed"
    # more devices than allocated at year 3's start: a new 30-day grace period, then not licensed
    o.add(system_id, ["LATE-2", "LATE-3"])
    year3 = next(y for y in st["years"] if y["index"] == 3)
    clock.set(datetime.fromisoformat(year3["start"]))
    st = o.status()
    assert st["current_year"]["index"] == 3 and st["state"] == "in_grace"
    assert datetime.fromisoformat(st["current_year"]["grace_end"]) == \
        datetime.fromisoformat(year3["start"]) + timedelta(days=30)
    clock.set(datetime.fromisoformat(st["current_year"]["grace_end"]))
    assert o.status()["state"] == "not_licensed"
    refused(o.post(f"/products/{P}/renew", {"years_ahead": 1}), 400, "idempotency_key_required")


def test_renew_with_a_short_wallet_is_refused(world, client):
    # R-AX-5: refused as a whole, with how many are missing.
    o = Org(world, client)
    o.system("ACS-1", cams=4)
    o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 6)
    # R-AX-6: the current year and the two ahead, 4 cameras each: 12 units, 6 held.
    detail = refused(o.post(f"/products/{P}/renew", {"years_ahead": 2}, idem=True), 409, "insufficient_units")
    assert detail["missing"] == 6 and detail["years"] == [0, 1, 2]
    assert detail["lines"] == [{"license_type": "core", "missing": 6, "missing_by_year": {"1": 2, "2": 4}}]
    assert o.get(f"/products/{P}/allocations").json()["items"] == []


def test_upgrade_converts_allocated_core_units_to_universal_once(world, client):
    # R-AX-13: an upgrade unit converts one allocated unit of one license type into another, once.
    o = Org(world, client)
    system_id = o.system("ACS-1", cams=4)
    o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 4)
    assert o.allocate(("core", 0, 4)).status_code == 201
    refused(o.post(f"/products/{P}/upgrades", {"year": 0, "units": 1}, idem=True), 409, "insufficient_units")
    o.redeem("AXIS-ACS-UPGRADE-CORE-UNIVERSAL", 2)
    # two of the cameras are moved to universal: the allocation follows after the upgrade
    o.post(f"/systems/{system_id}/devices/remove", {"serials": ["ACS-1-CAM-0", "ACS-1-CAM-1"]})
    o.add(system_id, ["U-1", "U-2"], "universal")
    r = o.post(f"/products/{P}/upgrades", {"year": 0, "units": 2}, idem=True)
    assert r.status_code == 201, r.text
    assert r.json() == {"upgrades": [{"year": 0, "units": 2, "from": "core", "to": "universal"}],
                        "state": "fully_licensed"}
    st = o.status()
    assert st["license_types"]["core"]["allocated"] == 2 and st["license_types"]["universal"]["allocated"] == 2
    kinds = sorted((a["kind"], a["license_type"], a["units"]) for a in o.get(f"/products/{P}/allocations").json()["items"])
    assert kinds == [("allocation", "core", 4), ("upgrade", "universal", 2), ("upgraded", "core", -2)]
    # each upgrade unit is used once
    refused(o.post(f"/products/{P}/upgrades", {"year": 0, "units": 1}, idem=True), 409, "insufficient_units")


def test_hardware_with_its_preloaded_key_and_an_expansion(world, client):
    # R-AX-10: preloaded licenses activate on registration, for the hardware's lifetime; expansion
    # units go from the wallet to one piece of hardware for good.
    o = Org(world, client)
    [preloaded] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    # the preloaded key is not for the wallet
    refused(redeem(client, o.token, o.org, preloaded), 409, "key_not_for_wallet")
    body = {"serial": "S30-0001", "name": "Recorder", "product": P, "preloaded_key": preloaded}
    refused(o.post("/hardware", body), 400, "idempotency_key_required")
    r = o.post("/hardware", body, idem=True)
    assert r.status_code == 201, r.text
    hw = r.json()
    assert (hw["serial"], hw["license_type"], hw["preloaded_units"], hw["licenses"], hw["expansion_units"]) == \
        ("S30-0001", "core", 8, 8, 0)
    assert o.status()["wallet"]["lots"] == []  # never into the wallet
    refused(o.post("/hardware", {**body, "serial": "S30-0002"}, idem=True), 409, "key_already_redeemed")
    [sub_key] = world.mint("AXIS-ACS-CORE-1Y", quantity=1)
    refused(o.post("/hardware", {**body, "serial": "S30-0003", "preloaded_key": sub_key}, idem=True), 409,
            "key_not_preloaded")
    refused(o.post("/hardware", {"serial": "S30-0004", "product": P}), 400, "license_type_required")
    assert [h["serial"] for h in o.get("/hardware").json()["items"]] == ["S30-0001"]

    # devices recorded on the hardware are licensed by it, not counted in the subscription need
    system_id = o.system("ACS-1")
    o.add(system_id, [f"REC-CAM-{i}" for i in range(10)], hardware="S30-0001")
    devices = o.get(f"/systems/{system_id}/devices").json()["items"]
    assert {d["hardware_serial"] for d in devices} == {"S30-0001"}
    assert o.status()["license_types"]["core"]["need_now"] == 0
    hw = o.get("/hardware/S30-0001").json()
    assert (hw["devices"], hw["licensed"]) == (10, False)

    # the expansion
    refused(o.post("/hardware/S30-0001/allocations", {"units": 2}, idem=True), 409, "insufficient_units")
    o.redeem("AXIS-ACS-CORE-EXP", 3)
    r = o.post("/hardware/S30-0001/allocations", {"units": 2}, idem=True)
    assert r.status_code == 201, r.text
    assert (r.json()["licenses"], r.json()["expansion_units"], r.json()["licensed"]) == (10, 2, True)
    detail = refused(o.post("/hardware/S30-0001/allocations", {"units": 5}, idem=True), 409, "insufficient_units")
    assert detail["missing"] == 4
    # hardware registered without a key, by license type
    r = o.post("/hardware", {"serial": "S30-0005", "product": P, "license_type": "core"})
    assert r.status_code == 201 and r.json()["licenses"] == 0
    assert [h["serial"] for h in o.get("/hardware").json()["items"]] == ["S30-0001", "S30-0005"]


def test_growth_past_twice_the_allocation_is_flagged_not_blocked(world, client):
    # R-AX-9: need may grow to twice the allocated units; beyond, flagged, never blocked.
    o = Org(world, client)
    system_id = o.system("ACS-1", cams=2)
    o.start()
    o.redeem("AXIS-ACS-CORE-1Y", 2)
    assert o.allocate(("core", 0, 2)).status_code == 201
    o.add(system_id, ["G-1", "G-2"])
    assert o.status()["growth"] == {"over": False, "license_types": {}}
    o.add(system_id, ["G-3"])  # 5 > 2 x 2: allowed, flagged
    growth = o.status()["growth"]
    assert growth["over"] and growth["license_types"]["core"] == {"need": 5, "allocated": 2, "limit": 4}
