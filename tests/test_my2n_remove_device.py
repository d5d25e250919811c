"""Removing a device from a My2N site (R-MY-2): whoever may add it may remove it; it frees a
place among the apartment's four paid devices, and the serial may go to another site of the
company (one device, one site). Through the API, the CLI and the Apartments tab; in the history
as a sentence."""

from __future__ import annotations

from conftest import auth
from entitle.db import reading
from entitle.history.sentences import lines
from entitle.history.services import page
from entitle.tenancy.models import Role
from helpers import error_code, join
from test_my2n_api import Company
from test_web import HTMX, sign_in
from test_web_ac import text_of


def test_a_removed_device_frees_its_place_and_may_go_to_another_site(world, client):  # R-MY-2
    c = Company(world, client)
    site, other_site = c.site("Block A"), c.site("Block B")
    apt = c.apartment(site, "1A")
    for i in range(4):
        c.ok(c.device(site, f"P{i}", "phone", apt), 201)
    assert error_code(c.device(site, "P4", "phone", apt)) == "apartment_paid_device_limit"

    r = client.delete(f"{c.base}/sites/{site}/devices/P0", headers=c.h())
    assert r.status_code == 200 and r.json() == {"serial": "P0", "kind": "phone", "apartment": apt,
                                                 "local_mode": False}
    c.ok(c.device(site, "P4", "phone", apt), 201)  # the fifth place is free again
    c.ok(c.device(other_site, "P0", "phone"), 201)  # and P0 may join another site
    r = client.delete(f"{c.base}/sites/{site}/devices/P0", headers=c.h())
    assert (r.status_code, error_code(r)) == (404, "device_not_found")

    with reading(world.ctx.sessions) as s:
        removed = next(line for line in lines(s, c.org, page(s, c.org, limit=20))
                       if line.entry.action == "my2n.device.removed")
    assert removed.sentence.text == ("owner@example.com removed the phone P0 from Block A (it was in the apartment "
                                     "1A).")


def test_an_apartment_admin_removes_only_their_apartments_devices(world, client):  # R-MY-2
    c = Company(world, client)
    site = c.site()
    mine, theirs = c.apartment(site, "1A"), c.apartment(site, "1B")
    c.ok(c.device(site, "MINE", "phone", mine), 201)
    c.ok(c.device(site, "THEIRS", "phone", theirs), 201)
    admin = join(world, c.org, "apt-admin@example.com", Role.viewer)
    c.ok(c.post(f"/sites/{site}/roles", {"email": "apt-admin@example.com", "role": "apartment_admin",
                                         "apartment_id": mine}))
    r = client.delete(f"{c.base}/sites/{site}/devices/THEIRS", headers=auth(admin.token))
    assert (r.status_code, error_code(r)) == (403, "apartment_admin_required")
    assert client.delete(f"{c.base}/sites/{site}/devices/MINE", headers=auth(admin.token)).status_code == 200
    listed = c.ok(c.get(f"/sites/{site}/devices"))["items"]
    assert [d["serial"] for d in listed] == ["THEIRS"]


def test_the_apartments_tab_removes_a_device(world, client):  # R-MY-2
    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    c.ok(c.device(site, "PH-1", "phone", apt), 201)
    csrf = sign_in(client, "owner@example.com")
    tab = client.get(f"/my2n/sites/{site}?tab=apartments").text
    assert 'aria-label="Remove PH-1 from the site"' in tab
    r = client.post(f"/my2n/sites/{site}/devices/remove", data={"csrf_token": csrf, "serial": "PH-1"}, headers=HTMX)
    assert r.status_code == 200 and "Device PH-1 is removed from the site" in text_of(r.text)
    assert c.ok(c.get(f"/sites/{site}/devices"))["items"] == []


def test_the_cli_removes_a_device(world, client, ctx):  # R-MY-2
    import json

    from typer.testing import CliRunner

    from entitle.cli.main import app

    c = Company(world, client)
    site = c.site()
    apt = c.apartment(site, "1A")
    c.ok(c.device(site, "PH-1", "phone", apt), 201)
    run = CliRunner().invoke
    url = ["--database-url", ctx.settings.database_url]
    done = run(app, ["site", "device", "remove", "--org", "Residence", "--site", "Block A", "--serial", "PH-1", *url])
    assert done.exit_code == 0 and "Device PH-1 is removed from site" in done.stdout and "apartment 1A" in done.stdout
    again = run(app, ["site", "device", "remove", "--org", "Residence", "--site", "Block A", "--serial", "PH-1",
                      "--json", *url])
    assert again.exit_code == 1 and "device_not_found" in again.stderr
    assert json.loads(run(app, ["site", "device", "list", "--org", "Residence", "--site", "Block A", "--json",
                                *url]).stdout) == []
