"""Access Commander through the REST API (SPEC §2): every rule, with the clock moved."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from entitle_device.access_commander import add_months

from conftest import auth
from entitle.ledger import services as ledger
from entitle.ledger.models import Account
from helpers import error_code, org_with_owner, redeem

_idem = itertools.count()
API = "/api/v1"


class Inst:
    """One organization's installation, driven through the API."""

    def __init__(self, world: Any, client: Any, name: str = "Plant", email: str = "admin@example.com",
                 timeout: int = 300) -> None:
        self.world, self.client = world, client
        self.org, self.owner = org_with_owner(world, f"Org {name}", email)
        r = client.post(f"{API}/orgs/{self.org}/ac/installations",
                        json={"name": name, "heartbeat_timeout_seconds": timeout}, headers=self.h())
        assert r.status_code == 201, r.text
        self.id = r.json()["installation"]["id"]
        self.uid = r.json()["installation"]["uid"]
        self.device_token = r.json()["token"]
        self.base = f"{API}/orgs/{self.org}/ac/installations/{self.id}"

    def h(self, idem: bool = False) -> dict[str, str]:
        return auth(self.owner.token, f"ac-{next(_idem)}" if idem else None)

    def post(self, path: str, body: Any = None, idem: bool = False) -> Any:
        return self.client.post(self.base + path, json=body, headers=self.h(idem))

    def add_device(self, serial: str, type: str = "ip_intercom", connected: bool = True) -> None:
        assert self.post("/devices", {"serial": serial, "type": type}).status_code == 201
        if connected:
            self.state(serial, True)

    def state(self, serial: str, connected: bool) -> Any:
        r = self.post(f"/devices/{serial}/state", {"connected": connected})
        assert r.status_code == 200, r.text
        return r.json()

    def heartbeat(self, serial: str) -> None:
        r = self.client.post(f"{API}/ac/state", json={"serial": serial, "connected": True},
                             headers={"Authorization": f"Bearer {self.device_token}"})
        assert r.status_code == 200, r.text

    def redeem(self, part: str, count: int = 1, quantity: int = 1) -> None:
        for key in self.world.mint(part, count=count, quantity=quantity):
            assert redeem(self.client, self.owner.token, self.org, key).status_code == 200

    def license(self, device: str, packages: list[tuple[str, int]] | None = None) -> Any:
        body: dict[str, Any] = {"license_device": device}
        if packages is not None:
            body["packages"] = [{"part_number": p, "quantity": q} for p, q in packages]
        return self.post("/licenses", body, idem=True)

    def activate(self, serial: str) -> Any:
        return self.post(f"/devices/{serial}/activate")

    def view(self) -> dict[str, Any]:
        r = self.client.get(self.base, headers=self.h())
        assert r.status_code == 200, r.text
        return r.json()

    def wallet(self) -> dict[str, int]:
        r = self.client.get(f"{API}/orgs/{self.org}/wallet", headers=self.h())
        return {line["part_number"]: line["units"] for line in r.json()["lines"]}


@pytest.fixture
def inst(world: Any, client: Any) -> Inst:
    return Inst(world, client)


def test_a_new_installation_runs_on_the_trial(inst: Inst) -> None:
    # R-AC-2: no license -> 1 device, 1 Attendance user, unlimited system users, no integration.
    v = inst.view()
    assert v["state"] == "trial" and v["license"] is None
    assert v["capacity"] == {"devices": 1, "attendance_users": 1, "admins": None, "integration": False, "tier": None}
    inst.add_device("D-1")
    inst.add_device("D-2")
    assert inst.activate("D-1").status_code == 200
    r = inst.activate("D-2")
    assert r.status_code == 409 and error_code(r) == "device_limit_reached"
    assert r.json()["error"]["detail"] == {"serial": "D-2", "owned": 1, "active": 1}
    r = inst.post("/attendance-users", {"name": "Ann", "monitored": True})
    assert r.status_code == 201
    r = inst.post("/attendance-users", {"name": "Bob", "monitored": True})
    assert r.status_code == 409 and error_code(r) == "attendance_limit_reached"
    r = inst.post("/integration/sync", {"source": "ldap"})
    assert r.status_code == 409 and error_code(r) == "integration_not_licensed"


