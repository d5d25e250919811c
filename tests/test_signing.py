"""The issuer's signing key ring (R-CORE-9)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from entitle_device import KeyRing, UnknownKey, verify
from sqlalchemy import select

from conftest import auth
from entitle.actors import operator
from entitle.config import Settings
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.history import services as history
from entitle.signing import services as signing
from entitle.signing.models import SigningKey
from entitle.signing.secrets import load_secret_key
from entitle.tenancy import services as tenancy


def _sign(ctx, subject="SYS-1", payload=None):
    with transaction(ctx.sessions) as s:
        return signing.sign(s, secret=ctx.secret, now=ctx.clock.now(), subject=subject,
                            payload=payload or {"product": "axis"},
                            expires=ctx.clock.now() + timedelta(days=30))


def test_files_signed_before_a_rotation_keep_verifying(ctx, client, world):
    # R-CORE-9: rotation makes a new current key; old files verify against the public ring.
    old_file, old_kid = _sign(ctx)
    with transaction(ctx.sessions) as s:
        new = signing.rotate(s, secret=ctx.secret, actor=operator(), now=ctx.clock.now())
    new_file, new_kid = _sign(ctx)
    assert new.kid == new_kid != old_kid
    ring = KeyRing.loads(client.get("/api/v1/keyring").text)
    assert set(ring) == {old_kid, new_kid}
    now = ctx.clock.now()
    assert verify(old_file, ring, now, "SYS-1").kid == old_kid
    assert verify(new_file, ring, now, "SYS-1").kid == new_kid
    # A verifier holding only the old ring does not know the new key.
    with pytest.raises(UnknownKey):
        verify(new_file, KeyRing({old_kid: ring[old_kid]}), now)


def test_only_one_current_key(ctx):
    # R-CORE-9: exactly one key signs new files, however many rotations.
    with transaction(ctx.sessions) as s:
        for _ in range(3):
            signing.rotate(s, secret=ctx.secret, actor=operator(), now=ctx.clock.now())
    with ctx.sessions() as s:
        assert len(s.scalars(select(SigningKey).where(SigningKey.is_current.is_(True))).all()) == 1
        assert len(s.scalars(select(SigningKey)).all()) == 3


def test_private_keys_are_never_stored_in_clear(ctx):
    # R-CORE-9: the database holds the private key only sealed under the server's secret.
    _sign(ctx)
    with ctx.sessions() as s:
        row = s.scalars(select(SigningKey)).one()
        raw = signing.private_key(row, secret=ctx.secret).private_bytes_raw()
        assert raw not in row.private_key_encrypted
        assert len(row.private_key_encrypted) > len(raw)
    other = Settings(database_url=ctx.settings.database_url,
                     secret_key="b3RoZXItc2VjcmV0LWtleS0zMi1ieXRlcy0hISEhISE=")
    with ctx.sessions() as s, pytest.raises(EntitleError) as err:
        signing.private_key(s.scalars(select(SigningKey)).one(), secret=load_secret_key(other))
    assert err.value.code == "secret_key_mismatch"


def test_secret_key_file_is_created_owner_only(tmp_path, database_url):
    # R-CORE-9: the key that protects signing keys lives in an owner-only file.
    path = tmp_path / "secret.key"
    key = load_secret_key(Settings(database_url=database_url, secret_key_file=str(path)))
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_secret_key(Settings(database_url=database_url, secret_key_file=str(path))) == key
    os.chmod(path, 0o644)
    with pytest.raises(EntitleError) as err:
        load_secret_key(Settings(database_url=database_url, secret_key_file=str(path)))
    assert err.value.code == "secret_key_file_exposed"


def test_rotation_through_the_api_is_for_the_issuer(ctx, client, world):
    # R-CORE-2, R-CORE-9
    owner = world.user("owner@example.com")
    world.org("Acme", owner=owner)
    issuer = world.user("vendor@example.com", issuer=True)
    r = client.post("/api/v1/issuer/signing-keys/rotate", headers=auth(world.token(owner)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "issuer_only"
    r = client.post("/api/v1/issuer/signing-keys/rotate", headers=auth(world.token(issuer)))
    assert r.status_code == 200
    assert [k["kid"] for k in client.get("/api/v1/keyring").json()["keys"]] == [r.json()["kid"]]
    with ctx.sessions() as s:
        issuer_org = tenancy.issuer_organization(s, now=ctx.clock.now())
        assert [e.action for e in history.page(s, issuer_org.id, limit=1)] == ["signing_key.rotated"]
