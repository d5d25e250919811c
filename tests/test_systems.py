"""Offline systems licensed by uploading a system file (R-AX-11, R-AX-1)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import KeyRing, make_system_file, verify
from sqlalchemy import func, select

from conftest import auth
from entitle.history.models import HistoryEntry
from entitle.systems.models import System, SystemFileReceipt

VECTORS = Path(__file__).parents[1] / "device" / "tests" / "vectors"


@pytest.fixture
def acme(world):
    owner = world.user("owner@acme.example")
    org = world.org("Acme", owner=owner)
    return org, world.token(owner)


def _upload(client, org, token, text):
    return client.post(f"/api/v1/orgs/{org}/systems/upload", json={"system_file": text}, headers=auth(token))


def _counts(ctx):
    with ctx.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (System, SystemFileReceipt, HistoryEntry))


def test_upload_registers_the_system_and_returns_its_license_file(ctx, client, acme):
    # R-AX-11: upload registers the system in the uploader's organization; the answer is a
    # signed license file that the offline system verifies with the device library.
    org, token = acme
    key = Ed25519PrivateKey.generate()
    text = make_system_file(key, "SYS-0001", "axis-camera-station", {"core": 12, "universal": 2},
                            ["ACCC8E000001", "ACCC8E000002"], ctx.clock.now())
    r = _upload(client, org, token, text)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["system"]["uid"] == "SYS-0001" and body["system"]["need"] == {"core": 12, "universal": 2}
    ring = KeyRing.loads(client.get("/api/v1/keyring").text)
    lic = verify(body["license_file"], ring, ctx.clock.now(), "SYS-0001")
    assert lic.payload["organization"] == org
    assert lic.payload["need"] == {"core": 12, "universal": 2}
    assert lic.payload["devices"] == ["ACCC8E000001", "ACCC8E000002"]
    listed = client.get(f"/api/v1/orgs/{org}/systems", headers=auth(token)).json()["items"]
    assert [s["uid"] for s in listed] == ["SYS-0001"]
    # A newer file from the same system updates it.
    text2 = make_system_file(key, "SYS-0001", "axis-camera-station", {"core": 15}, ["ACCC8E000001"],
                             ctx.clock.now())
    r2 = _upload(client, org, token, text2)
    assert r2.status_code == 201 and r2.json()["system"]["need"] == {"core": 15}
    assert r2.json()["system"]["id"] == body["system"]["id"]


def test_a_replayed_system_file_is_refused_and_changes_nothing(ctx, client, acme):
    # R-AX-11: the same file (same nonce) uploaded again is a replay.
    org, token = acme
    key = Ed25519PrivateKey.generate()
    text = make_system_file(key, "SYS-0002", "axis-camera-station", {"core": 3}, [], ctx.clock.now())
    assert _upload(client, org, token, text).status_code == 201
    later = make_system_file(key, "SYS-0002", "axis-camera-station", {"core": 9}, [], ctx.clock.now())
    assert _upload(client, org, token, later).status_code == 201
    before = _counts(ctx)
    r = _upload(client, org, token, text)
    assert r.status_code == 409 and r.json()["error"]["code"] == "system_file_replayed"
    assert _counts(ctx) == before
    # The replay did not roll the need back to the old file's.
    assert client.get(f"/api/v1/orgs/{org}/systems", headers=auth(token)).json()["items"][0]["need"] == {"core": 9}


def test_a_retried_upload_with_the_same_idempotency_key_gets_its_license_file_back(ctx, client, acme):
    # R-AX-11, R-CORE-5: a client whose answer was lost re-sends the same request with the same
    # Idempotency-Key and gets the first answer (the same license file), not system_file_replayed;
    # replay protection still refuses the same file as a new request.
    org, token = acme
    key = Ed25519PrivateKey.generate()
    text = make_system_file(key, "SYS-0009", "axis-camera-station", {"core": 3}, [], ctx.clock.now())

    def send(idem):
        return client.post(f"/api/v1/orgs/{org}/systems/upload", json={"system_file": text},
                           headers={**auth(token), "Idempotency-Key": idem})

    first = send("upload-1")
    assert first.status_code == 201 and first.json()["outcome"] == "registered"
    before = _counts(ctx)
    again = send("upload-1")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _counts(ctx) == before  # nothing registered, received or recorded twice
    r = send("upload-2")  # the same file as a new request: a replay
    assert r.status_code == 409 and r.json()["error"]["code"] == "system_file_replayed"
    r = _upload(client, org, token, text)
    assert r.status_code == 409 and r.json()["error"]["code"] == "system_file_replayed"
    # A newer file of the same system updates it, and says so.
    newer = make_system_file(key, "SYS-0009", "axis-camera-station", {"core": 4}, [], ctx.clock.now())
    r = _upload(client, org, token, newer)
    assert r.status_code == 201 and r.json()["outcome"] == "updated"
    ring = KeyRing.loads(client.get("/api/v1/keyring").text)
    lic = verify(r.json()["license_file"], ring, ctx.clock.now(), "SYS-0009")
    assert lic.expires == datetime.fromisoformat(r.json()["license_expires"]).replace(microsecond=0)


def test_a_tampered_system_file_is_refused(ctx, client, acme):
    # R-AX-11: a changed file fails its own signature.
    org, token = acme
    key = Ed25519PrivateKey.generate()
    text = make_system_file(key, "SYS-0003", "axis-camera-station", {"core": 3}, [], ctx.clock.now())
    forged = text.replace("SYS-0003", "SYS-0004")
    r = _upload(client, org, token, forged)
    assert r.status_code == 400 and r.json()["error"]["code"] == "system_file_bad_signature"
    r = _upload(client, org, token, "hello")
    assert r.status_code == 400 and r.json()["error"]["code"] == "system_file_malformed"
    assert _counts(ctx)[:2] == (0, 0)


def test_another_organizations_system_is_refused(ctx, client, world, acme):
    # R-AX-1, R-AX-11, R-CORE-1: a registration never moves between organizations.
    org, token = acme
    other_owner = world.user("owner@other.example")
    other = world.org("Other", owner=other_owner)
    key = Ed25519PrivateKey.generate()
    assert _upload(client, org, token, make_system_file(key, "SYS-0005", "p", {"core": 1}, [],
                                                        ctx.clock.now())).status_code == 201
    before = _counts(ctx)
    r = _upload(client, other, world.token(other_owner),
                make_system_file(key, "SYS-0005", "p", {"core": 1}, [], ctx.clock.now()))
    assert r.status_code == 409 and r.json()["error"]["code"] == "system_registered_elsewhere"
    assert _counts(ctx) == before
    # Nor can another installation claim the system's identity with its own key.
    r = _upload(client, org, token, make_system_file(Ed25519PrivateKey.generate(), "SYS-0005", "p",
                                                     {"core": 1}, [], ctx.clock.now()))
    assert r.status_code == 409 and r.json()["error"]["code"] == "system_key_mismatch"
    # The other organization cannot read it either.
    sid = client.get(f"/api/v1/orgs/{org}/systems", headers=auth(token)).json()["items"][0]["id"]
    assert client.get(f"/api/v1/orgs/{other}/systems/{sid}",
                      headers=auth(world.token(other_owner))).status_code == 404


def test_viewers_cannot_upload(ctx, client, world, acme):
    # R-CORE-2
    org, _ = acme
    from entitle.tenancy.models import Role

    viewer = world.user("viewer@acme.example")
    world.member(org, viewer, Role.viewer)
    text = make_system_file(Ed25519PrivateKey.generate(), "SYS-0006", "p", {}, [], ctx.clock.now())
    r = _upload(client, org, world.token(viewer), text)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_insufficient"


@pytest.mark.parametrize("vector", [v for v in json.loads((VECTORS / "vectors.json").read_text())["vectors"]
                                    if v["kind"] == "system"], ids=lambda v: v["file"])
def test_system_file_vectors(ctx, client, acme, vector):
    # R-AX-11: the device library's shared test vectors, through the server's upload.
    org, token = acme
    r = _upload(client, org, token, (VECTORS / vector["file"]).read_text())
    if vector["expect"] == "ok":
        assert r.status_code == 201, r.text
    else:
        expected = {"bad_signature": "system_file_bad_signature", "malformed_system_file": "system_file_malformed",
                    "unsupported_version": "system_file_unsupported_version"}[vector["expect"]]
        assert r.json()["error"]["code"] == expected