def test_calculator_gives_the_packages_for_a_need(world: Any, client: Any, inst: Inst) -> None:
    # R-AC-1: 17 devices -> 4 x 91379040; 69 users -> 3 x 91379041.
    r = client.post(f"{API}/ac/calculate", json={"devices": 17, "attendance_users": 69},
                    headers=inst.h())
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(p["part_number"], p["quantity"]) for p in body["packages"]] == [("91379040", 4), ("91379041", 3)]
    assert body["capacity"]["devices"] == 20 and body["capacity"]["attendance_users"] == 75
    assert body["tier"]["part_number"]  # the smallest tier covering 17 devices / 69 users
    r = client.post(f"{API}/ac/calculate", json={"devices": 3, "integration": True}, headers=inst.h())
    assert [(p["part_number"], p["quantity"]) for p in r.json()["packages"]] == [("91379040", 1), ("91379042", 1)]


def test_license_gives_the_packages_capacities_and_moves_units_from_the_wallet(inst: Inst) -> None:
    # R-AC-1, R-AC-4: a license for a connected device, with the capacity its packages give.
    inst.redeem("91379040", count=4)
    inst.redeem("91379041", count=3)
    inst.add_device("LD-1")
    r = inst.license("LD-1", [("91379040", 4), ("91379041", 3)])
    assert r.status_code == 201, r.text
    lic = r.json()["license"]
    assert lic["capacity"]["devices"] == 20 and lic["capacity"]["attendance_users"] == 75
    assert "LD-1" in r.json()["license_file"] and inst.uid in r.json()["license_file"]
    assert inst.wallet() == {"91379040": 0, "91379041": 0}
    v = inst.view()
    assert v["state"] == "active" and v["license_device"] == "LD-1"
    assert v["devices"] == {"required": 1, "owned": 20, "active": 0, "monitored": None}
    assert v["attendance_users"]["owned"] == 75


def test_license_device_must_be_a_connected_device_of_the_installation(inst: Inst) -> None:
    # R-AC-4
    inst.redeem("91379040")
    inst.add_device("OFF", connected=False)
    r = inst.license("OFF", [("91379040", 1)])
    assert r.status_code == 409 and error_code(r) == "license_device_not_connected"
    r = inst.license("NOPE", [("91379040", 1)])
    assert r.status_code == 404
    assert inst.wallet() == {"91379040": 1}


def test_adding_a_license_replaces_the_current_one_whole(world: Any, inst: Inst) -> None:
    # R-AC-3: replace, never add; the replaced license's units are accounted in the ledger.
    inst.redeem("91379040", count=2)
    inst.add_device("LD-1")
    first = inst.license("LD-1", [("91379040", 2)]).json()["license"]
    assert first["capacity"]["devices"] == 10
    inst.redeem("91379040", count=1)
    r = inst.license("LD-1", [("91379040", 1)])
    assert r.status_code == 201
    assert inst.view()["capacity"]["devices"] == 5  # not 15: the new license replaced the old
    assert inst.wallet() == {"91379040": 2}  # the old license's 2 units came back
    lics = inst.client.get(inst.base + "/licenses", headers=inst.h()).json()["items"]
    assert [lic["replaced_at"] is None for lic in lics] == [True, False]
    with world.ctx.sessions() as s:
        old_acct = s.scalars(select(Account).where(Account.kind == "ac_license", Account.ref == str(first["id"]))).one()
        assert ledger.balance(s, old_acct.id) == 0
        assert ledger.unbalanced_transactions(s) == [] and ledger.negative_accounts(s) == []


