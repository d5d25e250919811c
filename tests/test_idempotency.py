"""Idempotency-Key on every POST that moves units (R-CORE-5, SPEC §5)."""

from __future__ import annotations

from datetime import timedelta

from conftest import auth
from entitle.keys.models import KeyBatch
from helpers import count_rows, error_code, history_of, ledger_counts, org_with_owner, person, wallet_of


def test_redeem_without_an_idempotency_key_is_refused(world, client):
    # R-CORE-5
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040")
    for headers in (auth(owner.token), auth(owner.token, "   ")):
        r = client.post(f"/api/v1/orgs/{org}/wallet/redeem", json={"key": code}, headers=headers)
        assert (r.status_code, error_code(r)) == (400, "idempotency_key_required")
        assert "Idempotency-Key" in r.json()["error"]["message"]
    assert wallet_of(world.ctx.engine, org) == {}


def test_a_retry_with_the_same_key_and_body_replays_the_answer_and_moves_nothing(world, client, clock):
    # R-CORE-5: same Idempotency-Key + same body -> the same answer, marked as replayed.
    engine = world.ctx.engine
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040", quantity=4)
    url = f"/api/v1/orgs/{org}/wallet/redeem"
    first = client.post(url, json={"key": code}, headers=auth(owner.token, "retry-1"))
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    moved = (wallet_of(engine, org), ledger_counts(engine), history_of(engine, org))
    clock.advance(timedelta(minutes=5))
    for _ in range(3):
        again = client.post(url, json={"key": code}, headers=auth(owner.token, "retry-1"))
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
    assert (wallet_of(engine, org), ledger_counts(engine), history_of(engine, org)) == moved
    assert wallet_of(engine, org) == {"91379040": 4}
    # Without the key the retry is an honest second attempt, refused as such.
    r = client.post(url, json={"key": code}, headers=auth(owner.token, "retry-2"))
    assert (r.status_code, error_code(r)) == (409, "key_already_redeemed")


def test_the_same_key_with_another_body_is_refused(world, client):
    # R-CORE-5
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [a, b] = world.mint("91379040", count=2)
    url = f"/api/v1/orgs/{org}/wallet/redeem"
    assert client.post(url, json={"key": a}, headers=auth(owner.token, "k")).status_code == 200
    r = client.post(url, json={"key": b}, headers=auth(owner.token, "k"))
    assert (r.status_code, error_code(r)) == (422, "idempotency_key_reused")
    assert wallet_of(world.ctx.engine, org) == {"91379040": 1}


def test_idempotency_keys_are_per_organization(world, client):
    # R-CORE-5 / R-CORE-1: another organization's key with the same name is a different request.
    one, ann = org_with_owner(world, "One", "ann@example.com")
    two, bob = org_with_owner(world, "Two", "bob@example.com")
    [a, b] = world.mint("91379040", count=2)
    assert client.post(f"/api/v1/orgs/{one}/wallet/redeem", json={"key": a},
                       headers=auth(ann.token, "same")).status_code == 200
    r = client.post(f"/api/v1/orgs/{two}/wallet/redeem", json={"key": b}, headers=auth(bob.token, "same"))
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers
    assert r.json()["key_id"] != client.post(f"/api/v1/orgs/{one}/wallet/redeem", json={"key": a},
                                             headers=auth(ann.token, "same")).json()["key_id"]


def test_a_refused_redeem_is_not_remembered(world, client):
    # R-CORE-5: a refusal moved nothing, so a retry with the same key checks again.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040")
    url = f"/api/v1/orgs/{org}/wallet/redeem"
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    r = client.post(url, json={"key": typo}, headers=auth(owner.token, "k"))
    assert error_code(r) == "key_mistyped"
    r = client.post(url, json={"key": typo}, headers=auth(owner.token, "k"))
    assert error_code(r) == "key_mistyped" and "Idempotent-Replayed" not in r.headers


def test_a_mint_replay_returns_no_codes_and_mints_nothing(world, client):
    # R-CORE-5 / R-CORE-4: codes are shown once and never stored, so a replay cannot show them.
    issuer = person(world, "vendor@example.com", issuer=True)
    body = {"part_number": "91379041", "count": 3, "quantity_per_key": 2}
    first = client.post("/api/v1/issuer/key-batches", json=body, headers=auth(issuer.token, "mint-1"))
    assert first.status_code == 201 and len(first.json()["keys"]) == 3
    before = (count_rows(world.ctx.engine, KeyBatch), ledger_counts(world.ctx.engine))
    again = client.post("/api/v1/issuer/key-batches", json=body, headers=auth(issuer.token, "mint-1"))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["keys"] is None
    assert again.json()["batch"] == first.json()["batch"]
    assert (count_rows(world.ctx.engine, KeyBatch), ledger_counts(world.ctx.engine)) == before
    r = client.post("/api/v1/issuer/key-batches", json=body, headers=auth(issuer.token))
    assert (r.status_code, error_code(r)) == (400, "idempotency_key_required")
    r = client.post("/api/v1/issuer/key-batches", json={**body, "count": 4}, headers=auth(issuer.token, "mint-1"))
    assert (r.status_code, error_code(r)) == (422, "idempotency_key_reused")


def test_cancel_requires_and_honours_an_idempotency_key(world, client):
    # R-CORE-5: cancelling moves units too.
    issuer = person(world, "vendor@example.com", issuer=True)
    [code] = world.mint("91379040")
    url = "/api/v1/issuer/keys/cancel"
    r = client.post(url, json={"key": code}, headers=auth(issuer.token))
    assert error_code(r) == "idempotency_key_required"
    first = client.post(url, json={"key": code}, headers=auth(issuer.token, "c"))
    again = client.post(url, json={"key": code}, headers=auth(issuer.token, "c"))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
