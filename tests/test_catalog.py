"""The catalog is data (R-CORE-3, R-AC-1): the shipped parts, loading, validation, who may load."""

from __future__ import annotations

import pytest
import yaml

from conftest import auth
from entitle.actors import operator
from entitle.catalog import services as catalog
from entitle.catalog.models import Product, Sku
from entitle.db import transaction
from entitle.errors import EntitleError
from helpers import count_rows, error_code, org_with_owner, person


@pytest.fixture
def shipped(world, client):  # noqa: ANN001, ANN201
    """The shipped catalog as the API lists it: part number -> SKU."""
    token = person(world, "reader@example.com").token
    products = client.get("/api/v1/catalog/products?limit=500", headers=auth(token)).json()["items"]
    return {s["part_number"]: s for p in products for s in p["skus"]}, {p["code"]: p for p in products}


def test_access_commander_packages(shipped):
    # R-CORE-3 / R-AC-1: +5 devices, +25 Attendance users, integration (LDAP + CSV).
    skus, products = shipped
    assert skus["91379040"]["grants"] == {"devices": 5} and skus["91379040"]["grant_kind"] == "capacity"
    assert skus["91379041"]["grants"] == {"attendance_users": 25}
    assert skus["91379042"]["grant_kind"] == "feature"
    assert skus["91379042"]["grants"] == {"features": ["integration"]}
    assert "LDAP" in skus["91379042"]["name"] and "CSV" in skus["91379042"]["name"]
    assert {skus[p]["product"] for p in ("91379040", "91379041", "91379042")} == {"access-commander"}
    assert products["access-commander"]["model"] == "access_commander"


def test_access_commander_tiers(shipped):
    # R-AC-1: Basic (free: 50 users, 5 devices, 1 admin), Advanced (300, 30, 5), Pro (1,000, 100,
    # unlimited admins, LDAP + CSV), Pro Unlimited - as data.
    skus, _ = shipped
    tiers = {s["grants"]["tier"]: s for s in skus.values() if s["grant_kind"] == "tier"}
    assert set(tiers) == {"basic", "advanced", "pro", "pro_unlimited"}

    def numbers(t: str) -> tuple:
        g = tiers[t]["grants"]
        return g["attendance_users"], g["devices"], g["admins"], "integration" in g["features"]

    assert numbers("basic") == (50, 5, 1, False) and "free" in tiers["basic"]["name"].lower()
    assert numbers("advanced") == (300, 30, 5, False)
    assert numbers("pro") == (1000, 100, None, True)  # None: unlimited
    assert numbers("pro_unlimited") == (None, None, None, True)


def test_axis_subscription_terms_and_expansion(shipped):
    # R-CORE-3 / R-AX-4 / R-AX-10: a subscription SKU sold for 1 and for 5 years; an expansion SKU.
    skus, products = shipped
    axis = [s for s in skus.values() if products[s["product"]]["model"] == "axis"]
    subs = [s for s in axis if s["grant_kind"] == "subscription"]
    terms = {(s["grants"]["license_type"], s["term_years"]) for s in subs}
    assert {("core", 1), ("core", 5)} <= terms
    assert all(s["grants"]["devices"] == 1 for s in subs)
    assert [s for s in axis if s["grant_kind"] == "expansion"]


def test_my2n_vouchers_and_their_regions(shipped):
    # R-CORE-3 / R-MY-5: 02683-001 is US & APAC only; 9137958 everywhere else.
    skus, products = shipped
    assert set(skus["02683-001"]["regions"]) == {"US", "APAC"}
    assert set(skus["9137958"]["regions"]) == {"EU", "LATAM", "MEA"}
    for part in ("9137958", "02683-001"):
        assert skus[part]["grant_kind"] == "apartment_year" and skus[part]["grants"] == {"apartment_years": 1}
        assert products[skus[part]["product"]]["model"] == "my2n"
    # every other SKU is sold everywhere
    assert all(s["regions"] == [] for p, s in skus.items() if p not in ("9137958", "02683-001"))


