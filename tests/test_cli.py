"""The `entitle` command line, run through Typer's CliRunner against the test database."""

from __future__ import annotations

import csv
import errno
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from click.testing import Result
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from conftest import World
from entitle.catalog import services as catalog
from entitle.catalog.models import Sku
from entitle.cli.main import app
from entitle.config import get_settings
from entitle.context import Context
from entitle.keys import codes
from entitle.keys import services as keys_services
from entitle.keys.models import KeyBatch, LicenseKey
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Membership, Organization, Role, User
from helpers import load_regional_skus

Cli = Callable[..., Result]
runner = CliRunner()


@pytest.fixture
def cli(ctx: Context) -> Cli:
    """Run `entitle ARGS --database-url <the test database>`."""
    url = ctx.settings.database_url

    def run(*args: str) -> Result:
        return runner.invoke(app, [*args, "--database-url", url], prog_name="entitle")

    return run


def ok_json(result: Result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # --json: stdout is nothing but JSON


def refused(result: Result, code: str) -> None:
    assert result.exit_code == 1, result.output
    assert code in result.stderr
    assert result.stdout == ""


def count(ctx: Context, model: type) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# --- --database-url ----------------------------------------------------------------------------

@pytest.fixture
def fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_database_url_option_overrides_the_environment(ctx: Context, cli: Cli, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       fresh_settings_cache: None) -> None:
    other = tmp_path / "elsewhere" / "other.db"
    monkeypatch.setenv("ENTITLE_DATABASE_URL", f"sqlite:///{other}")
    assert get_settings().database_url == f"sqlite:///{other}"  # the environment is in force

    body = ok_json(cli("org", "create", "--name", "Acme", "--region", "EU", "--json"))

    with ctx.sessions() as s:
        assert s.get(Organization, body["id"]).name == "Acme"
    assert not other.exists()


# --- first-run -----------------------------------------------------------------------------------

def test_first_run_sets_up_once_and_then_only_prints_the_url(ctx: Context, cli: Cli) -> None:
    first = ok_json(cli("first-run", "--url", "http://127.0.0.1:9000", "--json"))
    assert first["created"] is True and first["email"] == "admin@localhost"
    assert first["url"] == "http://127.0.0.1:9000"
    with ctx.sessions() as s:
        admin = tenancy.authenticate(s, email="admin@localhost", password=first["password"])
        assert admin.is_issuer
        org = s.get(Organization, first["org_id"])
        assert (org.name, org.region) == ("My organization", "EU")
        assert tenancy.actor_for(admin).role_in(org.id) is Role.owner
        loaded = {sku.part_number for sku in s.scalars(select(Sku))}
    default = catalog.parse(catalog.DEFAULT_CATALOG.read_text())
    assert loaded == {sku.part_number for p in default.products for sku in p.skus}

    again = cli("first-run", "--url", "http://127.0.0.1:9000")
    assert again.exit_code == 0, again.output
    assert "http://127.0.0.1:9000" in again.stdout
    assert first["password"] not in again.stdout and "admin@localhost" not in again.stdout
    assert ok_json(cli("first-run", "--json")) == {"url": "http://127.0.0.1:8000", "created": False}
    assert count(ctx, User) == 1
    assert count(ctx, Organization) == 2  # "My organization" and the issuer's own


def test_first_run_prints_the_password_once_with_a_warning(cli: Cli) -> None:
    result = cli("first-run", "--url", "http://localhost:8000")
    assert result.exit_code == 0, result.output
    assert "admin@localhost" in result.stdout and "http://localhost:8000" in result.stdout
    assert "choose your own password at the first sign-in" in result.stdout


# --- users, organizations, members, tokens ------------------------------------------------------

def test_admin_org_and_member_commands(ctx: Context, cli: Cli) -> None:
    vendor = ok_json(cli("admin", "create", "--email", "Vendor@Example.com", "--password",
                         "long enough", "--issuer", "--json"))
    assert vendor["email"] == "vendor@example.com" and vendor["issuer"] is True

    org = ok_json(cli("org", "create", "--name", "Acme", "--region", "us", "--owner",
                      "vendor@example.com", "--json"))
    assert org["region"] == "US"
    listed = ok_json(cli("org", "list", "--json"))
    assert [(o["id"], o["name"]) for o in listed] == [(org["id"], "Acme")]

    viewer = ok_json(cli("admin", "create", "--email", "v@example.com", "--password", "long enough",
                         "--org", str(org["id"]), "--role", "viewer", "--json"))
    assert viewer["issuer"] is False
    promoted = ok_json(cli("member", "add", "--org", str(org["id"]), "--email", "v@example.com",
                           "--role", "admin", "--json"))
    assert promoted["role"] == "admin"

    with ctx.sessions() as s:
        roles = {m.user.email: m.role for m in s.scalars(select(Membership)
                                                         .where(Membership.org_id == org["id"]))}
    assert roles == {"vendor@example.com": "owner", "v@example.com": "admin"}


def test_admin_and_org_refusals_give_code_and_exit_1(ctx: Context, cli: Cli) -> None:
    assert cli("admin", "create", "--email", "a@example.com", "--password", "long enough").exit_code == 0
    refused(cli("admin", "create", "--email", "a@example.com", "--password", "long enough"), "user_exists")
    refused(cli("admin", "create", "--email", "b@example.com", "--password", "short"), "password_too_short")
    refused(cli("admin", "create", "--email", "c@example.com", "--password", "long enough",
                "--org", "1"), "org_and_role_together")
    refused(cli("admin", "create", "--email", "d@example.com", "--password", "long enough",
                "--org", "999", "--role", "admin"), "organization_not_found")
    refused(cli("org", "create", "--name", "Acme", "--region", "Mars"), "region_unknown")
    refused(cli("org", "create", "--name", "Acme", "--region", "EU", "--owner", "nobody@example.com"),
            "user_not_found")
    refused(cli("member", "add", "--org", "999", "--email", "a@example.com", "--role", "viewer"),
            "organization_not_found")
    # A refusal changes nothing: the user without an organization is the only thing created.
    assert count(ctx, User) == 1
    assert count(ctx, Organization) == 0

    as_json = cli("org", "create", "--name", "Acme", "--region", "Mars", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stderr)["error"]["code"] == "region_unknown"


def test_token_create_prints_a_token_that_authenticates(ctx: Context, cli: Cli) -> None:
    assert cli("admin", "create", "--email", "a@example.com", "--password", "long enough").exit_code == 0
    body = ok_json(cli("token", "create", "--email", "a@example.com", "--password", "long enough",
                       "--name", "ci", "--json"))
    with ctx.sessions() as s:
        assert tenancy.user_for_token(s, body["token"]).email == "a@example.com"

    refused(cli("token", "create", "--email", "a@example.com", "--password", "wrong password"),
            "credentials_invalid")


# --- catalog -------------------------------------------------------------------------------------

def test_catalog_load_of_the_default_file_and_show(ctx: Context, cli: Cli, tmp_path: Path) -> None:
    doc = yaml.safe_load(catalog.DEFAULT_CATALOG.read_text())
    parts = sorted(s["part_number"] for p in doc["products"] for s in p["skus"])

    counts = ok_json(cli("catalog", "load", str(catalog.DEFAULT_CATALOG), "--json"))
    assert counts == {"products_created": len(doc["products"]), "products_updated": 0,
                      "skus_created": len(parts), "skus_updated": 0}
    shown = ok_json(cli("catalog", "show", "--json"))
    assert sorted(s["part_number"] for p in shown for s in p["skus"]) == parts

    # The same catalog as JSON updates what is there.
    as_json = tmp_path / "catalog.json"
    as_json.write_text(json.dumps(doc))
    again = ok_json(cli("catalog", "load", str(as_json), "--json"))
    assert again["skus_updated"] == len(parts) and again["skus_created"] == 0

    broken = tmp_path / "broken.yaml"
    broken.write_text("products:\n  - code: x\n    name: X\n    model: nonsense\n")
    refused(cli("catalog", "load", str(broken)), "catalog_invalid")


# --- keys ----------------------------------------------------------------------------------------

def test_mint_to_csv_keeps_only_hashes_and_moves_count_times_quantity(ctx: Context, world: World,
                                                                      cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "keys.csv"
    body = ok_json(cli("keys", "mint", "--sku", "91379040", "--quantity-per-key", "3", "--count", "2000",
                       "--out", str(out), "--name", "spring", "--json"))
    assert body["batch"]["count"] == 2000 and body["out"] == str(out)
    assert list(tmp_path.iterdir()) == [out]  # the staged file was renamed, nothing left over

    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2000
    assert {(r["part_number"], r["quantity"]) for r in rows} == {("91379040", "3")}
    minted = [r["key"] for r in rows]
    assert len(set(minted)) == 2000

    with ctx.sessions() as s:
        stored = s.execute(select(LicenseKey)).scalars().all()
        assert {k.key_hash for k in stored} == {codes.digest(codes.normalize(c)) for c in minted}
        # R-CORE-4: no code, in any spelling, appears anywhere in license_keys.
        dump = "\n".join(str(v) for row in s.execute(text("SELECT * FROM license_keys")) for v in row)
        assert not [c for c in minted if c in dump or codes.normalize(c) in dump or c.lower() in dump]

        batch_id = body["batch"]["id"]
        shards = s.scalars(select(Account).where(Account.kind == "key_batch",
                                                 Account.ref.like(f"{batch_id}/%"))).all()
        issued = s.scalars(select(Account).where(Account.kind == "issued")).one()
        assert sum(ledger.balance(s, a.id) for a in shards) == 2000 * 3 and len(shards) == 16
        assert ledger.balance(s, issued.id) == -2000 * 3
        assert ledger.unbalanced_transactions(s) == []

    # Redeem one of them through the CLI; the wallet shows its units.
    org = world.org("Acme", region="EU")
    redeemed = ok_json(cli("redeem", "--org", str(org), "--key", minted[0].lower(), "--json"))
    assert redeemed["quantity"] == 3 and redeemed["wallet_units"] == 3
    wallet = ok_json(cli("wallet", "show", "--org", str(org), "--json"))
    assert [(line["part_number"], line["units"]) for line in wallet["lines"]] == [("91379040", 3)]
    with ctx.sessions() as s:
        assert sum(ledger.balance(s, a.id) for a in shards) == 2000 * 3 - 3


def test_mint_prints_codes_without_out_and_refuses_over_1000(ctx: Context, world: World, cli: Cli) -> None:
    body = ok_json(cli("keys", "mint", "--sku", "91379041", "--quantity-per-key", "1", "--count", "5",
                       "--json"))
    assert len(body["keys"]) == 5
    assert all(codes.normalize(k) for k in body["keys"])

    plain = cli("keys", "mint", "--sku", "91379041", "--quantity-per-key", "1", "--count", "4")
    assert plain.exit_code == 0, plain.output
    assert len(plain.stdout.split()) == 4  # one code a line, nothing else on stdout

    refused(cli("keys", "mint", "--sku", "91379041", "--quantity-per-key", "1", "--count", "1001"),
            "out_required")
    refused(cli("keys", "mint", "--sku", "NOPE", "--quantity-per-key", "1", "--count", "1"),
            "sku_not_found")
    assert count(ctx, LicenseKey) == 9


def test_mint_never_overwrites_an_existing_file(ctx: Context, world: World, cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "keys.csv"
    out.write_text("earlier keys\n")
    refused(cli("keys", "mint", "--sku", "91379040", "--quantity-per-key", "1", "--count", "3",
                "--out", str(out)), "out_exists")
    assert out.read_text() == "earlier keys\n"
    assert count(ctx, LicenseKey) == 0


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("database went away")])
def test_mint_failing_midway_leaves_no_csv_and_no_keys(ctx: Context, world: World, cli: Cli,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       failure: Exception) -> None:
    monkeypatch.setattr(keys_services, "CHUNK", 100)
    real_mint = keys_services.mint
    delivered: list[int] = []

    def mint_that_fails_after_the_first_chunk(session, *, sink, **kwargs):  # type: ignore[no-untyped-def]
        def sink_then_fail(chunk: list[str]) -> None:
            if delivered:
                raise failure
            delivered.append(len(chunk))
            sink(chunk)
        return real_mint(session, sink=sink_then_fail, **kwargs)

    monkeypatch.setattr(keys_services, "mint", mint_that_fails_after_the_first_chunk)
    out = tmp_path / "keys.csv"
    result = cli("keys", "mint", "--sku", "91379040", "--quantity-per-key", "1", "--count", "300",
                 "--out", str(out))

    assert result.exit_code == 1
    if isinstance(failure, OSError):
        assert "out_write_failed" in result.stderr
    assert delivered == [100]  # the first chunk was written to the file and inserted
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor its staged file
    assert count(ctx, LicenseKey) == 0
    assert count(ctx, KeyBatch) == 0
    assert count(ctx, Entry) == 0


def test_redeem_refusals_each_have_their_code_and_exit_1(ctx: Context, world: World, cli: Cli) -> None:
    # R-CORE-4
    org = str(world.org("Acme", region="EU"))
    good, to_cancel = world.mint("91379040", count=2, quantity=5)
    load_regional_skus(world)
    (us_only,) = world.mint("AC-US-ONLY")
    mistyped = ("A" if good[0] != "A" else "B") + good[1:]
    never_issued = codes.generate()

    assert ok_json(cli("redeem", "--org", org, "--key", good, "--json"))["wallet_units"] == 5
    refused(cli("redeem", "--org", org, "--key", good), "key_already_redeemed")
    refused(cli("redeem", "--org", org, "--key", mistyped), "key_mistyped")
    refused(cli("redeem", "--org", org, "--key", "not a key"), "key_malformed")
    refused(cli("redeem", "--org", org, "--key", never_issued), "key_unknown")
    refused(cli("redeem", "--org", org, "--key", us_only), "key_wrong_region")
    refused(cli("redeem", "--org", "999", "--key", to_cancel), "organization_not_found")
    assert ok_json(cli("keys", "cancel", "--key", to_cancel, "--json"))["state"] == "cancelled"
    refused(cli("redeem", "--org", org, "--key", to_cancel), "key_cancelled")
    refused(cli("keys", "cancel", "--key", to_cancel), "key_not_active")

    as_json = cli("redeem", "--org", org, "--key", good, "--json")
    assert as_json.exit_code == 1 and as_json.stdout == ""
    assert json.loads(as_json.stderr)["error"]["code"] == "key_already_redeemed"
    # Only the first redeem moved anything.
    wallet = ok_json(cli("wallet", "show", "--org", org, "--json"))
    assert [(line["part_number"], line["units"]) for line in wallet["lines"]] == [("91379040", 5)]


# --- history -------------------------------------------------------------------------------------

def test_history_verify_detects_a_row_edited_behind_the_softwares_back(ctx: Context, world: World,
                                                                       cli: Cli) -> None:
    # R-CORE-6
    assert cli("admin", "create", "--email", "o@example.com", "--password", "long enough").exit_code == 0
    org = ok_json(cli("org", "create", "--name", "Acme", "--region", "EU", "--owner", "o@example.com",
                      "--json"))["id"]
    (key,) = world.mint("91379040")
    assert cli("redeem", "--org", str(org), "--key", key).exit_code == 0

    entries = ok_json(cli("history", "--org", str(org), "--json"))
    assert [e["action"] for e in entries] == ["key.redeemed", "member.set", "organization.created"]
    assert entries[0]["actor"].startswith("cli:")
    intact = cli("history", "--org", str(org), "--verify")
    assert intact.exit_code == 0, intact.output
    assert "OK" in intact.stdout and "3 entries" in intact.stdout

    with ctx.engine.begin() as conn:
        conn.execute(text("""UPDATE history_entries SET "after" = '{"role": "viewer"}' """
                          "WHERE org_id = :org AND seq = 2"), {"org": org})

    broken = cli("history", "--org", str(org), "--verify")
    assert broken.exit_code == 1
    assert "seq 2" in broken.stdout and "does not match its hash" in broken.stdout
    report = cli("history", "--org", str(org), "--verify", "--json")
    assert report.exit_code == 1
    assert json.loads(report.stdout) == {"ok": False, "checked": 1, "first_bad_seq": 2,
                                         "reason": "entry content does not match its hash"}


def test_history_of_an_unknown_organization_is_refused(ctx: Context, cli: Cli) -> None:
    refused(cli("history", "--org", "999", "--verify"), "organization_not_found")


# --- help ----------------------------------------------------------------------------------------

EXPECTED_COMMANDS = {
    "first-run", "migrate", "serve", "admin create", "admin password", "org create", "org list", "member add",
    "catalog load", "catalog show", "keys mint", "keys cancel", "redeem", "wallet show", "history",
    "token create",
    "ac calculate", "ac status", "ac sync", "ac installation create", "ac installation list",
    "ac device add", "ac device state", "ac device activate", "ac device deactivate",
    "ac attendance add", "ac attendance list", "ac attendance monitor",
    "ac license generate", "ac license list", "ac license check", "ac license export",
    "ac system-user add", "ac system-user list", "ac system-user admin",
}


def _commands(group: Any, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group of subcommands
            found += _commands(command, path + " ")
        else:
            found.append(path)
    return found


ALL_COMMANDS = sorted(_commands(typer.main.get_command(app)))


def test_every_expected_command_exists() -> None:
    assert EXPECTED_COMMANDS <= set(ALL_COMMANDS)


OFFLINE_COMMANDS = {"license show", "license verify", "system-file make"}


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"], prog_name="entitle")
    assert result.exit_code == 0, result.output
    assert f"Usage: entitle {command}" in result.stdout
    # Offline commands (run on a device or an offline installation) have no database.
    assert ("--database-url" in result.stdout) == (command not in OFFLINE_COMMANDS)
