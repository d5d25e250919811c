"""One way to name things in the CLI (issue 12): every `--org` takes the organization's id or its
exact name; `--site` (and `--apartment`) the id or the name; `--system` and `--installation` the
id, the uid or the name, found only inside the given organization. Unknown names are refused with
the candidates, names several share with their ids.

Every command runs through Typer's CliRunner against the test database (see tests/helpers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import World
from entitle.cli.main import app
from entitle.context import Context
from entitle.systems.models import System
from entitle.tenancy.models import Membership, User
from helpers import ClockedCli, clocked_cli

P = "axis-camera-station"
Cli = ClockedCli


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


class Acme:
    """"Acme Corp" with one of each thing an option names, and "Other", an organization beside it."""

    def __init__(self, world: World, cli: Cli) -> None:
        self.world, self.cli = world, cli
        self.id = str(world.org("Acme Corp"))
        self.other = str(world.org("Other"))
        made = cli.json("ac", "installation", "create", "--org", self.id, "--name", "Plant", "--uid", "SYS-AC-1")
        self.installation = str(made["installation"]["id"])
        self.system = str(cli.json("axis", "system", "register", "--org", self.id, "--product", P,
                                   "--uid", "ACS-HQ", "--name", "HQ")["id"])
        self.site = str(cli.json("site", "create", "--org", self.id, "--name", "Block A")["id"])


@pytest.fixture
def acme(world: World, cli: Cli) -> Acme:
    return Acme(world, cli)


# --- --org: the id or the exact name, in every command ----------------------------------------------

READS = {
    "wallet show": ("wallet", "show"),
    "history": ("history",),
    "history --verify": ("history", "--verify"),
    "ac installation list": ("ac", "installation", "list"),
    "ac status": ("ac", "status", "--installation", "SYS-AC-1"),
    "ac license list": ("ac", "license", "list", "--installation", "Plant"),
    "axis products": ("axis", "products"),
    "axis system list": ("axis", "system", "list"),
    "subscription status": ("subscription", "status", "--product", P),
    "site list": ("site", "list"),
    "site show": ("site", "show", "--site", "Block A"),
    "apartment list": ("apartment", "list", "--site", "Block A"),
    "webhook list": ("webhook", "list"),
}


@pytest.mark.parametrize("command", READS.values(), ids=READS.keys())
def test_a_command_reads_the_same_with_the_org_id_or_its_name(acme: Acme, cli: Cli, command: tuple[str, ...]) -> None:
    by_id = cli.json(*command, "--org", acme.id)
    assert cli.json(*command, "--org", "Acme Corp") == by_id
    assert cli.json(*command, "--org", "  Acme Corp ") == by_id  # as pasted, spaces around


def test_redeem_and_wallet_by_name(acme: Acme, world: World, cli: Cli) -> None:
    for ref in (acme.id, "Acme Corp"):
        (key,) = world.mint("91379040")
        cli.json("redeem", "--org", ref, "--key", key)
    assert cli.json("wallet", "show", "--org", acme.id)["lines"][0]["units"] == 2
    assert "into organization " + acme.id in cli.ok("redeem", "--org", "Acme Corp", "--key", world.mint("91379040")[0])


def test_member_add_and_admin_create_by_name(acme: Acme, world: World, cli: Cli) -> None:
    world.user("ann@example.com")
    assert cli.json("member", "add", "--org", "Acme Corp", "--email", "ann@example.com",
                    "--role", "viewer")["org_id"] == int(acme.id)
    assert f"viewer of organization {acme.id}" in cli.ok("member", "add", "--org", acme.id, "--email",
                                                         "ann@example.com", "--role", "viewer")
    made = cli.json("admin", "create", "--email", "bob@example.com", "--password", "long enough",
                    "--org", "Acme Corp", "--role", "admin")
    assert made["org_id"] == int(acme.id)
    cli.refused("organization_not_found", "admin", "create", "--email", "eve@example.com",
                "--password", "long enough", "--org", "Acme", "--role", "admin")
    with world.ctx.sessions() as s:
        members = {(u.email, m.role) for m, u in s.execute(
            select(Membership, User).join(User, User.id == Membership.user_id)
            .where(Membership.org_id == int(acme.id)))}
        assert s.scalars(select(User).where(User.email == "eve@example.com")).first() is None  # nothing made
    assert members == {("ann@example.com", "viewer"), ("bob@example.com", "admin")}


def test_creating_in_an_organization_by_name(acme: Acme, cli: Cli, world: World, tmp_path: Path) -> None:
    cli.json("ac", "installation", "create", "--org", "Acme Corp", "--name", "Gate")
    assert [i["name"] for i in cli.json("ac", "installation", "list", "--org", acme.id)] == ["Plant", "Gate"]
    cli.json("webhook", "add", "--org", "Acme Corp", "--url", "http://127.0.0.1:9/hooks")
    assert len(cli.json("webhook", "list", "--org", acme.id)) == 1
    cli.json("site", "create", "--org", "Acme Corp", "--name", "Block B")
    assert [s["name"] for s in cli.json("site", "list", "--org", acme.id)] == ["Block A", "Block B"]

    sys_file = tmp_path / "system.sys"
    made = CliRunner().invoke(app, ["system-file", "make", "--system-id", "SYS-OFF-1", "--product", P,  # offline
                                    "--key-file", str(tmp_path / "system.pem"), "--need", "core=2",
                                    "--out", str(sys_file)])
    assert made.exit_code == 0, made.output
    assert cli("system-file", "upload", str(sys_file), "--org", "Acme Corp", "--json").exit_code == 0
    with world.ctx.sessions() as s:
        assert s.scalars(select(System.org_id).where(System.uid == "SYS-OFF-1")).one() == int(acme.id)


def test_unknown_org_name_lists_the_organizations(acme: Acme, cli: Cli) -> None:
    listed = ", ".join(f"{o['id']} {o['name']}" for o in cli.json("org", "list"))  # with the issuer's
    assert f"{acme.id} Acme Corp, {acme.other} Other" in listed
    body = cli.refused("organization_not_found", "wallet", "show", "--org", "Acme")
    assert body["message"] == f"No organization is named 'Acme'; organizations: {listed} (see `entitle org list`)."
    assert body["detail"] == {"org": "Acme"}
    body = cli.refused("organization_not_found", "history", "--org", "999999")
    assert body["message"].startswith("No organization has the id or the name '999999'; organizations: ")
    # More digits than any id holds: no id, and no name either.
    cli.refused("organization_not_found", "history", "--org", "9" * 30)


def test_the_candidates_are_bounded(world: World, cli: Cli) -> None:
    for i in range(12):
        world.org(f"Org {i:02d}")
    orgs = cli.json("org", "list")
    assert len(orgs) > 12  # and the issuer's
    message = cli.refused("organization_not_found", "wallet", "show", "--org", "Org")["message"]
    shown = ", ".join(f"{o['id']} {o['name']}" for o in orgs[:10])
    assert message.endswith(f"organizations: {shown} and {len(orgs) - 10} more (see `entitle org list`).")
    assert orgs[10]["name"] not in message


def test_names_are_no_markup(world: World, cli: Cli) -> None:
    world.org("[red]Crew[/red]")
    result = cli("wallet", "show", "--org", "[bold]Crew")
    assert result.exit_code == 1
    assert "named '[bold]Crew'" in result.stderr and "[red]Crew[/red]" in result.stderr


def test_a_name_two_organizations_share_is_refused_with_their_ids(world: World, cli: Cli) -> None:
    twins = [world.org("Twin"), world.org("Twin")]
    body = cli.refused("organization_ambiguous", "wallet", "show", "--org", "Twin")
    assert body["message"] == f"2 organizations are named 'Twin' (ids {twins[0]}, {twins[1]}); give the id instead."
    assert body["detail"] == {"org": "Twin", "ids": twins}
    assert cli.json("wallet", "show", "--org", str(twins[1]))["org_id"] == twins[1]


def test_digits_are_the_id_when_that_id_exists_else_a_name(world: World, cli: Cli) -> None:
    first = world.org("First")
    named_like_first = world.org(str(first))  # its name is the first one's id
    year = world.org("2024")  # no organization has the id 2024
    assert cli.json("wallet", "show", "--org", str(first))["org_id"] == first
    assert cli.json("wallet", "show", "--org", "2024")["org_id"] == year
    assert cli.json("wallet", "show", "--org", str(named_like_first))["org_id"] == named_like_first


# --- --installation, --system, --site: inside the organization ---------------------------------------

def test_installation_by_id_uid_or_name(acme: Acme, cli: Cli) -> None:
    views = [cli.json("ac", "status", "--org", "Acme Corp", "--installation", ref)
             for ref in (acme.installation, "SYS-AC-1", "Plant")]
    assert views[0]["installation"]["uid"] == "SYS-AC-1" and views[1] == views[0] and views[2] == views[0]
    cli.json("ac", "device", "add", "--org", "Acme Corp", "--installation", "Plant", "--serial", "54-1")
    assert [d["serial"] for d in cli.json("ac", "status", "--org", acme.id, "--installation", "SYS-AC-1")
            ["device_list"]] == ["54-1"]


def test_a_uid_wins_over_another_installations_name(acme: Acme, cli: Cli) -> None:
    cli.json("ac", "installation", "create", "--org", acme.id, "--name", "SYS-AC-1", "--uid", "AC-NAMED")
    assert cli.json("ac", "status", "--org", acme.id, "--installation", "SYS-AC-1")["installation"]["name"] == "Plant"


def test_another_organizations_installation_is_not_found(acme: Acme, cli: Cli) -> None:
    for ref in (acme.installation, "SYS-AC-1", "Plant"):
        body = cli.refused("installation_not_found", "ac", "status", "--org", "Other", "--installation", ref)
        assert body["detail"] == {"installation": ref}
        assert "Plant" not in body["message"].partition(";")[2]  # Acme's is no candidate of Other's
    body = cli.refused("installation_not_found", "ac", "status", "--org", "Other", "--installation", "Plant")
    assert body["message"] == (f"No installation of organization {acme.other} has the uid or the name 'Plant'; "
                               f"installations of organization {acme.other}: none "
                               "(see `entitle ac installation list`).")
    body = cli.refused("installation_not_found", "ac", "status", "--org", acme.id, "--installation", "Gate")
    assert body["message"] == (f"No installation of organization {acme.id} has the uid or the name 'Gate'; "
                               f"installations of organization {acme.id}: {acme.installation} SYS-AC-1 (Plant) "
                               "(see `entitle ac installation list`).")


def test_two_installations_of_one_name_are_refused_with_their_ids(acme: Acme, cli: Cli) -> None:
    second = cli.json("ac", "installation", "create", "--org", acme.id, "--name", "Plant", "--uid", "SYS-AC-2")
    ids = [int(acme.installation), second["installation"]["id"]]
    body = cli.refused("installation_ambiguous", "ac", "status", "--org", acme.id, "--installation", "Plant")
    assert body["message"] == (f"2 installations of organization {acme.id} are named 'Plant' "
                               f"(ids {ids[0]}, {ids[1]}); give the id or the uid instead.")
    assert body["detail"] == {"installation": "Plant", "ids": ids}
    assert cli.json("ac", "status", "--org", acme.id, "--installation", "SYS-AC-2")["installation"]["id"] == ids[1]


def test_system_by_id_uid_or_name(acme: Acme, cli: Cli) -> None:
    cli.json("axis", "devices", "add", "--org", "Acme Corp", "--system", "HQ", "--serial", "CAM-1", "--type", "core")
    lists = [cli.json("axis", "devices", "list", "--org", "Acme Corp", "--system", ref)
             for ref in (acme.system, "ACS-HQ", "HQ")]
    assert lists[1] == lists[0] and lists[2] == lists[0] and "CAM-1" in str(lists[0])
    body = cli.refused("system_not_found", "axis", "devices", "list", "--org", acme.id, "--system", "Cams")
    assert body["message"] == (f"No system of organization {acme.id} has the uid or the name 'Cams'; AXIS systems "
                               f"of organization {acme.id}: {acme.system} ACS-HQ (HQ) (see `entitle axis system list`).")
    for ref in (acme.system, "ACS-HQ", "HQ"):
        cli.refused("system_not_found", "axis", "devices", "list", "--org", acme.other, "--system", ref)


def test_site_and_apartment_by_id_or_name(acme: Acme, cli: Cli) -> None:
    assert cli.json("site", "show", "--org", "Acme Corp", "--site", acme.site) == \
        cli.json("site", "show", "--org", "Acme Corp", "--site", "Block A")
    (apt,) = cli.json("apartment", "create", "--org", acme.id, "--site", "Block A", "--name", "A1")
    cli.json("site", "device", "add", "--org", acme.id, "--site", acme.site, "--serial", "PH-1", "--kind", "phone",
             "--apartment", str(apt["id"]))
    cli.json("site", "device", "add", "--org", acme.id, "--site", acme.site, "--serial", "PH-2", "--kind", "phone",
             "--apartment", "A1")
    assert [a["paid_devices"] for a in cli.json("apartment", "list", "--org", acme.id, "--site", "Block A")] == [2]
    body = cli.refused("site_not_found", "site", "show", "--org", acme.id, "--site", "Block Z")
    assert body["message"] == (f"No site of organization {acme.id} is named 'Block Z'; sites of organization "
                               f"{acme.id}: {acme.site} Block A (see `entitle site list`).")
    cli.refused("site_not_found", "site", "show", "--org", acme.other, "--site", acme.site)
    cli.refused("site_not_found", "site", "show", "--org", acme.other, "--site", "Block A")
    body = cli.refused("apartment_not_found", "apartment", "pay", "--org", acme.id, "--site", "Block A",
                       "--apartment", "A2")
    assert body["message"] == (f"No apartment of site {acme.site} is named 'A2'; apartments of site {acme.site}: "
                               f"{apt['id']} A1 (see `entitle apartment list`).")


# --- the help says it the same way everywhere -----------------------------------------------------

WAYS = {"--org": "its id or its exact name", "--site": "its id or its exact name",
        "--apartment": "its id or its exact name", "--system": "its id, its uid or its exact name",
        "--installation": "its id, its uid or its exact name"}
# `license verify --system` names no row: it is the subject a license file must be for (offline).
NOT_A_REFERENCE = {("license verify", "--system")}


def _options(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every option of every command, by the command's path (Typer's own Click, so duck-typed)."""
    if hasattr(command, "list_commands"):  # a group: its sub-commands, imported if lazy
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            yield from _options(command.get_command(ctx, name), (*path, name))
        return
    for param in command.params:
        if param.param_type_name == "option":
            yield " ".join(path), param


def test_every_naming_option_says_how_to_name() -> None:
    seen: set[str] = set()
    for where, option in _options(typer.main.get_command(app)):
        name = next((o for o in option.opts if o in WAYS), None)
        if name is None or (where, name) in NOT_A_REFERENCE:
            continue
        seen.add(name)
        assert WAYS[name] in (option.help or ""), f"{where} {name}: {option.help!r}"
    assert seen == set(WAYS)