def test_the_default_license_is_what_the_installation_needs_not_the_whole_wallet(inst: Inst) -> None:
    # R-AC-1, R-AC-3: without packages, the calculator's answer for the registered devices and the
    # monitored Attendance users, at least the current license's packages; never the whole wallet.
    inst.redeem("91379040", count=40)
    inst.redeem("91379041", count=2)
    for serial in ["LD-1", "D-2", "D-3", "D-4", "D-5"]:
        inst.add_device(serial)
    preview = inst.post("/licenses/preview", {})
    assert preview.status_code == 200, preview.text
    plan = preview.json()
    assert plan["default"] is True and plan["need"] == {"devices": 5, "monitored_attendance_users": 0}
    assert [(p["part_number"], p["quantity"]) for p in plan["packages"]] == [("91379040", 1)]  # 5 devices: 1 package
    assert plan["moves"] == [{"part_number": "91379040", "alt_part_numbers": ["01372-001"], "back_to_wallet": 0,
                              "from_wallet": 1, "wallet_before": 40, "wallet_after": 39}]
    assert inst.wallet() == {"91379040": 40, "91379041": 2}  # the preview moves nothing
    r = inst.license("LD-1")
    assert r.status_code == 201, r.text
    assert r.json()["plan"] == plan
    assert [(p["part_number"], p["quantity"]) for p in r.json()["license"]["packages"]] == [("91379040", 1)]
    assert inst.wallet() == {"91379040": 39, "91379041": 2}

    # A sixth device: the current license's package plus one more (10 devices), not 40.
    inst.add_device("D-6")
    r = inst.license("LD-1")
    assert [(p["part_number"], p["quantity"]) for p in r.json()["license"]["packages"]] == [("91379040", 2)]
    assert inst.wallet() == {"91379040": 38, "91379041": 2}
    # Two monitored Attendance users (the trial's one is not enough): one +25 package.
    inst.activate("LD-1")
    for name in ("Ann",):
        assert inst.post("/attendance-users", {"name": name, "monitored": True}).status_code == 201
    assert inst.post("/attendance-users", {"name": "Bob", "monitored": False}).status_code == 201
    assert inst.post("/licenses/preview", {}).json()["packages"] == [
        {"part_number": "91379040", "alt_part_numbers": ["01372-001"], "quantity": 2}]  # 1 monitored: covered
    # Fewer devices than the license holds: the current license's packages are kept (never less).
    plan = inst.post("/licenses/preview", {"packages": None}).json()
    assert [(p["part_number"], p["quantity"]) for p in plan["packages"]] == [("91379040", 2)]
    # Taking more needs the packages named.
    r = inst.license("LD-1", [("91379040", 40)])
    assert r.status_code == 201 and inst.wallet() == {"91379040": 0, "91379041": 2}


def test_the_default_license_refuses_when_the_trial_covers_the_need(inst: Inst) -> None:
    # R-AC-2: one device and no monitored user are within the trial: the default holds nothing.
    inst.redeem("91379040", count=3)
    inst.add_device("LD-1")
    r = inst.license("LD-1")
    assert r.status_code == 400 and error_code(r) == "license_packages_empty"
    assert "1 registered device and 0 monitored Attendance users" in r.json()["error"]["message"]
    assert inst.wallet() == {"91379040": 3}
    inst.add_device("D-2")  # two devices: over the trial, one package
    assert [(p["part_number"], p["quantity"]) for p in inst.license("LD-1").json()["license"]["packages"]] == [
        ("91379040", 1)]


def test_the_default_license_needs_its_units_in_the_wallet(inst: Inst) -> None:
    # R-AC-1: 11 devices need 3 x 91379040; two in the wallet are not enough, and nothing moves.
    inst.redeem("91379040", count=2)
    for i in range(11):
        inst.add_device(f"D-{i:02d}")
    r = inst.license("D-00")
    assert r.status_code == 409 and error_code(r) == "insufficient_units"
    assert r.json()["error"]["detail"]["missing"] == 1
    assert inst.wallet() == {"91379040": 2} and inst.view()["state"] == "trial"


