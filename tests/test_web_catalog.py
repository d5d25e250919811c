"""The Catalog page (R-CORE-3): the issuer sees every product and its part numbers in words and
loads a catalog document from a file; nobody else sees it, and a bad document changes nothing."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from entitle.catalog.models import Product, Sku
from helpers import org_with_owner, person
from test_web import HTMX, sign_in
from test_web_ac import content_of, error_text, text_of

DOC = {"products": [{"code": "door-plus", "name": "Door Plus", "model": "access_commander", "skus": [
    {"part_number": "DP-5", "name": "Door Plus 5 devices", "grant_kind": "capacity", "grants": {"devices": 5},
     "term_years": 2, "regions": ["EU"], "alt_part_numbers": ["01999-001"]}]}]}


def counts(world) -> tuple[int, int]:
    with world.ctx.sessions() as s:
        return (s.scalar(select(func.count()).select_from(Product)), s.scalar(select(func.count()).select_from(Sku)))


def test_the_issuer_sees_the_catalog_in_words(world, client):  # R-CORE-3
    world.load_catalog()
    person(world, "vendor@example.com", issuer=True)
    sign_in(client, "vendor@example.com")
    page = client.get("/issuer/catalog")
    assert page.status_code == 200
    text = text_of(content_of(page.text))
    assert "AXIS" in text and "My2N" in text and "2N Access Commander" in text
    # What one unit grants, in words: a count and its noun, a setting and its value
    assert "91379041 also 01373-001 Access Commander license for +25 Attendance users Capacity package 25 attendance " \
           "users perpetual everywhere" in text
    assert "license type: core" in text
    assert 'href="/issuer/catalog"' in page.text  # in the navigation


def test_the_issuer_loads_a_document_and_nothing_is_deleted(world, client):  # R-CORE-3
    world.load_catalog()
    before = counts(world)
    person(world, "vendor@example.com", issuer=True)
    csrf = sign_in(client, "vendor@example.com")
    r = client.post("/issuer/catalog", data={"csrf_token": csrf}, headers=HTMX,
                    files={"catalog_file": ("door.json", json.dumps(DOC).encode(), "application/json")})
    assert r.status_code == 200, r.text
    text = text_of(r.text)
    assert ("Catalog loaded: 1 product added and 0 products updated, 1 SKU added and 0 SKUs updated. "
            "Nothing was deleted.") in text
    assert "DP-5 also 01999-001 Door Plus 5 devices Capacity package 5 devices 2 years EU" in text
    assert counts(world) == (before[0] + 1, before[1] + 1)


def test_a_bad_document_is_refused_and_changes_nothing(world, client):  # R-CORE-3
    world.load_catalog()
    before = counts(world)
    person(world, "vendor@example.com", issuer=True)
    csrf = sign_in(client, "vendor@example.com")
    bad = {"products": [{"code": "x", "name": "X", "model": "nonsense"}]}
    r = client.post("/issuer/catalog", data={"csrf_token": csrf}, headers=HTMX,
                    files={"catalog_file": ("bad.json", json.dumps(bad).encode(), "application/json")})
    assert r.status_code == 400 and error_text(r.text).startswith("catalog_invalid")
    r = client.post("/issuer/catalog", data={"csrf_token": csrf}, headers=HTMX,
                    files={"catalog_file": ("bin.json", b"\xff\xfe\x00", "application/json")})
    assert r.status_code == 400 and "not UTF-8 text" in error_text(r.text)
    assert counts(world) == before


def test_the_catalog_page_is_the_issuers_only(world, client):  # R-CORE-3
    org_with_owner(world, "Acme", "ann@example.com")
    before = counts(world)
    csrf = sign_in(client, "ann@example.com")
    assert client.get("/issuer/catalog").status_code == 403
    r = client.post("/issuer/catalog", data={"csrf_token": csrf}, headers=HTMX,
                    files={"catalog_file": ("door.json", json.dumps(DOC).encode(), "application/json")})
    assert r.status_code == 403 and counts(world) == before
    assert 'href="/issuer/catalog"' not in client.get("/").text
