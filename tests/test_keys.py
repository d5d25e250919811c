"""Redeeming license keys through the API (R-CORE-4) and what minting and redeeming write."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import auth
from entitle.actors import operator
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.keys import codes
from entitle.keys import services as key_services
from entitle.keys.models import LicenseKey
from entitle.ledger.models import LedgerTransaction
from helpers import (
    balances_by_kind, dump_database, error_code, load_regional_skus, mistype, org_with_owner, person, redeem,
    unissued_code, wallet_of,
)


def test_redeem_moves_the_keys_units_into_the_wallet(world, client):
    # R-CORE-4
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040", quantity=3)
    r = redeem(client, owner.token, org, code.lower().replace("-", " "))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["part_number"], body["product"], body["quantity"], body["wallet_units"]) == \
        ("91379040", "access-commander", 3, 3)
    assert wallet_of(world.ctx.engine, org) == {"91379040": 3}


def test_each_refusal_has_its_own_code_and_status(world, client):
    # R-CORE-4: unknown, mistyped, malformed, already redeemed, cancelled, wrong region.
    eu, ann = org_with_owner(world, "Acme EU", "ann@example.com", region="EU")
    us, bob = org_with_owner(world, "Acme US", "bob@example.com", region="US")
    issuer = person(world, "vendor@example.com", issuer=True)
    [used, cancelled] = world.mint("91379040", count=2)
    # Parts sold in some regions only (the My2N voucher parts never go to a wallet: see
    # tests/test_my2n_words.py).
    load_regional_skus(world)
    [us_voucher] = world.mint("AC-US-ONLY")
    [eu_voucher] = world.mint("AC-EU-ONLY")
    assert redeem(client, ann.token, eu, used).status_code == 200
    c = client.post("/api/v1/issuer/keys/cancel", json={"key": cancelled}, headers=auth(issuer.token, "c1"))
    assert c.status_code == 200, c.text

    outcomes = {
        "unknown": redeem(client, ann.token, eu, unissued_code()),
        "mistyped": redeem(client, ann.token, eu, mistype(eu_voucher)),
        "malformed": redeem(client, ann.token, eu, "not-a-key"),
        "again, same org": redeem(client, ann.token, eu, used),
        "again, other org": redeem(client, bob.token, us, used),
        "cancelled": redeem(client, ann.token, eu, cancelled),
        "US part into EU": redeem(client, ann.token, eu, us_voucher),
        "EU part into US": redeem(client, bob.token, us, eu_voucher),
    }
    got = {name: (r.status_code, error_code(r)) for name, r in outcomes.items()}
    assert got == {
        "unknown": (404, "key_unknown"),
        "mistyped": (400, "key_mistyped"),
        "malformed": (400, "key_malformed"),
        "again, same org": (409, "key_already_redeemed"),
        "again, other org": (409, "key_already_redeemed"),
        "cancelled": (409, "key_cancelled"),
        "US part into EU": (403, "key_wrong_region"),
        "EU part into US": (403, "key_wrong_region"),
    }
    for r in outcomes.values():
        assert r.json()["error"]["message"].endswith(".")
    region = outcomes["US part into EU"].json()["error"]["detail"]
    assert region["organization_region"] == "EU" and set(region["key_regions"]) == {"US", "APAC"}
    # Another organization does not learn when the key was used (R-CORE-1).
    assert outcomes["again, other org"].json()["error"]["detail"].get("redeemed_at") is None
    assert outcomes["again, same org"].json()["error"]["detail"]["redeemed_at"]
    # The refused keys are still redeemable where they belong, and nothing else moved.
    assert redeem(client, bob.token, us, us_voucher).status_code == 200
    assert redeem(client, ann.token, eu, eu_voucher).status_code == 200
    assert wallet_of(world.ctx.engine, eu) == {"91379040": 1, "AC-EU-ONLY": 1}
    assert wallet_of(world.ctx.engine, us) == {"AC-US-ONLY": 1}


def test_keys_are_stored_only_as_hashes(world, client):
    # R-CORE-4: no code (in any spelling) anywhere in license_keys, nor in any other table -
    # not even in the idempotency record of the API mint that returned them.
    issuer = person(world, "vendor@example.com", issuer=True)
    r = client.post("/api/v1/issuer/key-batches", json={"part_number": "91379041", "count": 5},
                    headers=auth(issuer.token, "mint-1"))
    assert r.status_code == 201, r.text
    minted = r.json()["keys"] + world.mint("91379040", count=5)
    assert len(minted) == 10
    with world.ctx.sessions() as s:
        rows = s.scalars(select(LicenseKey)).all()
        stored = {k.key_hash for k in rows}
        row_text = " ".join(f"{k.id} {k.batch_id} {k.key_hash} {k.state}" for k in rows)
    assert stored == {codes.digest(codes.normalize(c)) for c in minted}
    everything = dump_database(world.ctx.engine).upper()
    for code in minted:
        compact = codes.normalize(code)
        assert code not in row_text and compact not in row_text.upper()
        assert code not in everything and compact not in everything
        # nor a fragment long enough to help guess it
        assert compact[:10] not in everything.replace("-", "")


def test_ledger_after_mint_and_redeem(world, client):
    # R-CORE-4 / R-CORE-5: mint moves units from the issuer's `issued` account to the batch;
    # redeeming one key moves its quantity from the batch to the wallet.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    engine = world.ctx.engine
    keys = world.mint("91379041", count=4, quantity=2)
    assert balances_by_kind(engine) == {"issued": -8, "key_batch": 8}
    assert redeem(client, owner.token, org, keys[0]).status_code == 200
    assert balances_by_kind(engine) == {"issued": -8, "key_batch": 6, "wallet": 2}
    with world.ctx.sessions() as s:
        kinds = [t.kind for t in s.scalars(select(LedgerTransaction).order_by(LedgerTransaction.id))]
    assert kinds == ["mint", "redeem"]
    # The organization's own ledger shows the redemption, both sides, and nothing of the mint.
    page = client.get(f"/api/v1/orgs/{org}/ledger", headers=auth(owner.token)).json()
    assert [(t["kind"], sorted((e["account_kind"], e["amount"]) for e in t["entries"]))
            for t in page["items"]] == [("redeem", [("issuer", -2), ("wallet", 2)])]


def test_cancel_moves_a_keys_units_to_cancelled_and_only_the_issuer_cancels(world, client):
    # R-CORE-4 / R-MY-5: only the issuer cancels; an unredeemed key only.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    issuer = person(world, "vendor@example.com", issuer=True)
    [a, b] = world.mint("91379041", count=2, quantity=1)
    r = client.post("/api/v1/issuer/keys/cancel", json={"key": a}, headers=auth(owner.token, "c0"))
    assert (r.status_code, error_code(r)) == (403, "issuer_only")
    assert client.post("/api/v1/issuer/keys/cancel", json={"key": a},
                       headers=auth(issuer.token, "c1")).status_code == 200
    assert balances_by_kind(world.ctx.engine) == {"issued": -2, "key_batch": 1, "cancelled": 1}
    assert redeem(client, owner.token, org, b).status_code == 200
    r = client.post("/api/v1/issuer/keys/cancel", json={"key": b}, headers=auth(issuer.token, "c2"))
    assert (r.status_code, error_code(r)) == (409, "key_not_active")
    assert balances_by_kind(world.ctx.engine) == {"issued": -2, "key_batch": 0, "cancelled": 1, "wallet": 1}


def test_an_unknown_organization_is_refused_before_what_is_wrong_with_the_key(world):
    # R-CORE-4: the organization and the key are read in one statement; the refusals keep their
    # order (the operator may name any organization, so this is the console's case).
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040")

    def refusal(org_id: int, typed: str) -> str:
        with pytest.raises(EntitleError) as caught, transaction(world.ctx.sessions) as s:
            key_services.redeem(s, org_id=org_id, typed_key=typed, actor=operator(), now=world.now)
        return caught.value.code

    assert refusal(org + 1000, "not-a-key") == "organization_not_found"
    assert refusal(org + 1000, unissued_code()) == "organization_not_found"
    assert refusal(org + 1000, code) == "organization_not_found"
    assert refusal(org, "not-a-key") == "key_malformed"
    assert refusal(org, unissued_code()) == "key_unknown"
    with transaction(world.ctx.sessions) as s:
        assert key_services.redeem(s, org_id=org, typed_key=code, actor=operator(), now=world.now)["quantity"] == 1
    assert refusal(org, code) == "key_already_redeemed"
    assert wallet_of(world.ctx.engine, org) == {"91379040": 1}