def test_axis_part_numbers_name_the_same_packages(world: Any, inst: Inst) -> None:
    # R-AC-1: each package is sold as 2N 9137904x and as Axis 0137x-001; either names it.
    for axis in ("01372-001", "01373-001", "01374-001"):
        inst.redeem(axis)  # minted under the Axis number: the 2N package's units
    assert inst.wallet() == {"91379040": 1, "91379041": 1, "91379042": 1}
    inst.add_device("LD-1")
    r = inst.license("LD-1", [("01372-001", 1), ("91379041", 1), (" 01374-001", 1)])
    assert r.status_code == 201, r.text
    assert r.json()["license"]["packages"] == [
        {"part_number": "91379040", "alt_part_numbers": ["01372-001"], "quantity": 1},
        {"part_number": "91379041", "alt_part_numbers": ["01373-001"], "quantity": 1},
        {"part_number": "91379042", "alt_part_numbers": ["01374-001"], "quantity": 1}]
    assert r.json()["license"]["capacity"]["devices"] == 5 and r.json()["license"]["capacity"]["integration"]
    assert inst.wallet() == {"91379040": 0, "91379041": 0, "91379042": 0}
    # The same package under both numbers adds up; a number next to the real ones is refused.
    inst.redeem("91379040", count=2)
    r = inst.license("LD-1", [("01372-001", 1), ("91379040", 2)])
    assert r.status_code == 201 and r.json()["license"]["packages"][0]["quantity"] == 3
    r = inst.license("LD-1", [("01372-002", 1)])
    assert r.status_code == 400 and error_code(r) == "sku_not_access_commander"
    calc = inst.client.post(f"{API}/ac/calculate", json={"devices": 17, "attendance_users": 69, "integration": True},
                            headers=inst.h()).json()
    assert [(p["part_number"], p["alt_part_numbers"], p["quantity"]) for p in calc["packages"]] == [
        ("91379040", ["01372-001"], 4), ("91379041", ["01373-001"], 3), ("91379042", ["01374-001"], 1)]


def test_a_license_needs_the_units_in_the_wallet(inst: Inst) -> None:
    inst.redeem("91379040", count=1)
    inst.add_device("LD-1")
    r = inst.license("LD-1", [("91379040", 3)])
    assert r.status_code == 409 and error_code(r) == "insufficient_units"
    assert r.json()["error"]["detail"]["missing"] == 2
    assert inst.view()["state"] == "trial" and inst.wallet() == {"91379040": 1}
    r = inst.license("LD-1", [("9137958", 1)])
    assert r.status_code == 400 and error_code(r) == "sku_not_access_commander"


def test_a_retried_license_request_moves_nothing_twice(inst: Inst) -> None:
    inst.redeem("91379040", count=2)
    inst.add_device("LD-1")
    headers = auth(inst.owner.token, "same-key")
    body = {"license_device": "LD-1", "packages": [{"part_number": "91379040", "quantity": 1}]}
    a = inst.client.post(inst.base + "/licenses", json=body, headers=headers)
    b = inst.client.post(inst.base + "/licenses", json=body, headers=headers)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    assert b.headers.get("Idempotent-Replayed") == "true"
    assert inst.wallet() == {"91379040": 1}


def test_activation_order_license_device_first(inst: Inst) -> None:
    # R-AC-7: after a new license, the license device is activated first; others are refused.
    inst.redeem("91379040", count=1)
    inst.add_device("LD-1")
    inst.add_device("D-2")
    inst.license("LD-1")
    r = inst.activate("D-2")
    assert r.status_code == 409 and error_code(r) == "license_device_first"
    assert "LD-1" in r.json()["error"]["message"]
    assert r.json()["error"]["detail"] == {"serial": "D-2", "license_device": "LD-1"}
    assert inst.activate("LD-1").status_code == 200
    assert inst.activate("D-2").status_code == 200


