"""My2N apartment licenses from the console (SPEC §4): `entitle site|apartment|voucher …`.

Every command runs through Typer's CliRunner against the test database, with the console's clock
frozen by ENTITLE_NOW (as in tests/test_cli_axis.py). Card payments use one local payment
provider for the whole test, as a real provider keeps its customers between commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import START, World
from entitle.context import Context
from entitle.my2n.payments import LocalProvider
from helpers import ClockedCli, clocked_cli


Cli = ClockedCli


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


class Company:
    """An organization and one site, driven by the CLI."""

    def __init__(self, world: World, cli: Cli, name: str = "Residence", site: str = "Block A",
                 region: str = "EU") -> None:
        self.cli = cli
        self.org = str(world.org(name, region=region))
        self.site = str(cli.json("site", "create", "--org", self.org, "--name", site)["id"])
        self.at = ["--org", self.org, "--site", self.site]

    def apartments(self, *names: str) -> Any:
        return self.cli.json("apartment", "create", *self.at, *(a for n in names for a in ("--name", n)))

    def device(self, serial: str, kind: str, *args: str) -> Any:
        return self.cli.json("site", "device", "add", *self.at, "--serial", serial, "--kind", kind, *args)


# --- sites, apartments, devices, the dashboard (R-MY-1, R-MY-2, R-MY-3) -------------------------

def test_the_seed_site_five_apartments_one_empty_four_need_a_license(world: World, cli: Cli) -> None:  # R-MY-3
    co = Company(world, cli)
    co.apartments("A1", "A2", "A3", "A4", "A5")
    co.device("IC-1", "intercom")
    for i in range(1, 5):
        co.device(f"PH-{i}", "phone", "--apartment", f"A{i}")
    board = cli.json("site", "dashboard", *co.at)
    assert (board["apartments"], board["needing_license"]) == (5, 4)
    assert board["order"] == {"part_number": "9137958", "quantity": 4}
    text = cli.ok("site", "dashboard", *co.at)
    assert "need a license        4" in text and "4 × part 9137958" in text
    assert "A5" in text and "Block A" in text

    sites = cli.json("site", "list", "--org", co.org)
    assert [(s["name"], s["model"], s["site_type"], s["apartments"]) for s in sites] == [
        ("Block A", "apartment", "apartment_building", 5)]
    assert "apartment building" in cli.ok("site", "list", "--org", co.org)
    shown = cli.json("site", "show", "--org", co.org, "--site", "Block A")  # by name too
    assert (shown["id"], shown["apartments"], shown["devices"]) == (int(co.site), 5, 5)
    listed = cli.json("apartment", "list", *co.at)
    assert [(a["name"], a["paid_devices"], a["needs_license"]) for a in listed][-2:] == [("A4", 1, True),
                                                                                         ("A5", 0, False)]


def test_us_sites_order_the_us_part(world: World, cli: Cli) -> None:  # R-MY-3
    co = Company(world, cli, region="US")
    co.apartments("1")
    co.device("PH", "phone", "--apartment", "1")
    assert cli.json("site", "dashboard", *co.at)["order"] == {"part_number": "02683-001", "quantity": 1}


def test_a_fifth_paid_device_is_refused_with_create_another_apartment(world: World, cli: Cli) -> None:  # R-MY-2
    co = Company(world, cli)
    co.apartments("2B", "2C")
    for i, kind in enumerate(("phone", "tablet", "third_party", "phone")):
        co.device(f"D{i}", kind, "--apartment", "2B", *(("--local-mode",) if i == 0 else ()))
    co.device("AU", "answering_unit", "--apartment", "2B")  # free: not counted
    body = cli.refused("apartment_paid_device_limit", "site", "device", "add", *co.at, "--serial", "D5",
                       "--kind", "tablet", "--apartment", "2B")
    assert "create another apartment" in body["message"] and body["detail"]["limit"] == 4
    co.device("D5", "tablet", "--apartment", "2C")
    cli.refused("apartment_paid_device_limit", "site", "device", "assign", *co.at, "--serial", "D5",
                "--apartment", "2B")
    cli.refused("intercom_not_in_apartment", "site", "device", "add", *co.at, "--serial", "IC", "--kind",
                "intercom", "--apartment", "2C")
    cli.refused("device_kind_invalid", "site", "device", "add", *co.at, "--serial", "TV", "--kind", "television")


def test_local_mode_assign_and_the_device_list(world: World, cli: Cli) -> None:  # R-MY-3 R-MY-6
    co = Company(world, cli)
    co.apartments("1A", "1B")
    co.device("TAB", "tablet", "--apartment", "1A")
    assert cli.json("site", "dashboard", *co.at)["needing_license"] == 1
    assert cli.json("site", "device", "local-mode", *co.at, "--serial", "TAB", "--on")["local_mode"] is True
    assert cli.json("site", "dashboard", *co.at)["needing_license"] == 0
    assert "in local mode" in cli.ok("site", "device", "local-mode", *co.at, "--serial", "TAB", "--on")
    cli.json("site", "device", "local-mode", *co.at, "--serial", "TAB", "--off")

    moved = cli.json("site", "device", "assign", *co.at, "--serial", "TAB", "--apartment", "1B")
    assert (moved["apartment"], moved["local_mode"]) == ("1B", False)
    assert "outside apartments" in cli.ok("site", "device", "assign", *co.at, "--serial", "TAB", "--none")
    cli.refused("apartment_choice_invalid", "site", "device", "assign", *co.at, "--serial", "TAB")
    cli.refused("device_not_found", "site", "device", "assign", *co.at, "--serial", "NOPE", "--none")

    cli.json("site", "device", "assign", *co.at, "--serial", "TAB", "--apartment", "1A")
    co.device("IC", "intercom")
    rows = cli.json("site", "device", "list", *co.at)
    # Never paid: the tablet (outside local mode) stops; the intercom works (R-MY-6).
    assert [(r["serial"], r["apartment"], r["works"]) for r in rows] == [("IC", None, True), ("TAB", "1A", False)]
    assert "STOPPED" in cli.ok("site", "device", "list", *co.at)
    assert [r["serial"] for r in cli.json("site", "device", "list", *co.at, "--apartment", "1A")] == ["TAB"]


def test_unknown_names_are_refused_with_their_code(world: World, cli: Cli) -> None:
    co = Company(world, cli)
    cli.refused("site_exists", "site", "create", "--org", co.org, "--name", "Block A")
    cli.refused("site_not_found", "site", "show", "--org", co.org, "--site", "Block Z")
    cli.refused("site_not_found", "site", "show", "--org", co.org, "--site", "999999")
    cli.refused("organization_not_found", "site", "list", "--org", "No Such Company")
    cli.refused("apartment_not_found", "apartment", "pay", *co.at, "--apartment", "9Z")
    other = str(world.org("Other"))
    # Another organization's site is no site (R-CORE-1), by id as by name.
    cli.refused("site_not_found", "site", "show", "--org", other, "--site", co.site)
    cli.refused("site_type_unknown", "site", "type", *co.at, "--type", "castle")


# --- migration (R-MY-4) ------------------------------------------------------------------------

def test_the_migration_from_the_custom_model(world: World, cli: Cli, tmp_path: Path) -> None:  # R-MY-4 R-MY-1
    org = str(world.org("Legacy"))
    site = cli.json("site", "create", "--org", org, "--name", "Old", "--custom-expires", "2026-03-01")
    assert (site["model"], site["custom_expires_at"]) == ("custom", "2026-03-01T00:00:00+00:00")
    at = ["--org", org, "--site", "Old"]
    assert "retired; expires 2026-03-01" in cli.ok("site", "show", *at)
    for serial, kind in (("IC", "intercom"), ("PH", "phone"), ("AU", "answering_unit")):
        cli.json("site", "device", "add", *at, "--serial", serial, "--kind", kind)
    check = cli.json("site", "migration-check", *at)
    assert not check["ready"] and [d["serial"] for d in check["unassigned"]] == ["AU", "PH"]  # not the intercom
    assert "still outside apartments" in cli.ok("site", "migration-check", *at)
    body = cli.refused("migration_devices_unassigned", "site", "change-model", *at)
    assert body["detail"]["count"] == 2

    plan = tmp_path / "apartments.csv"
    plan.write_text("apartment,serial,kind,local_mode\n,IC,intercom,false\n1A,PH,phone,false\n"
                    "1A,AU,answering_unit,false\n1B,,,\n")
    imported = cli.json("site", "import", *at, "--file", str(plan))
    assert (imported["apartments_created"], imported["devices_assigned"]) == (2, 2)
    assert cli.json("site", "migration-check", *at)["ready"] is True
    assert "ready for the apartment model" in cli.ok("site", "migration-check", *at)

    text = cli.ok("site", "change-model", *at)
    assert "now has the apartment model" in text and "entitle site type" in text
    assert cli.json("site", "show", *at)["site_type_required"] is True
    chosen = cli.json("site", "type", *at, "--type", "family_house")
    assert (chosen["site_type"], chosen["site_type_required"]) == ("family_house", False)
    cli.refused("model_unchanged", "site", "change-model", *at)


# --- CSV import and export ---------------------------------------------------------------------

def test_export_and_import_round_trip_with_a_progress_bar(world: World, cli: Cli, tmp_path: Path) -> None:
    co = Company(world, cli)
    co.apartments("1A", "1B", "Empty")
    co.device("IC-1", "intercom")
    co.device("PH-1", "phone", "--apartment", "1A", "--local-mode")
    co.device("AU-1", "answering_unit", "--apartment", "1B")
    exported = ("apartment,serial,kind,local_mode\r\n,IC-1,intercom,false\r\n1A,PH-1,phone,true\r\n"
                "1B,AU-1,answering_unit,false\r\nEmpty,,,\r\n")
    printed = cli.ok("site", "export", *co.at)
    assert printed == exported.replace("\r\n", "\n")  # CliRunner's stdout has plain newlines
    target = tmp_path / "site.csv"
    result = cli(*("site", "export", *co.at, "--out", str(target)))
    assert result.exit_code == 0 and result.stdout == "" and "Exported 4 rows" in result.stderr
    assert target.read_bytes() == exported.encode()

    # Into another company's site: within one company a serial is on one site at a time (issue 14).
    other = Company(world, cli, name="Elsewhere", site="Block B")
    done = cli("site", "import", *other.at, "--file", str(target))
    assert done.exit_code == 0, done.output
    assert "Imported 4 rows" in done.stdout and "3 apartments created, 3 devices added" in done.stdout
    assert "importing" in done.stderr and "4/4" in done.stderr  # the progress bar, on stderr
    assert cli.ok("site", "export", *other.at) == printed

    # --json: only the JSON on stdout, no bar on stderr.
    again = cli("site", "import", *other.at, "--file", str(target), "--json")
    assert again.exit_code == 0 and again.stderr == ""
    assert json.loads(again.stdout)["devices_added"] == 0  # the same file again changes nothing


def test_a_refused_import_lists_its_rows_and_writes_nothing(world: World, cli: Cli, tmp_path: Path) -> None:  # R-MY-2
    co = Company(world, cli)
    bad = tmp_path / "bad.csv"
    bad.write_text("apartment,serial,kind,local_mode\n" + "".join(f"1A,PH-{i},phone,\n" for i in range(5))
                   + "1A,TV,television,\n1B,PH-0,tablet,\n")
    text = cli("site", "import", *co.at, "--file", str(bad))
    assert text.exit_code == 1 and text.stdout == ""
    assert "error csv_invalid:" in text.stderr and "nothing was imported" in text.stderr
    assert "importing" not in text.stderr  # no progress bar: nothing was written
    for row, code in (("6", "apartment_paid_device_limit"), ("7", "device_kind_invalid"), ("8", "serial_duplicate")):
        assert any(line.split()[:1] == [row] and code in line for line in text.stderr.splitlines()), text.stderr
    body = cli.refused("csv_invalid", "site", "import", *co.at, "--file", str(bad))
    assert [(p["row"], p["code"]) for p in body["detail"]["rows"]] == [
        (6, "apartment_paid_device_limit"), (7, "device_kind_invalid"), (8, "serial_duplicate")]
    assert cli.json("apartment", "list", *co.at) == [] and cli.json("site", "device", "list", *co.at) == []
    cli.refused("file_unreadable", "site", "import", *co.at, "--file", str(tmp_path / "missing.csv"))


# --- vouchers and the credit pool (R-MY-5) -----------------------------------------------------

def test_vouchers_fill_the_credit_pool_that_pays_apartment_years(  # R-MY-5
        world: World, cli: Cli, tmp_path: Path) -> None:
    co = Company(world, cli)
    co.apartments("1A")
    co.device("PH", "phone", "--apartment", "1A")
    minted = cli.json("voucher", "mint", "--part", "9137958", "--name", "Distributor order 7", "--years", "2",
                      "--subscriptions", "3", "--scope", "apartment")
    assert (minted["subscriptions"], minted["years"], len(minted["codes"])) == (3, 2, 3)
    printed = cli("voucher", "mint", "--part", "9137958", "--name", "Order 8", "--years", "1", "--subscriptions", "2")
    assert printed.exit_code == 0 and len(printed.stdout.split()) == 2 and "shown only this once" in printed.stderr
    out = tmp_path / "codes.csv"
    cli.json("voucher", "mint", "--part", "9137958", "--name", "Order 9", "--years", "1", "--subscriptions", "2",
             "--out", str(out))
    assert out.read_text().splitlines()[0] == "code,part_number,years,scope" and len(out.read_text().splitlines()) == 3
    cli.refused("out_exists", "voucher", "mint", "--part", "9137958", "--name", "Order 10", "--years", "1",
                "--subscriptions", "1", "--out", str(out))

    cli.refused("credit_insufficient", "apartment", "pay", *co.at, "--apartment", "1A")
    code = minted["codes"][0]
    redeemed = cli.json("voucher", "redeem", *co.at, "--code", code)
    assert redeemed["pool"] == {"apartment_years": 2, "device_years": 0}
    cli.refused("key_already_redeemed", "voucher", "redeem", *co.at, "--code", code)  # each code once
    paid = cli.json("apartment", "pay", *co.at, "--apartment", "1A")
    assert paid["paid_through"] == START.replace(year=2027).isoformat()
    assert "paid through 2028-01-15" in cli.ok("apartment", "pay", *co.at, "--apartment", "1A")
    assert cli.json("voucher", "pool", *co.at) == {"apartment_years": 0, "device_years": 0}
    assert "0 apartment-years" in cli.ok("voucher", "pool", *co.at)
    assert cli.json("site", "dashboard", *co.at)["lapsed"] == []


def test_a_voucher_batch_is_valid_three_years(world: World, cli: Cli) -> None:  # R-MY-5
    co = Company(world, cli)
    [code] = cli.json("voucher", "mint", "--part", "9137958", "--name", "Old order", "--years", "1",
                      "--subscriptions", "1")["codes"]
    cli.now = START + timedelta(days=3 * 366)
    cli.refused("voucher_expired", "voucher", "redeem", *co.at, "--code", code)


def test_voucher_codes_are_active_used_or_cancelled_and_only_active_ones_cancel(world: World, cli: Cli) -> None:
    # R-MY-5: each code is Active, Used or Cancelled; only the issuer cancels, and only an Active code.
    co = Company(world, cli)
    minted = cli.json("voucher", "mint", "--part", "9137958", "--name", "Order 11", "--years", "1",
                      "--subscriptions", "3")
    used, cancelled, _active = minted["codes"]
    cli.json("voucher", "redeem", *co.at, "--code", used)
    assert cli.json("voucher", "cancel", "--code", cancelled)["state"] == "cancelled"
    cli.refused("key_not_active", "voucher", "cancel", "--code", used)
    cli.refused("key_cancelled", "voucher", "redeem", *co.at, "--code", cancelled)
    [batch] = cli.json("voucher", "batches")
    assert batch["codes"] == {"active": 1, "used": 1, "cancelled": 1}
    assert batch["valid_until"] == START.replace(year=START.year + 3).isoformat()
    assert "Order 11" in cli.ok("voucher", "batches")


# --- card payment (R-MY-5) ---------------------------------------------------------------------

def test_recurring_card_payment_on_and_off(world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:  # R-MY-5
    provider = LocalProvider()
    monkeypatch.setattr("entitle.context.payment_provider", lambda settings, clock: provider)
    co = Company(world, cli)
    co.apartments("1A", "1B", "1C")
    co.device("PH-A", "phone", "--apartment", "1A")
    co.device("PH-B", "phone", "--apartment", "1B")
    status = cli.json("site", "pay", "status", *co.at)
    assert (status["card"], status["recurring"], status["needing_license"]) == (None, False, 2)
    assert status["price"]["year_total_minor"] == 2 * status["price"]["per_apartment_year_minor"]
    cli.refused("card_missing", "site", "pay", "activate", *co.at)

    assert "Visa •••• 4242" in cli.ok("site", "pay", "card", *co.at, "--payment-method", "pm_card_visa")
    on = cli.json("site", "pay", "activate", *co.at)
    assert on["recurring"] is True and on["apartments_covered"] == 2 and sorted(on["paid"]) == ["1A", "1B"]
    cli.refused("recurring_payment_active", "site", "pay", "card", *co.at, "--payment-method", "pm_card_mastercard")
    status = cli.json("site", "pay", "status", *co.at)
    assert status["recurring"] is True and len(status["payments"]) == 1
    text = cli.ok("site", "pay", "status", *co.at)
    assert "on since 2026-01-15" in text and "Card payments received" in text
    assert cli.json("site", "dashboard", *co.at)["lapsed"] == []

    assert "is off" in cli.ok("site", "pay", "deactivate", *co.at)
    cli.refused("recurring_payment_off", "site", "pay", "deactivate", *co.at)
    cli.json("site", "pay", "card", *co.at, "--payment-method", "pm_card_mastercard")
