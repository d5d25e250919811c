"""AXIS licensing from the console (SPEC §3): `entitle subscription|allocate|renew|axis`.

Every command runs through Typer's CliRunner against the test database, with the console's
clock frozen by ENTITLE_NOW (as a user would script it): each call reads the environment afresh,
so a test moves ENTITLE_NOW to move the console's time. One test runs a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import START, TEST_SECRET_KEY, World
from entitle.cli.main import app
from entitle.context import Context
from helpers import REPO, ClockedCli, clocked_cli

P = "axis-camera-station"
CORE_1Y = "AXIS-ACS-CORE-1Y"


Cli = ClockedCli


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


class Org:
    """An organization with one registered system of AXIS Camera Station Pro, driven by the CLI."""

    def __init__(self, world: World, cli: Cli, name: str = "Cams", devices: int = 0) -> None:
        self.world, self.cli = world, cli
        self.id = str(world.org(name))
        self.at = ["--org", self.id, "--product", P]
        system = cli.json("axis", "system", "register", *self.at, "--uid", f"ACS-{name}", "--name", "HQ")
        self.system = system["uid"]
        if devices:
            self.devices(devices)

    def devices(self, n: int, first: int = 0, license_type: str = "core") -> Any:
        serials = [a for i in range(first, first + n) for a in ("--serial", f"CAM-{i:05d}")]
        return self.cli.json("axis", "devices", "add", "--org", self.id, "--system", self.system, *serials,
                             "--type", license_type)

    def redeem(self, part: str = CORE_1Y, units: int = 10) -> None:
        (key,) = self.world.mint(part, count=1, quantity=units)
        result = self.cli("redeem", "--org", self.id, "--key", key)
        assert result.exit_code == 0, result.output

    def start(self) -> Any:
        return self.cli.json("subscription", "start", *self.at)

    def status(self) -> Any:
        return self.cli.json("subscription", "status", *self.at)

    def allocate(self, *args: str) -> Any:
        return self.cli.json("allocate", *self.at, *args)


# --- start and status (R-AX-3, R-AX-13) --------------------------------------------------------

def test_start_opens_the_grace_period_shown_by_status(world: World, cli: Cli) -> None:
    # R-AX-13: before the start the product runs on its trial; R-AX-3: the start opens 30 days of grace.
    org = Org(world, cli, devices=8)
    before = org.status()
    assert before["state"] == "trial" and before["current_year"] is None
    text = cli.ok("subscription", "status", *org.at)
    assert "TRIAL" in text and "not started" in text and "entitle subscription start" in text

    started = org.start()
    assert started["state"] == "in_grace" and started["subscription_start"] == START.isoformat()
    assert started["current_year"]["grace_end"] == (START + timedelta(days=30)).isoformat()

    st = org.status()
    assert st["state"] == "in_grace"
    assert st["current_year"] == {"index": 0, "start": START.isoformat(), "end": "2027-01-15T09:00:00+00:00",
                                  "grace_end": "2026-02-14T09:00:00+00:00"}
    assert st["license_types"]["core"] == {"need_now": 8, "need": 8, "allocated": 0, "state": "in_grace"}
    assert [y["index"] for y in st["years"]] == [0, 1, 2, 3, 4, 5]
    assert st["years"][0]["license_types"]["core"] == {"need": 8, "allocated": 0, "missing": 8}
    text = cli.ok("subscription", "status", *org.at)
    assert "IN GRACE" in text and "ends 2026-02-14 09:00 UTC (in 30 days)" in text

    assert "2027-01-15 2027-02-14" in text  # year 1: its start and its own grace end
    assert "redeem license keys" in text

    body = cli.refused("subscription_already_started", "subscription", "start", *org.at)
    assert body["detail"]["subscription_start"] == START.isoformat()


def test_start_refusals(world: World, cli: Cli) -> None:
    org_id = str(world.org("Empty"))
    cli.refused("product_not_registered", "subscription", "start", "--org", org_id, "--product", P)
    cli.refused("product_not_found", "subscription", "start", "--org", org_id, "--product", "no-such-product")
    cli.refused("organization_not_found", "subscription", "start", "--org", "999999", "--product", P)
    cli.refused("organization_not_found", "subscription", "status", "--org", "Nobody", "--product", P)
    text = cli.ok("subscription", "status", "--org", org_id, "--product", P)
    assert "NOT REGISTERED" in text and "entitle axis system register" in text


def test_org_is_found_by_name_or_id(world: World, cli: Cli) -> None:
    Org(world, cli, name="Named", devices=1)
    assert cli.json("subscription", "start", "--org", "Named", "--product", P)["state"] == "in_grace"
    assert cli.json("subscription", "status", "--org", "Named", "--product", P)["state"] == "in_grace"
    world.org("Twin")
    world.org("Twin")
    body = cli.refused("organization_ambiguous", "subscription", "status", "--org", "Twin", "--product", P)
    assert len(body["detail"]["ids"]) == 2


# --- allocate (R-AX-4, R-AX-5) -----------------------------------------------------------------

def test_redeem_then_allocate_is_fully_licensed(world: World, cli: Cli) -> None:
    # R-AX-5: fully licensed for the year when the allocation matches the need.
    org = Org(world, cli, devices=8)
    org.start()
    org.redeem(units=10)
    out = org.allocate("--type", "core", "--year", "0", "--units", "8")
    assert out["state"] == "fully_licensed"
    assert [(a["license_type"], a["year"], a["years"], a["units"], a["part_number"], a["compensation_license_days"])
            for a in out["allocations"]] == [("core", 0, 1, 8, CORE_1Y, 0)]  # inside grace: no compensation
    st = org.status()
    assert st["state"] == "fully_licensed"
    assert st["years"][0]["fully_licensed"] is True and st["years"][1]["fully_licensed"] is False
    # R-AX-4: what was not allocated stays in the wallet, with its five-year expiry shown.
    assert [(lot["part_number"], lot["units"], lot["expires_at"]) for lot in st["wallet"]["lots"]] == [
        (CORE_1Y, 2, "2031-01-15T09:00:00+00:00")]
    text = cli.ok("subscription", "status", *org.at)
    assert "FULLY LICENSED" in text and "2031-01-15" in text
    listed = cli.json("axis", "allocations", *org.at)
    assert [(a["kind"], a["units"], a["year"]) for a in listed] == [("allocation", 8, 0)]
    assert "allocation" in cli.ok("axis", "allocations", *org.at)


def test_allocation_lines_in_one_confirmation(world: World, cli: Cli) -> None:
    # R-AX-5: several lines confirm together, here mixing --type/--year/--units and --line.
    org = Org(world, cli, devices=4)
    org.devices(2, first=100, license_type="universal")
    org.start()
    org.redeem(CORE_1Y, 8)
    org.redeem("AXIS-ACS-UNIVERSAL-1Y", 2)
    text = cli.ok("allocate", *org.at, "--type", "core", "--year", "0", "--units", "4", "--line", "universal:0:2",
                  "--line", "core:1:4")
    assert "FULLY LICENSED" in text and "AXIS-ACS-UNIVERSAL-1Y" in text
    st = org.status()
    assert st["years"][0]["license_types"] == {"core": {"need": 4, "allocated": 4, "missing": 0},
                                               "universal": {"need": 2, "allocated": 2, "missing": 0}}
    assert st["years"][1]["license_types"]["core"]["allocated"] == 4


def test_short_wallet_is_refused_with_the_missing_count(world: World, cli: Cli) -> None:
    # R-AX-5: confirming with too few units is refused as a whole, saying how many are missing.
    org = Org(world, cli, devices=8)
    org.start()
    org.redeem(units=5)
    text = cli("allocate", *org.at, "--line", "core:0:8")
    assert text.exit_code != 0 and text.stdout == ""
    assert "error insufficient_units:" in text.stderr and "3 missing" in text.stderr and "missing: 3" in text.stderr
    body = cli.refused("insufficient_units", "allocate", *org.at, "--line", "core:0:2", "--line", "core:1:6")
    assert body["detail"]["missing"] == 3
    assert body["detail"]["lines"] == [{"license_type": "core", "term_years": 1, "needed": 8, "available": 5,
                                        "missing": 3}]
    # Nothing moved: every line or none.
    assert cli.json("axis", "allocations", *org.at) == []
    assert [lot["units"] for lot in org.status()["wallet"]["lots"]] == [5]
    # Five-year units are a pool of their own.
    cli.refused("insufficient_units", "allocate", *org.at, "--line", "core:0:1:5")


def test_allocation_line_refusals(world: World, cli: Cli) -> None:
    org = Org(world, cli, devices=1)
    org.redeem(units=1)
    cli.refused("subscription_not_started", "allocate", *org.at, "--line", "core:0:1")
    org.start()
    cli.refused("allocation_empty", "allocate", *org.at)
    for bad in ("core", "core:0", "core:x:1", ":0:1", "core:0:1:5:9"):
        assert cli.refused("line_invalid", "allocate", *org.at, "--line", bad)["detail"] == {"line": bad}
    cli.refused("line_invalid", "allocate", *org.at, "--type", "core", "--year", "0")
    cli.refused("line_invalid", "allocate", *org.at, "--line", "core:0:1", "--term", "5")
    body = cli.refused("year_out_of_range", "allocate", *org.at, "--line", "core:6:1")
    assert (body["detail"]["first"], body["detail"]["last"]) == (0, 5)  # R-AX-5: up to five years ahead
    cli.refused("units_invalid", "allocate", *org.at, "--line", "core:0:0")
    cli.refused("term_invalid", "allocate", *org.at, "--line", "core:0:1:3")
    cli.refused("license_type_unknown", "allocate", *org.at, "--line", "gold:0:1")


# --- renewal and the grace periods (R-AX-6) ----------------------------------------------------

def test_renew_allocates_what_the_coming_years_miss(world: World, cli: Cli) -> None:
    # R-AX-5, R-AX-6: renewing ahead allocates each coming year's missing units.
    org = Org(world, cli, devices=8)
    org.start()
    org.redeem(units=20)
    org.allocate("--line", "core:0:8")
    renewed = cli.json("renew", *org.at, "--years", "1")
    assert [(a["year"], a["units"]) for a in renewed["allocations"]] == [(1, 8)]
    assert renewed["state"] == "fully_licensed"
    assert org.status()["years"][1]["license_types"]["core"] == {"need": 8, "allocated": 8, "missing": 0}
    text = cli.ok("renew", *org.at)
    assert "Nothing to renew" in text
    body = cli.refused("insufficient_units", "renew", *org.at, "--years", "2")
    assert body["detail"]["missing"] == 4  # years 0 to 2: year 2 needs 8; 4 left in the wallet
    cli.refused("years_invalid", "renew", *org.at, "--years", "6")


def test_renew_in_a_renewal_grace_licenses_the_current_year_and_says_which(world: World, cli: Cli) -> None:
    # R-AX-6: in year 1's grace (year 0 allocated, 30 units in the wallet), --years 1 licenses
    # year 1 first, then year 2, and says so.
    org = Org(world, cli, devices=10)
    org.start()
    org.redeem(units=40)
    org.allocate("--line", "core:0:10")
    cli.now = datetime.fromisoformat("2027-01-15T09:00:00+00:00")
    assert org.status()["state"] == "in_grace"
    text = cli.ok("renew", *org.at, "--years", "1")
    assert "Renewed: allocated to years 1, 2; years 1 to 2 are fully licensed." in text
    st = org.status()
    assert [st["years"][i]["license_types"]["core"]["allocated"] for i in (0, 1, 2)] == [10, 10, 0]
    cli.now = datetime.fromisoformat("2027-02-14T09:00:00+00:00")  # year 1's grace end
    assert org.status()["state"] == "fully_licensed"
    assert "Nothing to renew: year 1 is fully licensed already." in cli.ok("renew", *org.at, "--years", "0")
    assert "0 to 5 years ahead" in cli.refused("years_invalid", "renew", *org.at, "--years", "-1")["message"]


def test_moving_entitle_now_across_the_grace_end_changes_the_state(world: World, cli: Cli) -> None:
    # R-AX-6: not fully licensed when the grace period ends -> unlicensed; the next year opens a new one.
    org = Org(world, cli, devices=8)
    org.start()
    org.redeem(units=4)
    cli.now = START + timedelta(days=29, hours=23)
    assert org.status()["state"] == "in_grace"
    assert "IN GRACE" in cli.ok("subscription", "status", *org.at)
    cli.now = START + timedelta(days=30)
    assert org.status()["state"] == "not_licensed"
    cli.now = START + timedelta(days=31)
    text = cli.ok("subscription", "status", *org.at)
    assert "NOT LICENSED" in text and "(ended 1 day ago)" in text and "at 2026-02-15 09:00 UTC" in text
    org.allocate("--line", "core:0:4")
    assert org.status()["state"] == "partially_licensed"
    # The renewal date opens year 1's own grace period.
    cli.now = datetime.fromisoformat("2027-01-20T09:00:00+00:00")
    st = org.status()
    assert st["state"] == "in_grace" and st["current_year"]["index"] == 1
    assert st["current_year"]["grace_end"] == "2027-02-14T09:00:00+00:00"
    cli.now = datetime.fromisoformat("2027-02-14T09:00:00+00:00")
    assert org.status()["state"] == "not_licensed"


def test_entitle_now_is_honoured_by_a_real_process(world: World, cli: Cli) -> None:
    org = Org(world, cli, devices=2)
    org.start()
    env = {**os.environ, "ENTITLE_DATABASE_URL": cli.url, "ENTITLE_SECRET_KEY": TEST_SECRET_KEY}
    states = []
    for moment in (START + timedelta(days=1), START + timedelta(days=40)):
        env["ENTITLE_NOW"] = moment.isoformat()
        done = subprocess.run([sys.executable, "-m", "entitle.cli.main", "subscription", "status", "--org", org.id,
                               "--product", P, "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        states.append(json.loads(done.stdout)["state"])
    assert states == ["in_grace", "not_licensed"]


# --- compensation (R-AX-7) ---------------------------------------------------------------------

def test_allocation_after_the_grace_period_prints_the_compensation(world: World, cli: Cli) -> None:
    # R-AX-7, by hand: 10 units allocated 100 days into the year 2026-01-15..2027-01-15 (365 days)
    # = 10 x 100 = 1000 license-days = 2 whole units (730) + 270 license-days.
    org = Org(world, cli, devices=10)
    org.start()
    org.redeem(units=10)
    cli.now = START + timedelta(days=100)
    text = cli.ok("allocate", *org.at, "--type", "core", "--year", "0", "--units", "10")
    assert "1,000 license-days" in text and "2 whole units credited" in text  # whole units
    assert "270 license-days of AXIS-ACS-CORE-1Y" in text and "FULLY LICENSED" in text
    st = org.status()
    assert st["wallet"]["remainder_license_days"] == {CORE_1Y: 270}
    assert [(lot["units"], lot["received_at"]) for lot in st["wallet"]["lots"]] == [(2, cli.now.isoformat())]
    assert "270 license-days of AXIS-ACS-CORE-1Y" in cli.ok("subscription", "status", *org.at)

    # --json carries the same numbers; a second late allocation adds to the remainder:
    # 2 units x 100 days = 200; 270 + 200 = 470 = 1 more unit (365) + 105 license-days.
    org.devices(2, first=50)
    out = org.allocate("--line", "core:0:2")
    assert [(a["compensation_license_days"], a["compensation_units"]) for a in out["allocations"]] == [(200, 1)]
    assert out["remainder_license_days"] == {CORE_1Y: 105}


# --- devices, growth and buying guidance (R-AX-2, R-AX-8, R-AX-9, R-AX-12) ---------------------

def test_devices_from_a_csv_file_all_or_none(world: World, cli: Cli, tmp_path: Path) -> None:
    # R-AX-2: the need is the devices counted per license type, here 2,500 from a file in 3 slices.
    org = Org(world, cli, devices=1)
    big = tmp_path / "devices.csv"
    big.write_text("serial,license_type\n" + "".join(f"B-{i:05d},{'core' if i % 5 else 'universal'}\n"
                                                      for i in range(2500)), encoding="utf-8")
    result = cli("axis", "devices", "add", "--org", org.id, "--system", org.system, "--file", str(big))
    assert result.exit_code == 0, result.output
    assert "Added 2,500 devices" in result.stdout and "2,001 core, 500 universal" in result.stdout
    assert "2500/2500" in result.stderr  # the progress bar, on stderr
    more = tmp_path / "more.csv"
    more.write_text("M-1,core\n", encoding="utf-8")
    result = cli("axis", "devices", "add", "--org", org.id, "--system", org.system, "--file", str(more), "--json")
    assert result.exit_code == 0 and result.stderr == ""  # no bar with --json
    assert json.loads(result.stdout)["device_counts"] == {"core": 2002, "universal": 500}
    st = org.status()
    assert (st["license_types"]["core"]["need_now"], st["license_types"]["universal"]["need_now"]) == (2002, 500)

    # A file whose last slice clashes adds nothing at all.
    clash = tmp_path / "clash.csv"
    clash.write_text("".join(f"C-{i:05d},core\n" for i in range(2100)) + "B-00001,core\n", encoding="utf-8")
    cli.refused("device_exists", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                "--file", str(clash))
    assert org.status()["license_types"]["core"]["need_now"] == 2002

    bad = tmp_path / "bad.csv"
    bad.write_text("# comment\nX-1,core\n\nX-2\n", encoding="utf-8")
    body = cli.refused("file_invalid", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                       "--file", str(bad))
    assert body["detail"]["line"] == 4
    bad.write_text("X-1,core\nX-2,core\nX-1,universal\n", encoding="utf-8")
    body = cli.refused("serial_duplicate", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                       "--file", str(bad))
    assert body["detail"] == {"file": str(bad), "line": 3, "serial": "X-1"}
    bad.write_text("X-1,gold\n", encoding="utf-8")
    cli.refused("license_type_unknown", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                "--file", str(bad))
    cli.refused("file_unreadable", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                "--file", str(tmp_path / "none.csv"))
    cli.refused("license_type_required", "axis", "devices", "add", "--org", org.id, "--system", org.system,
                "--serial", "Y-1")
    cli.refused("system_not_found", "axis", "devices", "add", "--org", org.id, "--system", "NOPE",
                "--serial", "Y-1", "--type", "core")


def test_devices_remove_and_list(world: World, cli: Cli, tmp_path: Path) -> None:
    org = Org(world, cli, devices=3)
    at = ["--org", org.id, "--system", org.system]
    listed = cli.json("axis", "devices", "list", *at)
    assert [d["serial"] for d in listed] == ["CAM-00000", "CAM-00001", "CAM-00002"]
    gone = tmp_path / "gone.csv"
    gone.write_text("serial\nCAM-00000\n", encoding="utf-8")
    assert cli.json("axis", "devices", "remove", *at, "--file", str(gone), "--serial", "CAM-00001")["removed"] == 2
    assert [d["serial"] for d in cli.json("axis", "devices", "list", *at)] == ["CAM-00002"]
    assert "CAM-00002" in cli.ok("axis", "devices", "list", *at)
    cli.refused("device_not_found", "axis", "devices", "remove", *at, "--serial", "CAM-00000")
    systems = cli.json("axis", "system", "list", "--org", org.id)
    assert [(s["uid"], s["device_counts"]) for s in systems] == [(org.system, {"core": 1})]
    assert "1 core" in cli.ok("axis", "system", "list", "--org", org.id)
    cli.refused("system_exists", "axis", "system", "register", *org.at, "--uid", org.system)


def test_growth_flag_and_buying_guidance(world: World, cli: Cli) -> None:
    # R-AX-12: the units to buy per coming year, after the wallet; R-AX-9: growth past 2 x allocated.
    org = Org(world, cli, devices=8)
    org.start()
    org.redeem(units=10)
    guidance = org.status()["buying_guidance"]["core"]
    assert guidance == {"0": 0, "1": 6, "2": 8, "3": 8, "4": 8, "5": 8}  # the wallet's 10 cover year 0 and 2 of year 1
    text = cli.ok("subscription", "status", *org.at)
    assert "Buying guidance" in text and "year 1" in text

    org.allocate("--line", "core:0:8")
    cli.now = START + timedelta(days=40)  # after the grace end the year's need stays what it was then
    assert org.devices(8, first=100)["growth"]["over"] is False  # 16 = 2 x 8: within the allowance
    added = cli.ok("axis", "devices", "add", "--org", org.id, "--system", org.system, "--serial", "CAM-X",
                   "--type", "core")
    assert "Growth allowance exceeded for core: 17 devices" in added
    st = org.status()
    assert st["growth"] == {"over": True, "license_types": {"core": {"need": 17, "allocated": 8, "limit": 16}}}
    assert "Growth allowance exceeded" in cli.ok("subscription", "status", *org.at)
    # Flagged, never blocked (R-AX-9); the added need counts toward the next renewal (R-AX-8).
    assert st["state"] == "fully_licensed"
    assert st["years"][1]["license_types"]["core"]["need"] == 17


# --- products, hardware, upgrades (R-AX-10, R-AX-13) -------------------------------------------

def test_products_list(world: World, cli: Cli) -> None:
    org = Org(world, cli, devices=1)
    rows = cli.json("axis", "products", "--org", org.id)
    assert [(r["product"], r["state"], r["systems"]) for r in rows] == [(P, "trial", 1)]
    assert rows[0]["trial_ends_at"] == (START + timedelta(days=90)).isoformat()  # R-AX-13
    assert "TRIAL" in cli.ok("axis", "products", "--org", org.id)
    empty = str(world.org("None"))
    assert cli.json("axis", "products", "--org", empty) == []
    assert "no AXIS product" in cli.ok("axis", "products", "--org", empty)


def test_hardware_preloaded_and_expansion(world: World, cli: Cli) -> None:
    # R-AX-10: preloaded licenses activate onto the hardware; expansion units are tied to it for good.
    org = Org(world, cli)
    (preloaded,) = world.mint("AXIS-S30-PRELOADED-CORE", quantity=4)
    hw = cli.json("axis", "hardware", "register", *org.at, "--serial", "S30-1", "--name", "Recorder",
                  "--preloaded-key", preloaded)
    assert (hw["license_type"], hw["preloaded_units"], hw["licenses"]) == ("core", 4, 4)
    org.redeem("AXIS-ACS-CORE-EXP", 3)
    body = cli.refused("insufficient_units", "axis", "hardware", "allocate", "--org", org.id, "--serial", "S30-1",
                       "--units", "5")
    assert body["detail"]["missing"] == 2
    text = cli.ok("axis", "hardware", "allocate", "--org", org.id, "--serial", "S30-1", "--units", "2")
    assert "licenses 6 (4 preloaded, 2 expansion)" in text
    listed = cli.json("axis", "hardware", "list", "--org", org.id)
    assert [(h["serial"], h["licenses"], h["expansion_units"]) for h in listed] == [("S30-1", 6, 2)]
    assert "S30-1" in cli.ok("axis", "hardware", "list", "--org", org.id)
    cli.refused("hardware_exists", "axis", "hardware", "register", *org.at, "--serial", "S30-1", "--type", "core")
    cli.refused("license_type_required", "axis", "hardware", "register", *org.at, "--serial", "S30-2")
    cli.refused("hardware_not_found", "axis", "hardware", "allocate", "--org", org.id, "--serial", "NOPE",
                "--units", "1")


def test_hardware_running_more_devices_than_its_licenses(world: World, cli: Cli) -> None:
    # R-AX-10, R-AX-12: 8 preloaded licenses, 10 devices: 2 need expansions, in the state and the guidance.
    org = Org(world, cli)
    (preloaded,) = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    cli.json("axis", "hardware", "register", *org.at, "--serial", "S30-1", "--preloaded-key", preloaded)
    serials = [a for i in range(10) for a in ("--serial", f"HW-CAM-{i}")]
    cli.json("axis", "devices", "add", "--org", org.id, "--system", org.system, *serials, "--type", "core",
             "--hardware", "S30-1")
    org.start()
    cli.now = START + timedelta(days=31)  # after the grace period (hardware licenses have none anyway)
    st = org.status()
    assert st["state"] == "partially_licensed"
    [h] = st["hardware"]
    assert (h["devices"], h["licenses"], h["missing"], h["to_buy"]) == (10, 8, 2, 2)
    text = cli.ok("subscription", "status", *org.at)
    assert "Buying guidance: buy 2 core expansion licenses for S30-1." in text
    assert "nothing to buy" not in text
    [listed] = cli.json("axis", "hardware", "list", "--org", org.id)
    assert (listed["missing"], listed["licensed"]) == (2, False)
    # With 2 expansion units in the wallet: allocate them, nothing to buy; then fully licensed.
    org.redeem("AXIS-ACS-CORE-EXP", 2)
    text = cli.ok("subscription", "status", *org.at)
    assert "allocate 2 expansion licenses from the wallet to S30-1" in text and "buy 2" not in text
    cli.ok("axis", "hardware", "allocate", "--org", org.id, "--serial", "S30-1", "--units", "2")
    assert org.status()["state"] == "fully_licensed"


def test_upgrade_converts_allocated_units(world: World, cli: Cli) -> None:
    # R-AX-13: an upgrade unit converts one allocated Core unit into Universal, once.
    org = Org(world, cli, devices=2)
    org.start()
    org.redeem(units=2)
    org.allocate("--line", "core:0:2")
    cli.refused("insufficient_units", "axis", "upgrade", *org.at, "--year", "0", "--units", "1")
    org.redeem("AXIS-ACS-UPGRADE-CORE-UNIVERSAL", 1)
    # Both core units license the 2 core devices: converting one would leave one unlicensed.
    body = cli.refused("upgrade_leaves_need_uncovered", "axis", "upgrade", *org.at, "--year", "0", "--units", "1")
    assert (body["detail"]["need"], body["detail"]["allocated"], body["detail"]["allowed"]) == (2, 2, 0)
    org.redeem(units=1)
    org.allocate("--line", "core:0:1")
    text = cli.ok("axis", "upgrade", *org.at, "--year", "0", "--units", "1")
    assert "Upgraded 1 unit of year 0 from core to universal." in text
    year0 = org.status()["years"][0]["license_types"]
    assert (year0["core"]["allocated"], year0["universal"]["allocated"]) == (2, 1)
    assert org.status()["state"] == "fully_licensed"
    kinds = [(a["kind"], a["license_type"], a["units"]) for a in cli.json("axis", "allocations", *org.at)]
    assert kinds == [("allocation", "core", 2), ("allocation", "core", 1), ("upgrade", "universal", 1),
                     ("upgraded", "core", -1)]