def test_loading_twice_updates_instead_of_duplicating(world):
    # R-CORE-3: the shipped catalog was loaded once by the fixture; load it again, changed.
    engine = world.ctx.engine
    before = (count_rows(engine, Product), count_rows(engine, Sku))
    doc = yaml.safe_load(catalog.DEFAULT_CATALOG.read_text())
    doc["products"][0]["skus"][0]["name"] = "Renamed +5 devices"
    with transaction(world.ctx.sessions) as s:
        counts = catalog.load(s, catalog.parse_obj(doc), actor=operator(), now=world.now)
    assert counts["products_created"] == counts["skus_created"] == 0
    assert counts["products_updated"] == before[0] and counts["skus_updated"] == before[1]
    assert (count_rows(engine, Product), count_rows(engine, Sku)) == before
    with world.ctx.sessions() as s:
        assert catalog.sku_by_part(s, "91379040").name == "Renamed +5 devices"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["products"][0]["skus"][0].update(grant_kind="lifetime"), "products.0.skus.0.grant_kind"),
    (lambda d: d["products"][1].update(model="netflix"), "products.1.model"),
    (lambda d: d["products"][0]["skus"][1].pop("part_number"), "products.0.skus.1.part_number"),
    (lambda d: d["products"][1]["skus"][0].update(term_years=0), "products.1.skus.0.term_years"),
    (lambda d: d.pop("products"), "products"),
])
def test_an_invalid_catalog_names_the_field(world, mutate, field):
    # R-CORE-3: catalog_invalid, with where and what.
    doc = yaml.safe_load(catalog.DEFAULT_CATALOG.read_text())
    mutate(doc)
    with pytest.raises(EntitleError) as exc:
        catalog.parse(yaml.safe_dump(doc))
    assert exc.value.code == "catalog_invalid"
    assert field in [e["at"] for e in exc.value.detail["errors"]]


def test_an_unreadable_catalog_file_is_refused():
    # R-CORE-3
    with pytest.raises(EntitleError) as exc:
        catalog.parse("products: [unclosed", filename="catalog.yaml")
    assert exc.value.code == "catalog_unreadable"


def test_only_the_issuer_loads_the_catalog_through_the_api(world, client):
    # R-CORE-3 / R-CORE-2
    _, owner = org_with_owner(world, "Acme", "ann@example.com")
    issuer = person(world, "vendor@example.com", issuer=True)
    doc = {"products": [{"code": "my2n", "name": "My2N", "model": "my2n", "skus": [
        {"part_number": "9137958", "name": "My2N voucher", "grant_kind": "apartment_year",
         "grants": {"apartment_years": 1}, "term_years": 1, "regions": ["EU", "LATAM", "MEA"]},
        {"part_number": "MY2N-NEW", "name": "New part", "grant_kind": "apartment_year",
         "grants": {"apartment_years": 2}, "term_years": 2}]}]}
    r = client.post("/api/v1/catalog", json=doc, headers=auth(owner.token))
    assert (r.status_code, error_code(r)) == (403, "issuer_only")
    r = client.post("/api/v1/catalog", json=doc, headers=auth(issuer.token))
    assert r.status_code == 200, r.text
    assert r.json() == {"products_created": 0, "products_updated": 1, "skus_created": 1, "skus_updated": 1}
    bad = {"products": [{"code": "x", "name": "X", "model": "axis", "skus": [{"part_number": "P1"}]}]}
    r = client.post("/api/v1/catalog", json=bad, headers=auth(issuer.token))
    assert (r.status_code, error_code(r)) == (400, "catalog_invalid")
    assert {"products.0.skus.0.name", "products.0.skus.0.grant_kind"} <= \
        {e["at"] for e in r.json()["error"]["detail"]["errors"]}


def test_a_part_number_cannot_move_to_another_product(world):
    # R-CORE-3: a SKU's part number belongs to one product.
    doc = {"products": [{"code": "other", "name": "Other", "model": "axis", "skus": [
        {"part_number": "91379040", "name": "stolen", "grant_kind": "capacity"}]}]}
    with pytest.raises(EntitleError) as exc, transaction(world.ctx.sessions) as s:
        catalog.load(s, catalog.parse_obj(doc), actor=operator(), now=world.now)
    assert exc.value.code == "sku_product_conflict"
