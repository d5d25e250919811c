"""The Systems page: uploading an offline system's file in the web UI (R-AX-11)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import KeyRing, make_system_file, verify
from sqlalchemy import select

from entitle.systems.models import System
from entitle.tenancy.models import Role
from test_web import sign_in


def test_upload_system_file_in_the_web_ui(ctx, client, world):
    # R-AX-11: the web UI registers the system and shows its license file.
    owner = world.user("owner@acme.example")
    org = world.org("Acme", owner=owner)
    csrf = sign_in(client, owner.email)
    text = make_system_file(Ed25519PrivateKey.generate(), "SYS-WEB-1", "axis-camera-station",
                            {"core": 4}, ["ACCC8E000009"], ctx.clock.now())
    r = client.post("/systems/upload", data={"csrf_token": csrf},
                    files={"system_file": ("system.sys", text.encode(), "text/plain")})
    assert r.status_code == 200, r.text
    assert "SYS-WEB-1 is registered" in r.text
    start = r.text.index("-----BEGIN ENTITLE LICENSE FILE-----")
    end = r.text.index("-----END ENTITLE LICENSE FILE-----") + len("-----END ENTITLE LICENSE FILE-----")
    ring = KeyRing.loads(client.get("/api/v1/keyring").text)
    assert verify(r.text[start:end] + "\n", ring, ctx.clock.now(), "SYS-WEB-1").payload["need"] == {"core": 4}
    assert 'data-system="SYS-WEB-1"' in client.get("/systems").text
    with ctx.sessions() as s:
        assert s.scalars(select(System.org_id)).all() == [org]
    # The same file again is a replay, shown as its error code.
    r = client.post("/systems/upload", data={"csrf_token": csrf},
                    files={"system_file": ("system.sys", text.encode(), "text/plain")})
    assert r.status_code == 409 and "system_file_replayed" in r.text
    # A newer file of the same system updates it, and the page says so.
    newer = make_system_file(Ed25519PrivateKey.generate(), "SYS-WEB-1", "axis-camera-station", {"core": 5}, [],
                             ctx.clock.now())
    r = client.post("/systems/upload", data={"csrf_token": csrf},
                    files={"system_file": ("system.sys", newer.encode(), "text/plain")})
    assert r.status_code == 409  # another key: not from that installation
    key = Ed25519PrivateKey.generate()
    first = make_system_file(key, "SYS-WEB-2", "axis-camera-station", {"core": 1}, [], ctx.clock.now())
    second = make_system_file(key, "SYS-WEB-2", "axis-camera-station", {"core": 2}, [], ctx.clock.now())
    for text, verb in ((first, "registered"), (second, "updated")):
        r = client.post("/systems/upload", data={"csrf_token": csrf},
                        files={"system_file": ("system.sys", text.encode(), "text/plain")})
        assert r.status_code == 200 and f"SYS-WEB-2 is {verb}" in r.text, r.text


def test_upload_needs_csrf_and_a_licensing_role(ctx, client, world):
    # R-CORE-2: viewers see systems but cannot upload.
    owner = world.user("owner@acme.example")
    org = world.org("Acme", owner=owner)
    viewer = world.user("viewer@acme.example")
    world.member(org, viewer, Role.viewer)
    text = make_system_file(Ed25519PrivateKey.generate(), "SYS-WEB-2", "p", {}, [], ctx.clock.now())
    csrf = sign_in(client, viewer.email)
    page = client.get("/systems")
    assert page.status_code == 200 and 'name="system_file"' not in page.text
    r = client.post("/systems/upload", data={"csrf_token": csrf},
                    files={"system_file": ("s.sys", text.encode(), "text/plain")})
    assert r.status_code == 403 and "role_insufficient" in r.text
    r = client.post("/systems/upload", data={"csrf_token": "wrong"},
                    files={"system_file": ("s.sys", text.encode(), "text/plain")})
    assert r.status_code == 403 and "csrf_invalid" in r.text
    with ctx.sessions() as s:
        assert s.scalars(select(System)).all() == []


def test_systems_page_agrees_with_the_models_own_pages(world, client):
    # Issue 16 point 4: an AXIS system's devices as System setup counts them (not the offline system
    # file's list, empty for a system registered online), and the Access Commander installations too,
    # each linked to its model's page.
    import re

    from test_portal_home import AXIS_PRODUCT, build_scenario
    from test_web_ac import text_of

    sc = build_scenario(world)
    sign_in(client, "ann@example.com")
    page = client.get("/systems").text
    axis_row = re.search(r'<tr data-system="ACS-1" data-model="AXIS">(.*?)</tr>', page, re.S)
    assert axis_row, "the AXIS system is not listed"
    assert text_of(re.search(r'data-field="devices">(.*?)</td>', axis_row.group(1), re.S).group(1)) == "3 (3 Core)"
    assert f'href="/axis/products/{AXIS_PRODUCT}?tab=setup"' in axis_row.group(1)
    ac_row = re.search(r'<tr data-system="[^"]+" data-model="Access Commander">(.*?)</tr>', page, re.S)
    assert ac_row, "the Access Commander installation is not listed"
    assert ">Plant</a>" in ac_row.group(1) and f'href="/ac/installations/{sc.installation}"' in ac_row.group(1)
    assert text_of(re.search(r'data-field="devices">(.*?)</td>', ac_row.group(1), re.S).group(1)) == "2"
