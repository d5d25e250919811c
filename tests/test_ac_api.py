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
    r = inst.license("LD-1")
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
    r = inst.license("OFF")
    assert r.status_code == 409 and error_code(r) == "license_device_not_connected"
    r = inst.license("NOPE")
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
    lics = inst.client.get(inst.base + "/licenses", headers=inst.h()).json()
    assert [lic["replaced_at"] is None for lic in lics] == [True, False]
    with world.ctx.sessions() as s:
        old_acct = s.scalars(select(Account).where(Account.kind == "ac_license", Account.ref == str(first["id"]))).one()
        assert ledger.balance(s, old_acct.id) == 0
        assert ledger.unbalanced_transactions(s) == [] and ledger.negative_accounts(s) == []


def test_a_license_without_packages_carries_the_current_one_over_with_the_wallet(inst: Inst) -> None:
    # R-AC-3: the current license's packages plus the wallet's Access Commander units.
    inst.redeem("91379040", count=4)
    inst.add_device("LD-1")
    inst.license("LD-1")
    inst.redeem("91379041", count=1)
    r = inst.license("LD-1")
    assert r.status_code == 201
    assert r.json()["license"]["packages"] == [{"part_number": "91379040", "quantity": 4},
                                               {"part_number": "91379041", "quantity": 1}]


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


def test_a_smaller_license_keeps_what_is_active_and_refuses_more(inst: Inst) -> None:
    # R-AC-8: nothing already active is lost; new activations beyond the count are refused.
    inst.redeem("91379040", count=2)
    inst.add_device("LD-1")
    inst.license("LD-1", [("91379040", 2)])
    serials = ["LD-1"] + [f"D-{i}" for i in range(2, 9)]
    for s in serials[1:]:
        inst.add_device(s)
    for s in serials:
        assert inst.activate(s).status_code == 200
    inst.license("LD-1", [("91379040", 1)])  # 5 devices owned, 8 active
    assert inst.activate("LD-1").status_code == 200  # the license device is confirmed, not counted twice
    v = inst.view()
    assert v["devices"]["active"] == 8 and v["devices"]["owned"] == 5
    inst.add_device("D-9")
    r = inst.activate("D-9")
    assert r.status_code == 409 and error_code(r) == "device_limit_reached"
    assert r.json()["error"]["detail"] == {"serial": "D-9", "owned": 5, "active": 8}


def test_attendance_and_integration_follow_the_license(inst: Inst) -> None:
    # R-AC-8
    inst.redeem("91379041", count=1)
    inst.redeem("91379042", count=1)
    inst.add_device("LD-1")
    inst.license("LD-1")
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
    inst.license("LD-1")
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
    inst.license("LD-1")
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
    # R-AC-6: a new license generated for another device.
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.add_device("LD-2")
    inst.license("LD-1")
    inst.state("LD-1", False)
    world.ctx.clock.advance(timedelta(days=2))
    inst.heartbeat("LD-2")
    assert inst.view()["state"] == "suspended"
    assert inst.license("LD-2").status_code == 201
    v = inst.view()
    assert v["state"] == "active" and v["license_device"] == "LD-2"
    assert inst.activate("LD-2").status_code == 200


def test_reconnecting_before_the_end_ends_the_protective_period(world: Any, inst: Inst) -> None:
    # R-AC-5
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.license("LD-1")
    inst.state("LD-1", False)
    world.ctx.clock.advance(timedelta(hours=23))
    assert inst.view()["state"] == "protective"
    inst.state("LD-1", True)
    assert inst.view()["state"] == "active"


def test_a_missing_heartbeat_counts_as_a_disconnect(world: Any, inst: Inst) -> None:
    # R-AC-5: the heartbeat's absence for the configured time (300 s here) is a disconnect.
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.license("LD-1")
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
    users = inst.client.get(inst.base + "/system-users", headers=inst.h()).json()
    assert len(users) == 6 and sum(u["admin"] for u in users) == 5  # nothing already there was lost


def _ac_skus(inst: Inst) -> list[Any]:
    from entitle.access_commander import services as ac

    with inst.world.ctx.sessions() as s:
        return ac.ac_skus(s)