def test_after_a_new_license_no_device_is_active_until_its_license_device_is(inst: Inst) -> None:
    # R-AC-7, R-AC-8: a new license (here a smaller one) makes every device inactive; the license
    # device is activated first, then the others again, within the new license's 5 devices.
    inst.redeem("91379040", count=2)
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 2)])
    serials = ["LD-1"] + [f"D-{i}" for i in range(2, 9)]
    for s in serials[1:]:
        inst.add_device(s)
    for s in serials:
        assert inst.activate(s).status_code == 200
    assert inst.view()["devices"]["active"] == 8
    r = inst.license("LD-1", [("91379040", 1)])  # 5 devices owned
    assert r.json()["plan"]["devices_made_inactive"] == sorted(serials)
    v = inst.view()
    assert v["devices"]["active"] == 0 and not any(d["active"] for d in v["device_list"])
    assert "Activate the license device LD-1 first" in v["next_step"]
    r = inst.activate("D-2")
    assert r.status_code == 409 and error_code(r) == "license_device_first"
    assert inst.activate("LD-1").status_code == 200
    assert inst.view()["next_step"] is None
    for s in ["D-2", "D-3", "D-4", "D-5"]:
        assert inst.activate(s).status_code == 200
    r = inst.activate("D-6")
    assert r.status_code == 409 and error_code(r) == "device_limit_reached"
    assert r.json()["error"]["detail"] == {"serial": "D-6", "owned": 5, "active": 5}
    assert r.json()["error"]["message"].startswith("The license owns 5 devices and 5 are active.")


def test_limit_messages_say_one_device_and_one_attendance_user(inst: Inst) -> None:
    # R-AC-8 on the trial: the numbers read as a user would read them.
    inst.add_device("D-1")
    inst.add_device("D-2")
    assert inst.activate("D-1").status_code == 200
    r = inst.activate("D-2")
    assert r.json()["error"]["message"].startswith("The license owns 1 device and 1 is active.")
    assert inst.post("/attendance-users", {"name": "Ann", "monitored": True}).status_code == 201
    r = inst.post("/attendance-users", {"name": "Bob", "monitored": True})
    assert r.json()["error"]["message"].startswith("The license owns 1 Attendance user and 1 is monitored.")


def test_attendance_and_integration_follow_the_license(inst: Inst) -> None:
    # R-AC-8
    inst.redeem("91379041", count=1)
    inst.redeem("91379042", count=1)
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379041", 1), ("91379042", 1)])
    assert inst.post("/integration/sync", {"source": "csv"}).status_code == 200
    for i in range(25):
        assert inst.post("/attendance-users", {"name": f"U{i}", "monitored": True}).status_code == 201
    r = inst.post("/attendance-users", {"name": "U25", "monitored": True})
    assert r.status_code == 409 and error_code(r) == "attendance_limit_reached"
    assert r.json()["error"]["detail"] == {"owned": 25, "monitored": 25}


@pytest.mark.parametrize(("connected", "period"), [
    (timedelta(hours=23, minutes=59), timedelta(days=1)),
    (timedelta(hours=24), timedelta(days=10)),
    (timedelta(days=30), timedelta(days=10)),
    (timedelta(days=30, minutes=1), 1),  # calendar months from here on
    (timedelta(days=180), 1),
    (timedelta(days=180, minutes=1), 3),
])
def test_protective_period_from_connected_time(world: Any, client: Any, connected: timedelta,
                                               period: timedelta | int) -> None:
    # R-AC-5: the table, at and around its boundaries. The device heartbeats within the
    # installation's timeout (1 day here, to keep the test short) until it disconnects.
    inst = Inst(world, client, timeout=86400)
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 1)])
    clock = world.ctx.clock
    added = clock.now()
    step = timedelta(hours=12)
    while clock.now() - added + step <= connected:
        clock.advance(step)
        inst.heartbeat("LD-1")
    clock.set(added + connected)
    inst.heartbeat("LD-1")
    inst.state("LD-1", False)
    v = inst.view()
    assert v["state"] == "protective" and v["connected_seconds"] == int(connected.total_seconds())
    disconnected = added + connected
    expected = (disconnected + period if isinstance(period, timedelta)
                else add_months(disconnected, period))
    assert v["protective_until"] == expected.isoformat()
    clock.set(expected - timedelta(seconds=1))
    assert inst.view()["state"] == "protective"
    clock.set(expected)
    assert inst.view()["state"] == "suspended"


