"""Roles (R-CORE-2), time (R-CORE-7) and the API's common behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import DateTime, select, text

from conftest import PASSWORD, START, auth
from entitle.actors import operator
from entitle.db import Base, UTCDateTime, transaction
from entitle.history.models import HistoryEntry
from entitle.keys.models import LicenseKey
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import ApiToken, Role
from helpers import error_code, join, load_regional_skus, org_with_owner, person, redeem


# --- R-CORE-2 roles -----------------------------------------------------------------------------

def test_a_viewer_reads_but_cannot_redeem(world, client):
    # R-CORE-2
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    viewer = join(world, org, "val@example.com", Role.viewer)
    [first, second] = world.mint("91379040", count=2)
    assert redeem(client, owner.token, org, first).status_code == 200
    wallet = client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(viewer.token))
    assert wallet.status_code == 200 and wallet.json()["lines"][0]["units"] == 1
    assert client.get(f"/api/v1/orgs/{org}/history", headers=auth(viewer.token)).status_code == 200
    assert client.get(f"/api/v1/orgs/{org}/ledger", headers=auth(viewer.token)).status_code == 200
    r = redeem(client, viewer.token, org, second)
    assert (r.status_code, error_code(r)) == (403, "role_insufficient")
    assert r.json()["error"]["detail"] == {"role": "viewer", "required": ["owner", "admin"]}
    # an admin may license
    admin = join(world, org, "adm@example.com", Role.admin)
    assert redeem(client, admin.token, org, second).status_code == 200


def test_only_an_owner_manages_members(world, client):
    # R-CORE-2
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    admin = join(world, org, "adm@example.com", Role.admin)
    viewer = join(world, org, "val@example.com", Role.viewer)
    newcomer = person(world, "new@example.com")
    for who in (admin, viewer):
        r = client.post(f"/api/v1/orgs/{org}/members", json={"email": "new@example.com", "role": "admin"},
                        headers=auth(who.token))
        assert (r.status_code, error_code(r)) == (403, "role_insufficient")
    r = client.post(f"/api/v1/orgs/{org}/members", json={"email": "new@example.com", "role": "admin"},
                    headers=auth(owner.token))
    assert r.status_code == 201 and r.json() == {"email": "new@example.com", "role": "admin"}
    members = client.get(f"/api/v1/orgs/{org}/members", headers=auth(newcomer.token)).json()["items"]
    assert {m["email"]: m["role"] for m in members} == {
        "ann@example.com": "owner", "adm@example.com": "admin", "val@example.com": "viewer",
        "new@example.com": "admin"}
    r = client.post(f"/api/v1/orgs/{org}/members", json={"email": "nobody@example.com", "role": "admin"},
                    headers=auth(owner.token))
    assert (r.status_code, error_code(r)) == (404, "user_not_found")


def test_only_the_issuer_mints_and_loads_the_catalog(world, client):
    # R-CORE-2: the issuer is a separate role; an organization owner is not the issuer.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    issuer = person(world, "vendor@example.com", issuer=True)
    body = {"part_number": "91379040", "count": 2}
    r = client.post("/api/v1/issuer/key-batches", json=body, headers=auth(owner.token, "m1"))
    assert (r.status_code, error_code(r)) == (403, "issuer_only")
    assert client.get("/api/v1/issuer/key-batches", headers=auth(owner.token)).status_code == 403
    r = client.post("/api/v1/issuer/key-batches", json=body, headers=auth(issuer.token, "m1"))
    assert r.status_code == 201 and len(r.json()["keys"]) == 2
    listed = client.get("/api/v1/issuer/key-batches", headers=auth(issuer.token)).json()["items"]
    assert [(b["part_number"], b["count"], b["minted_by"]) for b in listed] == [("91379040", 2, "vendor@example.com")]


def test_a_reseller_in_two_organizations_sees_and_works_in_both(world, client):
    # R-CORE-2: a reseller/integrator account is a member of many organizations.
    one, _ = org_with_owner(world, "Customer One", "one@example.com")
    two, _ = org_with_owner(world, "Customer Two", "two@example.com", region="US")
    three, _ = org_with_owner(world, "Not a customer", "three@example.com")
    reseller = join(world, one, "reseller@example.com", Role.admin)
    world.member(two, reseller.user, Role.admin)
    me = client.get("/api/v1/me", headers=auth(reseller.token)).json()
    assert sorted((o["name"], o["role"]) for o in me["organizations"]) == \
        [("Customer One", "admin"), ("Customer Two", "admin")]
    orgs = client.get("/api/v1/orgs", headers=auth(reseller.token)).json()["items"]
    assert sorted(o["id"] for o in orgs) == sorted([one, two])
    load_regional_skus(world)
    [eu_key] = world.mint("AC-EU-ONLY")
    [us_key] = world.mint("AC-US-ONLY")
    assert redeem(client, reseller.token, one, eu_key).status_code == 200
    assert redeem(client, reseller.token, two, us_key).status_code == 200
    for org, part in ((one, "AC-EU-ONLY"), (two, "AC-US-ONLY")):
        lines = client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(reseller.token)).json()["lines"]
        assert [(l["part_number"], l["units"]) for l in lines] == [(part, 1)]
    assert client.get(f"/api/v1/orgs/{three}/wallet", headers=auth(reseller.token)).status_code == 404


def test_a_new_organization_makes_its_creator_the_owner(world, client):
    # R-CORE-2
    ann = person(world, "ann@example.com")
    r = client.post("/api/v1/orgs", json={"name": "Fresh", "region": "apac"}, headers=auth(ann.token))
    assert r.status_code == 201 and r.json()["role"] == "owner" and r.json()["region"] == "APAC"
    r = client.post("/api/v1/orgs", json={"name": "Nowhere", "region": "MARS"}, headers=auth(ann.token))
    assert (r.status_code, error_code(r)) == (400, "region_unknown")


def test_tokens_are_stored_hashed_and_required(world, client):
    # R-CORE-2: API tokens exist and are stored hashed.
    person(world, "ann@example.com")
    r = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": PASSWORD})
    assert r.status_code == 201
    token = r.json()["token"]
    with world.ctx.sessions() as s:
        stored = [(t.token_hash, t.prefix) for t in s.scalars(select(ApiToken))]
    assert all(token not in h for h, _ in stored) and any(token.startswith(p) for _, p in stored)
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 200
    r = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": "wrong password"})
    assert (r.status_code, error_code(r)) == (401, "credentials_invalid")
    assert error_code(client.get("/api/v1/me")) == "authentication_required"
    assert error_code(client.get("/api/v1/me", headers=auth("ent_nope"))) == "token_invalid"


# --- R-CORE-7 time ------------------------------------------------------------------------------

def _is_utc_iso(value: str) -> bool:
    parsed = datetime.fromisoformat(value)
    return parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


def test_times_in_answers_are_aware_utc_and_follow_the_clock(world, client, clock):
    # R-CORE-7: the one injected clock decides redeemed_at and the history's `at`.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [first, second] = world.mint("91379040", count=2)
    r1 = redeem(client, owner.token, org, first).json()
    later = clock.advance(timedelta(days=40, hours=3))
    r2 = redeem(client, owner.token, org, second).json()
    assert _is_utc_iso(r1["redeemed_at"]) and _is_utc_iso(r2["redeemed_at"])
    assert datetime.fromisoformat(r1["redeemed_at"]) == START
    assert datetime.fromisoformat(r2["redeemed_at"]) == later
    items = client.get(f"/api/v1/orgs/{org}/history", headers=auth(owner.token)).json()["items"]
    assert all(_is_utc_iso(i["at"]) for i in items)
    assert datetime.fromisoformat(items[0]["at"]) == later and datetime.fromisoformat(items[-1]["at"]) == START
    org_out = client.get(f"/api/v1/orgs/{org}", headers=auth(owner.token)).json()
    assert _is_utc_iso(org_out["created_at"])
    ledger = client.get(f"/api/v1/orgs/{org}/ledger", headers=auth(owner.token)).json()["items"]
    assert [datetime.fromisoformat(t["created_at"]) for t in ledger] == [later, START]
    with world.ctx.sessions() as s:
        stored = sorted(k.redeemed_at for k in s.scalars(select(LicenseKey)))
        assert stored == [START, later]
        assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in stored)
        ats = [e.at for e in s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == org))]
        assert all(t.tzinfo is UTC for t in ats)


def test_every_stored_time_column_is_utc_aware(engine):
    # R-CORE-7: every datetime column goes through UTCDateTime; PostgreSQL stores timestamptz.
    for table in Base.metadata.sorted_tables:
        for column in table.c:
            if isinstance(column.type, DateTime | UTCDateTime):
                assert isinstance(column.type, UTCDateTime), f"{table.name}.{column.name}"
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            naive = conn.execute(text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND data_type = 'timestamp without time zone'"
            )).all()
        assert naive == []


def test_a_naive_time_is_refused_by_the_database_layer(world):
    # R-CORE-7: nothing can store a time without a zone by accident.
    with pytest.raises(Exception, match="naive"), transaction(world.ctx.sessions) as s:
        tenancy.create_organization(s, name="Naive", region="EU", actor=operator(),
                                    now=datetime(2026, 1, 1, 12, 0))


def test_unknown_routes_and_methods_use_the_error_shape(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "detail"}
    r = client.delete("/api/v1/orgs")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
