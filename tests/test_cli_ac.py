"""`entitle ac`: Access Commander from the console (SPEC §2), through Typer's CliRunner.

The commands run against the test database with the test's frozen clock (the console's context is
built with it), so the API's answers for the same moment can be compared with ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import TEST_SECRET_KEY, World, auth
from entitle.access_commander import calculator
from entitle.access_commander import services as ac_services
from entitle.actors import operator
from entitle.catalog import services as catalog
from entitle.cli import common
from entitle.cli.main import app
from entitle.config import get_settings
from entitle.context import Context
from entitle.db import transaction
from helpers import CliDriver, org_with_owner

API = "/api/v1"


class Cli(CliDriver):
    prefix = ("ac",)


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    # The console shares the server's secret key (to sign) and, here, the test's clock.
    monkeypatch.setenv("ENTITLE_SECRET_KEY", TEST_SECRET_KEY)
    get_settings.cache_clear()
    real_build = common.build
    monkeypatch.setattr(common, "build", lambda settings: real_build(settings, ctx.clock))
    yield Cli(ctx.settings.database_url)
    get_settings.cache_clear()


class Inst:
    """An organization with one installation, driven through `entitle ac`."""

    def __init__(self, world: World, cli: Cli, name: str = "Plant") -> None:
        self.world, self.cli = world, cli
        self.org = str(world.org(f"Org {name}"))
        created = cli.json("installation", "create", "--org", self.org, "--name", name)
        self.id = str(created["installation"]["id"])
        self.uid = created["installation"]["uid"]
        self.at = ["--org", self.org, "--installation", self.id]

    def __call__(self, *args: str) -> Any:
        """`entitle ac ARGS --org … --installation … --json`, expected to succeed."""
        return self.cli.json(*args, *self.at)

    def refused(self, code: str, *args: str) -> dict[str, Any]:
        return self.cli.refused(code, *args, *self.at)

    def device(self, serial: str, connected: bool = True) -> None:
        self("device", "add", "--serial", serial, "--type", "ip_intercom")
        if connected:
            assert self("device", "state", "--serial", serial, "--connected")["connected"] is True

    def redeem(self, part: str, count: int = 1) -> None:
        for key in self.world.mint(part, count=count):
            assert self.cli.top("redeem", "--org", self.org, "--key", key).exit_code == 0

    def wallet(self) -> dict[str, int]:
        result = self.cli.top("wallet", "show", "--org", self.org, "--json")
        return {line["part_number"]: line["units"] for line in json.loads(result.stdout)["lines"]}

    def status(self) -> dict[str, Any]:
        return self.cli.json("status", *self.at)  # type: ignore[no-any-return]


@pytest.fixture
def inst(world: World, cli: Cli) -> Inst:
    return Inst(world, cli)


# --- the calculator ------------------------------------------------------------------------------

def test_calculate_gives_the_packages_and_the_smallest_tier(world: World, cli: Cli, client: Any) -> None:
    # R-AC-1: 17 devices -> 4 x 91379040; 69 Attendance users -> 3 x 91379041.
    body = cli.json("calculate", "--devices", "17", "--attendance-users", "69")
    assert [(p["part_number"], p["quantity"]) for p in body["packages"]] == [("91379040", 4), ("91379041", 3)]
    assert body["capacity"]["devices"] == 20 and body["capacity"]["attendance_users"] == 75
    assert body["tier"]["part_number"] == "AC-TIER-ADVANCED"
    # The same dict as the API's, and from the same catalog: the database's.
    assert body.pop("catalog") == "database"
    _, owner = org_with_owner(world, "Acme", "owner@example.com")
    r = client.post(f"{API}/ac/calculate", json={"devices": 17, "attendance_users": 69}, headers=auth(owner.token))
    assert r.status_code == 200 and r.json() == body

    text = cli.ok("calculate", "--devices", "17", "--attendance-users", "69")
    assert "4 " in text and "91379040" in text and "3 " in text and "91379041" in text
    assert "Smallest tier: AC-TIER-ADVANCED" in text

    body = cli.json("calculate", "--devices", "3", "--integration")
    assert [(p["part_number"], p["quantity"]) for p in body["packages"]] == [("91379040", 1), ("91379042", 1)]
    assert body["tier"]["part_number"] == "AC-TIER-PRO"
    assert "no package is needed" in cli.ok("calculate", "--devices", "1")
    cli.refused("need_invalid", "calculate", "--devices", "-1")


def test_calculate_reads_the_database_catalog_and_says_so(world: World, cli: Cli) -> None:
    # R-AC-1 with the catalog in the database, which here also sells +10 devices: for 17 devices
    # 2 x AC-10 covers as tightly as 4 x 91379040 (20), with fewer units.
    with transaction(world.ctx.sessions) as s:
        catalog.load(s, catalog.parse_obj({"products": [{
            "code": "access-commander", "name": "2N Access Commander", "model": "access_commander",
            "skus": [{"part_number": "AC-10", "name": "+10 devices", "grant_kind": "capacity",
                      "grants": {"devices": 10}}]}]}), actor=operator(), now=world.now)
    body = cli.json("calculate", "--devices", "17")
    assert body["catalog"] == "database"
    assert [(p["part_number"], p["quantity"]) for p in body["packages"]] == [("AC-10", 2)]
    text = cli("calculate", "--devices", "17")
    assert text.exit_code == 0 and "AC-10" in text.stdout
    assert text.stderr.startswith("catalog: database (")


def test_calculate_uses_the_shipped_catalog_when_the_database_has_none(ctx: Context, cli: Cli, tmp_path: Path) -> None:
    # A migrated database without Access Commander's packages (no `catalog load` yet), and a file
    # that is no database at all: the catalog Entitle ships, and the reason on stderr.
    body = cli.json("calculate", "--devices", "17")
    assert body["catalog"] == "default" and body["packages"] == [
        {"part_number": "91379040", "alt_part_numbers": ["01372-001"], "name": "Access Commander license for +5 devices",
         "quantity": 4}]
    assert "has no Access Commander packages" in cli("calculate", "--devices", "17").stderr
    empty = tmp_path / "empty.db"
    empty.touch()
    text = CliRunner().invoke(app, ["ac", "calculate", "--devices", "17", "--database-url", f"sqlite:///{empty}"])
    assert text.exit_code == 0 and text.stderr.startswith("catalog: default (") and "entitle migrate" in text.stderr


def test_the_shipped_catalog_is_the_one_first_run_loads(world: World) -> None:
    # The calculator's catalog without a database is the default catalog as a database holds it.
    with world.ctx.sessions() as s:
        in_database = sorted(ac_services.catalog_skus(s), key=lambda sku: sku.part_number)
    assert list(calculator.default_catalog()) == in_database


# --- installations and status --------------------------------------------------------------------

def test_installation_create_list_and_status_on_the_trial(world: World, cli: Cli, client: Any) -> None:
    # R-AC-2: a new installation runs on the trial.
    org_id, owner = org_with_owner(world, "Acme", "owner@example.com")
    org = str(org_id)
    created = cli.json("installation", "create", "--org", org, "--name", "Plant", "--uid", "SYS-AC-1",
                       "--heartbeat-timeout", "600")
    assert created["installation"]["uid"] == "SYS-AC-1"
    assert created["installation"]["heartbeat_timeout_seconds"] == 600
    assert created["token"].startswith("eac_")
    # The token reports device state to the API.
    inst_id = str(created["installation"]["id"])
    cli.json("device", "add", "--org", org, "--installation", inst_id, "--serial", "D-1", "--type", "access_unit")
    r = client.post(f"{API}/ac/state", json={"serial": "D-1", "connected": True},
                    headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 200 and r.json()["connected"] is True

    text = cli.ok("installation", "create", "--org", org, "--name", "Second")
    assert "Device-report token: eac_" in text and "trial" in text
    listed = cli.json("installation", "list", "--org", org)
    assert [i["name"] for i in listed] == ["Plant", "Second"]
    assert "SYS-AC-1" in cli.ok("installation", "list", "--org", org)

    # status --json is the API's overview; the installation by id or by uid.
    view = cli.json("status", "--org", org, "--installation", inst_id)
    assert cli.json("status", "--org", org, "--installation", "SYS-AC-1") == view
    api = client.get(f"{API}/orgs/{org}/ac/installations/{inst_id}", headers=auth(owner.token))
    assert api.status_code == 200 and api.json() == view
    assert view["state"] == "trial" and view["license"] is None
    assert view["capacity"] == {"devices": 1, "attendance_users": 1, "admins": None, "integration": False, "tier": None}
    text = cli.ok("status", "--org", org, "--installation", "SYS-AC-1")
    assert "TRIAL" in text and "none (trial)" in text and "D-1" in text
    assert "1 required, 0 active, 1 owned" in text


def test_installation_refusals(world: World, cli: Cli) -> None:
    org = str(world.org("Acme"))
    other = str(world.org("Other"))
    cli.json("installation", "create", "--org", org, "--name", "Plant", "--uid", "SYS-AC-1")
    cli.refused("installation_exists", "installation", "create", "--org", org, "--name", "Again", "--uid", "SYS-AC-1")
    cli.refused("heartbeat_timeout_invalid", "installation", "create", "--org", org, "--name", "P",
                "--heartbeat-timeout", "5")
    cli.refused("name_invalid", "installation", "create", "--org", org, "--name", "  ")
    cli.refused("organization_not_found", "installation", "create", "--org", "999", "--name", "P")
    cli.refused("organization_not_found", "installation", "list", "--org", "999")
    cli.refused("organization_not_found", "status", "--org", "999", "--installation", "1")
    cli.refused("installation_not_found", "status", "--org", org, "--installation", "NOPE")
    # Another organization's installation, by id or uid, is not found.
    body = cli.refused("installation_not_found", "status", "--org", other, "--installation", "SYS-AC-1")
    assert body["detail"] == {"installation": "SYS-AC-1"}
    inst_id = str(cli.json("installation", "list", "--org", org)[0]["id"])
    cli.refused("installation_not_found", "status", "--org", other, "--installation", inst_id)
    assert cli.json("installation", "list", "--org", other) == []
    assert "no Access Commander installation" in cli.ok("installation", "list", "--org", other)


# --- devices -------------------------------------------------------------------------------------

def test_device_add_state_activate_deactivate(inst: Inst) -> None:
    # R-AC-2: the trial allows one active device.
    added = inst("device", "add", "--serial", "D-1", "--type", "access_unit", "--name", "Front door")
    assert (added["serial"], added["type"], added["name"]) == ("D-1", "access_unit", "Front door")
    assert added["active"] is False and added["connected"] is False
    assert inst("device", "state", "--serial", "D-1", "--connected")["connected"] is True
    assert inst("device", "activate", "--serial", "D-1")["active"] is True
    inst.device("D-2")
    body = inst.refused("device_limit_reached", "device", "activate", "--serial", "D-2")
    assert body["detail"] == {"serial": "D-2", "owned": 1, "active": 1}
    assert inst("device", "deactivate", "--serial", "D-1")["active"] is False
    assert "Device D-2 activated: active yes" in inst.cli.ok("device", "activate", "--serial", "D-2", *inst.at)
    assert "reported disconnected" in inst.cli.ok("device", "state", "--serial", "D-2", "--disconnected", *inst.at)
    assert "added to installation" in inst.cli.ok("device", "add", "--serial", "D-3", *inst.at)
    view = inst.status()
    assert [(d["serial"], d["active"], d["connected"]) for d in view["device_list"]] == [
        ("D-1", False, True), ("D-2", True, False), ("D-3", False, False)]

    inst.refused("device_exists", "device", "add", "--serial", "D-1")
    body = inst.refused("device_type_invalid", "device", "add", "--serial", "D-9", "--type", "toaster")
    assert "ip_intercom" in body["detail"]["allowed"]
    inst.refused("device_not_found", "device", "activate", "--serial", "NOPE")
    inst.refused("device_not_found", "device", "deactivate", "--serial", "NOPE")
    inst.refused("device_not_found", "device", "state", "--serial", "NOPE", "--connected")


# --- licenses ------------------------------------------------------------------------------------

def test_license_generated_and_replaced_whole(inst: Inst, tmp_path: Path) -> None:
    # R-AC-3: a new license replaces the current one; the replaced one's units go back to the wallet.
    inst.redeem("91379040", count=3)
    inst.device("LD-1")
    first_file = tmp_path / "first.lic"
    first = inst("license", "generate", "--license-device", "LD-1", "--package", "91379040:2",
                 "--out", str(first_file))
    assert first["license"]["capacity"]["devices"] == 10
    assert first["license"]["packages"] == [{"part_number": "91379040", "alt_part_numbers": ["01372-001"], "quantity": 2}]
    assert first_file.read_text() == first["license_file"]
    assert inst.uid in first["license_file"] and "LD-1" in first["license_file"]
    assert [p.name for p in tmp_path.iterdir()] == ["first.lic"]  # no staged file left over
    assert inst.wallet() == {"91379040": 1}
    view = inst.status()
    assert view["state"] == "active" and view["license_device"] == "LD-1"
    assert view["devices"]["owned"] == 10

    # Plain: the file goes to stdout, the summary to stderr.
    second = inst.cli("license", "generate", *inst.at, "--license-device", "LD-1", "--package", "91379040:1")
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith(first["license_file"].splitlines()[0])
    assert "1 × 91379040 (01372-001)" in second.stderr and "activate LD-1 first" in second.stderr
    # What moved: the first license's 2 back, 1 out of the wallet (1 before, 2 after).
    assert "91379040 (01372-001): 1 from the wallet, 2 back from the current license; wallet 1 → 2" in second.stderr
    second_file = tmp_path / "second.lic"
    second_file.write_text(second.stdout)
    assert inst.status()["capacity"]["devices"] == 5  # not 15: replaced, not added
    assert inst.wallet() == {"91379040": 2}  # the first license's 2 units came back

    listed = inst("license", "list")
    assert [lic["replaced_at"] is None for lic in listed] == [True, False]
    assert listed[1]["id"] == first["license"]["id"]
    text = inst.cli.ok("license", "list", *inst.at)
    assert "current" in text and "2 × 91379040" in text

    # The current file checks; the replaced one is refused.
    checked = inst.cli.json("license", "check", str(second_file), *inst.at)
    assert checked["id"] == listed[0]["id"] and checked["replaced_at"] is None
    assert "VALID" in inst.cli.ok("license", "check", str(second_file), *inst.at)
    body = inst.cli.refused("license_replaced", "license", "check", str(first_file), *inst.at)
    assert "replaced_at" in body["detail"]

    # A third license to a file that exists replaces the file too; its status is printed.
    result = inst.cli("license", "generate", *inst.at, "--license-device", "LD-1", "--out", str(first_file))
    assert result.exit_code == 0, result.output
    assert "License file written to" in result.stdout and "1 × 91379040" in result.stdout
    assert "Default packages: what the installation needs now (1 registered device" in result.stdout
    assert inst.wallet() == {"91379040": 2}  # no --package: what the installation needs, not the wallet
    assert inst.cli.json("license", "check", str(first_file), *inst.at)["replaced_at"] is None
    text = inst.cli.ok("status", *inst.at)
    assert "ACTIVE" in text and "LD-1 *" in text and "* license device" in text and "not activated yet" in text


def test_license_generate_refusals_change_nothing(inst: Inst, tmp_path: Path) -> None:
    # R-AC-4: the license device is a connected device of the installation.
    inst.redeem("91379040")
    inst.device("OFF", connected=False)
    inst.device("LD-1")
    inst.refused("license_device_not_connected", "license", "generate", "--license-device", "OFF")
    inst.refused("device_not_found", "license", "generate", "--license-device", "NOPE")
    body = inst.refused("insufficient_units", "license", "generate", "--license-device", "LD-1",
                        "--package", "91379040:3")
    assert body["detail"]["missing"] == 2
    inst.refused("sku_not_access_commander", "license", "generate", "--license-device", "LD-1", "--package", "9137958:1")
    for bad in ("91379040", "91379040:x", ":2"):
        inst.refused("package_invalid", "license", "generate", "--license-device", "LD-1", "--package", bad)
    out = tmp_path / "refused.lic"
    inst.refused("license_device_not_connected", "license", "generate", "--license-device", "OFF", "--out", str(out))
    inst.refused("out_directory_missing", "license", "generate", "--license-device", "LD-1",
                 "--out", str(tmp_path / "missing" / "x.lic"))
    assert list(tmp_path.iterdir()) == []  # no file for a license that was not generated
    assert inst.wallet() == {"91379040": 1}
    assert inst.status()["state"] == "trial" and inst("license", "list") == []
    assert "trial" in inst.cli.ok("license", "list", *inst.at)
    inst.cli.refused("file_unreadable", "license", "check", str(tmp_path / "none.lic"), *inst.at)


def test_license_check_refuses_another_installations_file(world: World, cli: Cli, tmp_path: Path) -> None:
    a, b = Inst(world, cli, "A"), Inst(world, cli, "B")
    a.redeem("91379040")
    a.device("LD-1")
    lic = tmp_path / "a.lic"
    a("license", "generate", "--license-device", "LD-1", "--package", "91379040:1", "--out", str(lic))
    cli.refused("license_not_for_this_system", "license", "check", str(lic), *b.at)
    # A changed file is refused (its signature no longer matches).
    lic.write_text(lic.read_text().replace("LD-1", "LD-2"))
    result = cli("license", "check", str(lic), *a.at, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert json.loads(result.stderr)["error"]["code"] in ("license_bad_signature", "license_malformed")


def test_activation_order_license_device_first(inst: Inst) -> None:
    # R-AC-7: after a new license its license device is activated first; others are refused.
    inst.redeem("91379040")
    inst.device("LD-1")
    inst.device("D-2")
    inst("license", "generate", "--license-device", "LD-1")
    result = inst.cli("device", "activate", "--serial", "D-2", *inst.at, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "license_device_first" and "LD-1" in error["message"]
    assert error["detail"] == {"serial": "D-2", "license_device": "LD-1"}
    text = inst.cli("device", "activate", "--serial", "D-2", *inst.at)
    assert text.exit_code == 1 and "error license_device_first:" in text.stderr and "LD-1" in text.stderr
    assert inst("device", "activate", "--serial", "LD-1")["active"] is True
    assert inst("device", "activate", "--serial", "D-2")["active"] is True


def test_protective_period_and_suspension_in_status(world: World, inst: Inst) -> None:
    # R-AC-5, R-AC-6: on the test's clock, as the server sees it.
    inst.redeem("91379040")
    inst.device("LD-1")
    inst.device("D-2")
    inst("license", "generate", "--license-device", "LD-1")
    inst("device", "activate", "--serial", "LD-1")
    inst("device", "activate", "--serial", "D-2")
    inst("device", "state", "--serial", "LD-1", "--disconnected")
    view = inst.status()
    disconnected = world.ctx.clock.now()
    assert view["state"] == "protective"
    assert view["protective_until"] == (disconnected + timedelta(days=1)).isoformat()  # connected < 24 h
    text = inst.cli.ok("status", *inst.at)
    assert "PROTECTIVE" in text and "protective period ends" in text
    assert (disconnected + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S") in text

    world.ctx.clock.advance(timedelta(days=1))
    view = inst.status()
    assert view["state"] == "suspended" and [d["active"] for d in view["device_list"]] == [False, False]
    assert "SUSPENDED" in inst.cli.ok("status", *inst.at) and "no (kept)" in inst.cli.ok("status", *inst.at)
    inst.refused("license_suspended", "device", "activate", "--serial", "D-2")
    inst.refused("license_device_not_connected", "device", "activate", "--serial", "LD-1")
    inst("device", "state", "--serial", "LD-1", "--connected")
    assert inst("device", "activate", "--serial", "LD-1")["active"] is True  # recovery
    assert inst.status()["state"] == "active"


# --- Attendance users and integration -------------------------------------------------------------

def test_attendance_users_follow_the_license(inst: Inst) -> None:
    # R-AC-8: the trial monitors one Attendance user.
    ann = inst("attendance", "add", "--name", "Ann", "--monitored")
    assert ann["monitored"] is True
    bob = inst("attendance", "add", "--name", "Bob")
    assert bob["monitored"] is False
    body = inst.refused("attendance_limit_reached", "attendance", "monitor", "--user-id", str(bob["id"]))
    assert body["detail"] == {"owned": 1, "monitored": 1}
    inst.refused("attendance_limit_reached", "attendance", "add", "--name", "Cy", "--monitored")
    assert inst("attendance", "monitor", "--user-id", str(ann["id"]), "--off")["monitored"] is False
    text = inst.cli.ok("attendance", "monitor", "--user-id", str(bob["id"]), *inst.at)
    assert f"Attendance user {bob['id']} (Bob): monitored." in text
    assert [(u["name"], u["monitored"]) for u in inst("attendance", "list")] == [("Ann", False), ("Bob", True)]
    assert "Bob" in inst.cli.ok("attendance", "list", *inst.at)
    assert inst.status()["attendance_users"] == {"required": 2, "active": None, "monitored": 1, "owned": 1}
    inst.refused("attendance_user_exists", "attendance", "add", "--name", "Ann")
    inst.refused("attendance_user_not_found", "attendance", "monitor", "--user-id", "999")
    assert "not monitored" in inst.cli.ok("attendance", "add", "--name", "Dee", *inst.at)


def test_attendance_list_of_an_empty_installation(inst: Inst) -> None:
    assert inst("attendance", "list") == []
    assert "No Attendance users yet" in inst.cli.ok("attendance", "list", *inst.at)


def test_sync_needs_the_integration_feature(inst: Inst) -> None:
    # R-AC-8: LDAP / CSV synchronisation only with the integration feature.
    inst.refused("integration_not_licensed", "sync", "--source", "ldap")
    inst.refused("sync_source_invalid", "sync", "--source", "ftp")
    inst.redeem("91379042")
    inst.device("LD-1")
    inst("license", "generate", "--license-device", "LD-1", "--package", "01374-001:1")  # Axis's number
    assert inst("sync", "--source", "csv") == {"source": "csv", "allowed": True}
    assert "allowed" in inst.cli.ok("sync", "--source", "ldap", *inst.at)


def test_system_users_and_the_tiers_administrator_limit(inst: Inst) -> None:
    # R-AC-1: the Basic tier allows 1 administrator; system users themselves are unlimited (R-AC-2).
    first = inst("system-user", "add", "--name", "alice", "--admin")
    assert first["admin"] is True
    inst.redeem("AC-TIER-BASIC")
    inst.device("LD-1")
    inst("license", "generate", "--license-device", "LD-1", "--package", "AC-TIER-BASIC:1")
    inst.refused("admin_limit_reached", "system-user", "add", "--name", "bob", "--admin")
    bob = inst("system-user", "add", "--name", "bob")
    inst.refused("admin_limit_reached", "system-user", "admin", "--user-id", str(bob["id"]))
    assert inst("system-user", "admin", "--user-id", str(first["id"]), "--off")["admin"] is False
    assert inst("system-user", "admin", "--user-id", str(bob["id"]))["admin"] is True
    assert [(u["name"], u["admin"]) for u in inst("system-user", "list")] == [("alice", False), ("bob", True)]


def test_license_export_writes_the_signed_file_again(inst: Inst, tmp_path: Path) -> None:
    inst.redeem("91379040")
    inst.device("LD-1")
    made = inst("license", "generate", "--license-device", "LD-1", "--package", "91379040:1")
    target = tmp_path / "again.lic"
    result = inst.cli("license", "export", *inst.at, "--id", str(made["license"]["id"]), "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text() == made["license_file"]
    missing = inst.cli("license", "export", *inst.at, "--id", "999999")
    assert missing.exit_code == 1 and "error license_not_found:" in missing.stderr


# --- issue 13: the points a customer reads -----------------------------------------------------------

def test_suspended_status_shows_the_grants_and_the_way_to_recover(world: World, inst: Inst) -> None:
    # R-AC-3, R-AC-6: suspended, the license still owns 10 devices and 25 Attendance users.
    inst.redeem("91379040", count=2)
    inst.redeem("91379041")
    inst.device("LD-1")
    inst("license", "generate", "--license-device", "LD-1", "--package", "91379040:2", "--package", "01373-001:1")
    inst("device", "activate", "--serial", "LD-1")
    inst("device", "state", "--serial", "LD-1", "--disconnected")
    world.ctx.clock.advance(timedelta(days=1) - timedelta(seconds=1))
    text = inst.cli.ok("status", *inst.at)
    assert "1 required, 1 active, 10 owned" in text and "all devices inactive" not in text
    world.ctx.clock.advance(timedelta(seconds=1))
    view = inst.status()
    assert view["devices"]["owned"] == 10 and view["attendance_users"]["owned"] == 25
    text = inst.cli.ok("status", *inst.at)
    assert "SUSPENDED" in text and "1 required, 0 active (all devices inactive), 10 owned" in text
    assert "0 monitored, 25 owned" in text
    assert "To recover, connect the license device LD-1 and activate it" in " ".join(text.split())


def test_axis_part_numbers_and_plurals_in_the_console(world: World, inst: Inst) -> None:
    # R-AC-1: --package takes the Axis part number; the license and the calculator show both.
    inst.redeem("01373-001", count=3)
    for serial in ("LD-1", "D-2"):
        inst.device(serial)
    made = inst("license", "generate", "--license-device", "LD-1", "--package", "01373-001:3")
    assert made["license"]["packages"] == [{"part_number": "91379041", "alt_part_numbers": ["01373-001"],
                                            "quantity": 3}]
    assert made["license"]["capacity"]["attendance_users"] == 75 and inst.wallet() == {"91379041": 0}
    text = inst.cli.ok("status", *inst.at)
    assert "3 × 91379041 (01373-001)" in text
    calc = inst.cli.ok("calculate", "--devices", "6", "--attendance-users", "1")
    assert "Packages for 6 devices, 1 Attendance user" in calc and "01372-001" in calc
    assert "Capacity: 10 devices, 1 Attendance user, unlimited admins" in calc
    text = inst.cli.ok("license", "list", *inst.at)
    assert "1 device\n" not in text and "1 devices" not in text
    # Plural forms in refusals: the trial's one device and one Attendance user.
    other = Inst(world, inst.cli, "Trial")
    other.device("T-1")
    other.device("T-2")
    other("device", "activate", "--serial", "T-1")
    result = inst.cli("device", "activate", "--serial", "T-2", *other.at)
    assert "The license owns 1 device and 1 is active." in " ".join(result.stderr.split())
    result = inst.cli("calculate", "--devices", "1")
    assert "The trial covers 1 device, 0 Attendance users" in result.stdout


def test_mint_takes_the_axis_part_number(world: World, cli: Cli) -> None:
    # R-CORE-4, R-AC-1: minting under 01372-001 mints 91379040's keys.
    result = cli.top("keys", "mint", "--sku", "01372-001", "--quantity-per-key", "1", "--count", "1")
    assert result.exit_code == 0, result.output
    assert "Minted 1 key of 91379040, 1 unit each" in result.stderr
    key = result.stdout.split()[0]
    org = str(world.org("Axis buyer"))
    redeemed = cli.top("redeem", "--org", org, "--key", key)
    assert redeemed.exit_code == 0, redeemed.output
    assert "Redeemed 1 unit of 91379040 (also sold as 01372-001)" in redeemed.stdout
    refused = cli.top("keys", "mint", "--sku", "01372-00", "--quantity-per-key", "1", "--count", "1", "--json")
    assert refused.exit_code == 1 and "sku_not_found" in refused.stderr


def test_generate_without_packages_previews_and_takes_only_the_need(inst: Inst) -> None:
    # R-AC-1, R-AC-3: not the 40 units of the wallet; --dry-run moves nothing.
    inst.redeem("91379040", count=40)
    for serial in ("LD-1", "D-2", "D-3", "D-4", "D-5", "D-6"):
        inst.device(serial)
    dry = inst.cli.ok("license", "generate", "--license-device", "LD-1", "--dry-run", *inst.at)
    assert "would hold 2 × 91379040 (01372-001)" in dry and "Nothing was generated." in dry
    assert "91379040 (01372-001): 2 from the wallet; wallet 40 → 38" in dry
    assert inst.wallet() == {"91379040": 40} and inst.status()["license"] is None
    plan = inst("license", "generate", "--license-device", "LD-1", "--dry-run")["plan"]
    assert plan["packages"] == [{"part_number": "91379040", "alt_part_numbers": ["01372-001"], "quantity": 2}]
    made = inst("license", "generate", "--license-device", "LD-1")
    assert made["plan"] == plan and inst.wallet() == {"91379040": 38}
    assert made["license"]["capacity"]["devices"] == 10


def test_device_state_connected_is_one_report(inst: Inst) -> None:
    # R-AC-4, R-AC-5: --connected is evidence heard now, not a lasting state (heartbeat timeout).
    help_text = " ".join(inst.cli("device", "state", "--help").stdout.split())
    assert "one report, not a lasting state" in help_text and "heartbeat timeout" in help_text
    inst("device", "add", "--serial", "D-1")
    text = inst.cli.ok("device", "state", "--serial", "D-1", "--connected", *inst.at)
    assert "This is one report" in text and "longer than 300 seconds" in " ".join(text.split())


def test_license_add_reads_a_file(world: World, cli: Cli, tmp_path: Path) -> None:
    # R-AC-3, R-AC-4: "License adding" from the console; a file of another installation, an older
    # file and a changed one are refused with their codes.
    a, b = Inst(world, cli, "A"), Inst(world, cli, "B")
    a.redeem("91379040", count=2)
    a.device("LD-1")
    first, second = tmp_path / "first.lic", tmp_path / "second.lic"
    a("license", "generate", "--license-device", "LD-1", "--package", "91379040:1", "--out", str(first))
    world.ctx.clock.advance(timedelta(seconds=5))
    a("license", "generate", "--license-device", "LD-1", "--package", "91379040:2", "--out", str(second))
    assert cli.json("license", "add", str(second), *a.at)["added"] is False
    assert "UNCHANGED" in cli.ok("license", "add", str(second), *a.at)
    cli.refused("license_replaced", "license", "add", str(first), *a.at)
    b.device("LD-1")
    cli.refused("license_not_for_this_system", "license", "add", str(second), *b.at)
    changed = tmp_path / "changed.lic"
    changed.write_text(second.read_text().replace("Issued: ", "Issued: 1", 1))
    result = cli("license", "add", str(changed), *a.at, "--json")
    assert result.exit_code == 1 and json.loads(result.stderr)["error"]["code"].startswith("license_")
    cli.refused("file_unreadable", "license", "add", str(tmp_path / "none.lic"), *a.at)
    assert a.status()["license"]["packages"][0]["quantity"] == 2