def test_suspension_makes_every_device_inactive_and_recovery_by_the_license_device(world: Any, inst: Inst) -> None:
    # R-AC-6: suspended -> every device inactive; recover by reconnecting and activating it.
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.add_device("D-2")
    inst.license("LD-1", [("91379040", 1)])
    inst.activate("LD-1")
    inst.activate("D-2")
    inst.state("LD-1", False)
    clock = world.ctx.clock
    clock.advance(timedelta(days=1))  # connected < 24 h -> 1 day
    v = inst.view()
    assert v["state"] == "suspended"
    assert [d["active"] for d in v["device_list"]] == [False, False]
    r = inst.activate("D-2")
    assert r.status_code == 409 and error_code(r) == "license_suspended"
    r = inst.activate("LD-1")
    assert r.status_code == 409 and error_code(r) == "license_device_not_connected"
    inst.state("LD-1", True)
    assert inst.view()["state"] == "suspended"  # reconnecting after the end is not enough
    assert inst.activate("LD-1").status_code == 200
    v = inst.view()
    assert v["state"] == "active" and [d["active"] for d in v["device_list"]] == [True, True]


def test_recovery_by_a_new_license_for_another_device(world: Any, inst: Inst) -> None:
    # R-AC-6, R-AC-7: a new license generated for another device; its license device comes first,
    # then the devices that were active are activated again, within the license.
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.add_device("LD-2")
    inst.add_device("D-3")
    inst.license("LD-1", [("91379040", 1)])
    for serial in ("LD-1", "D-3"):
        assert inst.activate(serial).status_code == 200
    inst.state("LD-1", False)
    world.ctx.clock.advance(timedelta(days=2))
    inst.heartbeat("LD-2")
    inst.heartbeat("D-3")
    assert inst.view()["state"] == "suspended"
    r = inst.license("LD-2")
    assert r.status_code == 201
    assert r.json()["plan"]["devices_made_inactive"] == ["D-3", "LD-1"]  # what the admin had activated
    v = inst.view()
    assert v["state"] == "active" and v["license_device"] == "LD-2"
    assert [(d["serial"], d["active"], d["activated"]) for d in v["device_list"]] == [
        ("D-3", False, False), ("LD-1", False, False), ("LD-2", False, False)]
    assert v["devices"]["active"] == 0
    r = inst.activate("D-3")
    assert r.status_code == 409 and error_code(r) == "license_device_first"
    assert inst.activate("LD-2").status_code == 200
    assert inst.activate("D-3").status_code == 200
    assert inst.view()["devices"]["active"] == 2


def test_recovery_by_the_same_license_device_keeps_the_devices_as_they_were(world: Any, inst: Inst) -> None:
    # R-AC-6: reconnecting and activating the same license device is no new license.
    inst.redeem("91379040")
    for serial in ("LD-1", "D-2", "D-3"):
        inst.add_device(serial)
    inst.license("LD-1", [("91379040", 1)])
    for serial in ("LD-1", "D-2"):
        assert inst.activate(serial).status_code == 200
    inst.state("LD-1", False)
    world.ctx.clock.advance(timedelta(days=1))
    inst.state("LD-1", True)
    assert inst.activate("LD-1").status_code == 200
    v = inst.view()
    assert [(d["serial"], d["active"]) for d in v["device_list"]] == [("D-2", True), ("D-3", False), ("LD-1", True)]


