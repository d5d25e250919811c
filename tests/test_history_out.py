"""History through the API and the console reads as the History page does (issue 16, point 3):
each entry carries its sentence (``summary``) beside its data, and `entitle history` prints the
sentences (R-CORE-6)."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from conftest import auth
from entitle.cli.main import app
from entitle.tenancy.models import Role
from helpers import join, org_with_owner, redeem


def test_api_history_entries_carry_their_sentence(world, client):  # R-CORE-6
    world.load_catalog()
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    (key,) = world.mint("91379040")
    assert redeem(client, owner.token, org, key).status_code == 200
    items = client.get(f"/api/v1/orgs/{org}/history", headers=auth(owner.token)).json()["items"]
    assert [i["action"] for i in items] == ["key.redeemed", "member.set", "member.set", "organization.created"]
    assert [i["summary"] for i in items] == [
        "ann@example.com redeemed a license key: 1 × 91379040 (Access Commander license for +5 devices) into the "
        "wallet, which now holds 1 of them.",
        "An operator at the server console made val@example.com a viewer of the organization.",
        "An operator at the server console made ann@example.com an owner of the organization.",
        "An operator at the server console created the organization Acme (region EU)."]


def test_cli_history_prints_sentences(world, ctx):  # R-CORE-6
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    url = ctx.settings.database_url
    runner = CliRunner()
    shown = runner.invoke(app, ["history", "--org", "Acme", "--database-url", url], prog_name="entitle",
                          env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    as_json = runner.invoke(app, ["history", "--org", "Acme", "--json", "--database-url", url])
    entries = json.loads(as_json.stdout)
    assert entries[0]["action"] == "member.set" and entries[0]["after"] == {"role": "viewer"}
    # The table may wrap a sentence inside its cell at any width: compare the words, not the layout.
    def letters(text: str) -> str:
        return re.sub(r"[^\w@]", "", text.replace("│", ""))

    for e in entries:
        assert letters(e["summary"]) in letters(shown.stdout), (e["summary"], shown.stdout)
    assert "member.set" not in shown.stdout and "what happened" in shown.stdout