def test_a_suspended_license_still_shows_what_it_grants(world: Any, inst: Inst) -> None:
    # R-AC-3, R-AC-6: while suspended, owned is the license's grants beside "all devices inactive"
    # and the way to recover; what may be used now is nothing.
    inst.redeem("91379040", count=2)
    inst.redeem("91379041")
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 2), ("91379041", 1)])
    inst.activate("LD-1")
    inst.state("LD-1", False)
    clock = world.ctx.clock
    clock.advance(timedelta(days=1) - timedelta(seconds=1))
    v = inst.view()
    assert v["state"] == "protective" and v["all_devices_inactive"] is False and v["next_step"] is None
    clock.advance(timedelta(seconds=1))
    v = inst.view()
    assert v["state"] == "suspended" and v["all_devices_inactive"] is True
    assert v["devices"]["owned"] == 10 and v["attendance_users"]["owned"] == 25
    assert v["granted"]["devices"] == 10 and v["capacity"]["devices"] == 0
    assert v["devices"]["active"] == 0
    assert v["next_step"] == ("All devices are inactive. To recover, connect the license device LD-1 and activate "
                              "it, or add a new license generated for another connected device.")
    inst.state("LD-1", True)
    assert "To recover, activate the license device LD-1" in inst.view()["next_step"]


def test_reconnecting_before_the_end_ends_the_protective_period(world: Any, inst: Inst) -> None:
    # R-AC-5
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 1)])
    inst.state("LD-1", False)
    world.ctx.clock.advance(timedelta(hours=23))
    assert inst.view()["state"] == "protective"
    inst.state("LD-1", True)
    assert inst.view()["state"] == "active"


def test_a_missing_heartbeat_counts_as_a_disconnect(world: Any, inst: Inst) -> None:
    # R-AC-5: the heartbeat's absence for the configured time (300 s here) is a disconnect.
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 1)])
    clock = world.ctx.clock
    clock.advance(timedelta(seconds=300))
    assert inst.view()["state"] == "active"
    clock.advance(timedelta(seconds=1))
    v = inst.view()
    assert v["state"] == "protective" and v["license_device_connected"] is False


def test_viewers_cannot_change_the_license(world: Any, inst: Inst) -> None:
    # R-AC-6: only administrators may change the license.
    from entitle.tenancy.models import Role
    from helpers import join

    viewer = join(world, inst.org, "viewer@example.com", Role.viewer)
    inst.add_device("LD-1")
    r = inst.client.post(inst.base + "/licenses", json={"license_device": "LD-1"},
                         headers=auth(viewer.token, "v-1"))
    assert r.status_code == 403 and error_code(r) == "role_insufficient"


def test_system_users_are_unlimited_but_a_tier_limits_administrators(inst: Inst) -> None:
    # R-AC-2: unlimited system users on the trial; R-AC-1: the Basic tier allows 1 administrator.
    for i in range(5):
        assert inst.post("/system-users", {"name": f"admin{i}", "admin": True}).status_code == 201
    basic = [s.part_number for s in _ac_skus(inst) if s.grants.get("tier") == "basic"][0]
    inst.redeem(basic)
    inst.add_device("LD-1")
    assert inst.license("LD-1", [(basic, 1)]).status_code == 201
    r = inst.post("/system-users", {"name": "sixth", "admin": True})
    assert r.status_code == 409 and error_code(r) == "admin_limit_reached"
    assert r.json()["error"]["detail"] == {"owned": 1, "admins": 5}
    assert inst.post("/system-users", {"name": "sixth", "admin": False}).status_code == 201  # users: unlimited
    users = inst.client.get(inst.base + "/system-users", headers=inst.h()).json()["items"]
    assert len(users) == 6 and sum(u["admin"] for u in users) == 5  # nothing already there was lost


def _ac_skus(inst: Inst) -> list[Any]:
    from entitle.access_commander import services as ac

    with inst.world.ctx.sessions() as s:
        return ac.ac_skus(s)


def _signed(world: Any, inst: Inst, license_device: str, packages: list[tuple[str, int]], at: Any) -> str:
    """A license file for ``inst`` that Entitle signed but never recorded (made elsewhere, or
    before a restore), issued ``at``."""
    from entitle.access_commander import services as ac
    from entitle.db import transaction
    from entitle.signing import services as signing
    from entitle_device import access_commander as rules

    with transaction(world.ctx.sessions) as s:
        skus = ac.sku_index(ac.ac_skus(s))
        payload = rules.license_payload(organization=str(inst.org), installation=inst.uid,
                                        license_device=license_device,
                                        packages=[(skus[p].part_number, skus[p].grants, q) for p, q in packages])
        text, _ = signing.sign(s, secret=world.ctx.secret, now=at, subject=[inst.uid, license_device],
                               payload=payload, expires=None)
    return text


def _tampered(text: str) -> str:
    """The file with its payload's quantity raised (re-encoded): the signature no longer matches."""
    import base64
    import json

    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("Payload: "))
    raw = lines[at].removeprefix("Payload: ").strip()
    payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    payload["capacity"]["devices"] = 500
    encoded = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    lines[at] = "Payload: " + encoded.decode().rstrip("=") + "\n"
    return "".join(lines)


def test_adding_a_license_file(world: Any, client: Any, engine: Any, inst: Inst) -> None:
    # R-AC-3, R-AC-4, R-CORE-9: "License adding" reads a file generated for this installation and
    # its license device; it replaces the current license (units, history); older, foreign and
    # changed files are refused with their own codes.
    from helpers import history_of

    clock = world.ctx.clock
    inst.redeem("91379040", count=3)
    inst.add_device("LD-1")
    inst.add_device("D-2")
    first = inst.license("LD-1", [("91379040", 1)]).json()
    clock.advance(timedelta(minutes=1))
    second = inst.license("LD-1", [("91379040", 1)]).json()
    inst.activate("LD-1")
    inst.activate("D-2")

    def add(text: str) -> Any:
        return inst.post("/licenses/file", {"license_file": text})

    r = add(second["license_file"])  # the current license's own file: nothing changes
    assert r.status_code == 200 and r.json()["added"] is False and r.json()["license"]["id"] == second["license"]["id"]
    assert inst.view()["devices"]["active"] == 2
    r = add(first["license_file"])
    assert r.status_code == 409 and error_code(r) == "license_replaced"
    other = Inst(world, client, "Other", "other@example.com")
    other.redeem("91379040")
    other.add_device("LD-9")
    r = add(other.license("LD-9", [("91379040", 1)]).json()["license_file"])
    assert r.status_code == 400 and error_code(r) == "license_not_for_this_system"
    tampered = _tampered(second["license_file"])
    assert error_code(add(tampered)) == "license_bad_signature"
    older = _signed(world, inst, "LD-1", [("91379040", 2)], clock.now() - timedelta(seconds=30))
    r = add(older)  # issued before the current license (second): going back is refused
    assert r.status_code == 409 and error_code(r) == "license_older"
    clock.advance(timedelta(minutes=1))
    r = add(_signed(world, inst, "NOT-HERE", [("91379040", 1)], clock.now()))
    assert r.status_code == 409 and error_code(r) == "license_device_unknown"
    assert r.json()["error"]["detail"] == {"license_device": "NOT-HERE"}
    assert inst.wallet() == {"91379040": 2} and inst.view()["license"]["id"] == second["license"]["id"]

    # A newer file for this installation's device D-2: it becomes the license, taking its units
    # from the wallet and giving the replaced license's back; D-2 is activated first.
    newer = _signed(world, inst, "D-2", [("01372-001", 3)], clock.now())
    before = len(history_of(engine, inst.org))
    r = add(newer)
    assert r.status_code == 201, r.text
    assert r.json()["added"] is True
    lic = r.json()["license"]
    assert lic["license_device"] == "D-2" and lic["packages"][0]["quantity"] == 3
    assert inst.wallet() == {"91379040": 0}
    v = inst.view()
    assert v["license"]["id"] == lic["id"] and v["devices"]["owned"] == 15 and v["devices"]["active"] == 0
    assert v["state"] == "active" and v["license_device_connected"] is True
    assert [a for _, a, _ in history_of(engine, inst.org)[before:]] == ["ac.license.added"]
    assert error_code(inst.activate("LD-1")) == "license_device_first"
    assert inst.activate("D-2").status_code == 200
    r = inst.post("/licenses/check", {"license_file": newer})
    assert r.status_code == 200 and r.json()["id"] == lic["id"]
    assert add(newer).json()["added"] is False  # adding it again changes nothing
    assert error_code(add(second["license_file"])) == "license_replaced"
