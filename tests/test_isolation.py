"""Tenant isolation over every documented route (R-CORE-1).

The route list comes from ``/openapi.json`` at test time, so routes added later are walked too.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from sqlalchemy import select

from conftest import auth
from entitle.db import Base, transaction
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Membership, Role, User
from helpers import history_of, join, org_with_owner, redeem, wallet_of

PARAM = re.compile(r"{([^}]+)}")
SECRET_NAME = "Bravo Hidden Works"


def _b_row_ids(engine, org_b: int) -> list[int]:  # noqa: ANN001
    """Ids of every row that belongs to B (any table with an org_id), plus B's own id."""
    ids = {org_b}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if "org_id" in table.c and "id" in table.c:
                ids.update(conn.execute(select(table.c.id).where(table.c.org_id == org_b)).scalars())
    return sorted(ids)


def _sample(schema: dict[str, Any], name: str, spec: dict[str, Any], plausible: dict[str, Any]) -> Any:
    """A plausible value for a JSON-schema property; known field names get meaningful values."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        return _body(spec["components"]["schemas"][ref], spec, plausible)
    if name in plausible and plausible[name] in schema.get("enum", [plausible[name]]):
        return plausible[name]
    for choice in schema.get("anyOf", []) + schema.get("oneOf", []):
        if choice.get("type") != "null":
            return _sample(choice, name, spec, plausible)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return [_sample(schema.get("items", {}), name, spec, plausible)]
    if kind == "object":
        return _body(schema, spec, plausible)
    if schema.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    return "x" * max(1, schema.get("minLength", 1))


def _body(schema: dict[str, Any], spec: dict[str, Any], plausible: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _sample(schema, "", spec, plausible)
    props = schema.get("properties", {})
    return {name: _sample(sub, name, spec, plausible) for name, sub in props.items()}


def _request_body(op: dict[str, Any], spec: dict[str, Any], plausible: dict[str, Any]) -> Any:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return _body(content["application/json"].get("schema", {}), spec, plausible)
    return None


def test_no_route_lets_one_organization_see_or_change_anothers_data(world, client, app):
    # R-CORE-1: A's owner (not an issuer) calls every documented route with B's ids.
    engine = world.ctx.engine
    org_a, alice = org_with_owner(world, "Alpha", "alice@example.com")
    org_b, bob = org_with_owner(world, SECRET_NAME, "bravo-owner@example.com")
    join(world, org_b, "bravo-viewer@example.com", Role.viewer)
    redeemed, spare_a = world.mint("91379041", count=2, quantity=3)
    [spare_b] = world.mint("91379040")
    assert redeem(client, bob.token, org_b, redeemed).status_code == 200
    # B has an Access Commander installation with a device (their ids are among B's row ids).
    r = client.post(f"/api/v1/orgs/{org_b}/ac/installations", json={"name": "Bravo Plant", "uid": "BRAVO-AC-UID"},
                    headers=auth(bob.token))
    assert r.status_code == 201
    b_inst, b_device_token = r.json()["installation"]["id"], r.json()["token"]
    assert client.post(f"/api/v1/orgs/{org_b}/ac/installations/{b_inst}/devices",
                       json={"serial": "BRAVO-SERIAL-1"}, headers=auth(bob.token)).status_code == 201
    # B has an AXIS system with a device, a started subscription and a piece of hardware.
    axis = f"/api/v1/orgs/{org_b}/axis"
    r = client.post(f"{axis}/systems", json={"uid": "BRAVO-AXIS-UID", "name": "Bravo Cams",
                                              "product": "axis-camera-station"}, headers=auth(bob.token))
    assert r.status_code == 201
    assert client.post(f"{axis}/systems/{r.json()['id']}/devices", headers=auth(bob.token), json={
        "devices": [{"serial": "BRAVO-AXIS-CAM", "license_type": "core"}]}).status_code == 201
    assert client.post(f"{axis}/products/axis-camera-station/subscription", headers=auth(bob.token)).status_code == 201
    assert client.post(f"{axis}/hardware", json={"serial": "BRAVO-HW-1", "product": "axis-camera-station",
                                                 "license_type": "core"}, headers=auth(bob.token)).status_code == 201
    # B has a My2N site with an apartment, a phone in it, a site admin, a voucher in its credit pool.
    b_my2n = _bravo_my2n(world, client, bob.token, org_b)
    # B has a webhook endpoint with a delivery (a test event).
    b_hook = _bravo_webhook(client, bob.token, org_b)
    b_wallet, b_history = wallet_of(engine, org_b), history_of(engine, org_b)
    with world.ctx.sessions() as s:
        b_members = sorted((m.user_id, m.role) for m in s.scalars(select(Membership).where(Membership.org_id == org_b)))
    assert b_wallet == {"91379041": 3} and len(b_history) == 20

    markers = [SECRET_NAME, "bravo-owner@example.com", "bravo-viewer@example.com", redeemed,
               redeemed.replace("-", ""), "BRAVO-AC-UID", "BRAVO-SERIAL-1", b_device_token,
               "BRAVO-AXIS-UID", "BRAVO-AXIS-CAM", "BRAVO-HW-1", *MY2N_MARKERS, b_my2n["voucher"],
               b_my2n["voucher"].replace("-", ""), *WEBHOOK_MARKERS, b_hook["secret"]] + [h for _, _, h in b_history]
    spec = client.get("/openapi.json").json()
    b_ids = _b_row_ids(engine, org_b)
    plausible = {"email": "alice@example.com", "role": "owner", "key": spare_b, "name": "x",
                 "region": "EU", "part_number": "91379040", "password": "wrong password",
                 "count": 1, "quantity_per_key": 1, "serial": "BRAVO-SERIAL-1",
                 "license_device": "BRAVO-SERIAL-1", "url": "http://127.0.0.1:9/alpha-hook",
                 "event_types": ["key.redeemed"]}

    by_name: dict[str, list[Any]] = {"org_id": [org_b], "serial": ["BRAVO-SERIAL-1", "BRAVO-HW-1", MY2N_SERIAL],
                                     "product": ["axis-camera-station"], "apartment_id": [b_my2n["apartment"]],
                                     "user_id": [b_my2n["site_admin"]], "endpoint_id": [b_hook["endpoint"]],
                                     "delivery_id": [b_hook["delivery"]], **_bravo_owners_own(world, bob.user)}
    calls = 0
    for path, ops in spec["paths"].items():
        params = PARAM.findall(path)
        for method, op in ops.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            body = _request_body(op, spec, plausible)
            # org_id -> B's id; serials and product codes -> B's; any other id -> every id of a row that B owns.
            choices = [by_name.get(p, b_ids) for p in params]
            for values in itertools.product(*choices):
                url = path
                for p, v in zip(params, values):
                    url = url.replace("{" + p + "}", str(v))
                calls += 1
                r = client.request(method.upper(), url, json=body,
                                   headers=auth(alice.token, f"iso-{calls}"))
                where = f"{method.upper()} {url} -> {r.status_code}"
                assert r.status_code < 500, where
                for marker in markers:
                    assert marker not in r.text, f"{where} shows B's data ({marker!r})"
                if params:
                    assert r.status_code in (401, 403, 404, 422), f"{where}: {r.text[:300]}"
                    assert "error" in r.json(), where
                    if r.status_code == 422:
                        # a plausible body must not be the reason: the route refused B, not the body
                        assert r.json()["error"]["code"] != "invalid_request", f"{where}: {r.text[:300]}"
    assert calls >= len(spec["paths"])

    # Nothing of B's changed, and alice did not become a member of B.
    assert wallet_of(engine, org_b) == b_wallet
    assert history_of(engine, org_b) == b_history
    with world.ctx.sessions() as s:
        assert sorted((m.user_id, m.role) for m in s.scalars(
            select(Membership).where(Membership.org_id == org_b))) == b_members
    # B's spare key was not redeemed anywhere by A's attempts against B.
    assert redeem(client, bob.token, org_b, spare_b).status_code == 200
    # The same plausible requests do work for A's own organization (the walk is meaningful).
    assert redeem(client, alice.token, org_a, spare_a).status_code == 200
    r = client.post(f"/api/v1/orgs/{org_a}/members", json={"email": "bravo-viewer@example.com", "role": "viewer"},
                    headers=auth(alice.token))
    assert r.status_code == 201


def _bravo_owners_own(world, user) -> dict[str, list[int]]:  # noqa: ANN001
    """Ids that belong to a user, not to an organization: B's owner's API token and web session."""
    with transaction(world.ctx.sessions) as s:
        tenancy.start_session(s, user=s.get(User, user.id), now=world.now)
    with world.ctx.sessions() as s:
        return {"token_id": [t.id for t in tenancy.active_tokens(s, user_id=user.id)],
                "session_id": [w.id for w in tenancy.active_sessions(s, user_id=user.id, now=world.now)]}


WEBHOOK_URL = "http://127.0.0.1:9/bravo-secret-hook"
WEBHOOK_MARKERS = [WEBHOOK_URL, "bravo-secret-hook", "Bravo ERP hook"]


def _bravo_webhook(client, token: str, org_b: int) -> dict[str, Any]:  # noqa: ANN001
    """B's webhook endpoint (R-CORE-8) and one delivery on it (a test event)."""
    r = client.post(f"/api/v1/orgs/{org_b}/webhooks", json={"url": WEBHOOK_URL, "event_types": ["my2n.*"],
                                                            "description": "Bravo ERP hook"}, headers=auth(token))
    assert r.status_code == 201, r.text
    endpoint, secret = r.json()["id"], r.json()["secret"]
    r = client.post(f"/api/v1/orgs/{org_b}/webhooks/{endpoint}/test", headers=auth(token))
    assert r.status_code == 202, r.text
    return {"endpoint": endpoint, "delivery": r.json()["id"], "secret": secret}


def test_another_organizations_webhook_or_delivery_looks_like_none(world, client, app):
    # R-CORE-1 for webhooks: A's owner, in A's own organization, names B's endpoint, or B's
    # delivery under A's own endpoint: every webhook route answers as if there were none.
    org_a, alice = org_with_owner(world, "Alpha", "alice@example.com")
    org_b, bob = org_with_owner(world, SECRET_NAME, "bravo-owner@example.com")
    b = _bravo_webhook(client, bob.token, org_b)
    r = client.post(f"/api/v1/orgs/{org_a}/webhooks", json={"url": "http://127.0.0.1:9/alpha-hook"},
                    headers=auth(alice.token))
    assert r.status_code == 201, r.text
    a_endpoint = r.json()["id"]
    b_history = history_of(world.ctx.engine, org_b)
    spec = client.get("/openapi.json").json()
    routes = [(path, method, op) for path, ops in spec["paths"].items() if "{endpoint_id}" in path
              for method, op in ops.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(routes) >= 5
    calls = 0
    for endpoint, delivery, wanted in ((b["endpoint"], b["delivery"], "webhook_endpoint_not_found"),
                                       (a_endpoint, b["delivery"], "webhook_delivery_not_found")):
        for path, method, op in routes:
            if wanted == "webhook_delivery_not_found" and "{delivery_id}" not in path:
                continue
            url = path.replace("{org_id}", str(org_a)).replace("{endpoint_id}", str(endpoint)) \
                .replace("{delivery_id}", str(delivery))
            calls += 1
            r = client.request(method.upper(), url, json=_request_body(op, spec, {"url": "http://127.0.0.1:9/x"}),
                               headers=auth(alice.token))
            where = f"{method.upper()} {url} -> {r.status_code}: {r.text[:300]}"
            assert (r.status_code, r.json()["error"]["code"]) == (404, wanted), where
            for marker in (*WEBHOOK_MARKERS, b["secret"]):
                assert marker not in r.text, where
    assert calls >= len(routes) + 1
    assert history_of(world.ctx.engine, org_b) == b_history  # nothing of B's changed


MY2N_SERIAL = "BRAVO-MY2N-PHONE"
MY2N_MARKERS = ["Bravo Towers", "Bravo Flat 7", MY2N_SERIAL]


def _bravo_my2n(world, client, token: str, org_b: int) -> dict[str, Any]:  # noqa: ANN001
    """B's My2N data through the API: a site, an apartment with a phone, a site admin, and a
    voucher in the site credit pool (R-MY-2, R-MY-5)."""
    from entitle.actors import operator
    from entitle.db import transaction
    from entitle.my2n import services as my2n

    base = f"/api/v1/orgs/{org_b}/sites"
    r = client.post(base, json={"name": "Bravo Towers"}, headers=auth(token))
    assert r.status_code == 201, r.text
    site = r.json()["id"]
    r = client.post(f"{base}/{site}/apartments", json={"name": "Bravo Flat 7"}, headers=auth(token))
    assert r.status_code == 201, r.text
    apartment = r.json()["id"]
    r = client.post(f"{base}/{site}/devices", json={"serial": MY2N_SERIAL, "kind": "phone", "apartment_id": apartment},
                    headers=auth(token))
    assert r.status_code == 201, r.text
    admin = join(world, org_b, "bravo-site-admin@example.com", Role.viewer)
    r = client.post(f"{base}/{site}/roles", json={"email": "bravo-site-admin@example.com", "role": "site_admin"},
                    headers=auth(token))
    assert r.status_code == 200, r.text
    with transaction(world.ctx.sessions) as s:
        _, [voucher] = my2n.mint_vouchers(s, part_number="9137958", name="Bravo distributor", years=1,
                                          subscriptions=1, scope="apartment", actor=operator(), now=world.now)
    r = client.post(f"{base}/{site}/vouchers/redeem", json={"code": voucher}, headers=auth(token, "bravo-voucher"))
    assert r.status_code == 200, r.text
    return {"site": site, "apartment": apartment, "site_admin": admin.user.id, "voucher": voucher}


def test_another_organizations_site_apartment_or_device_looks_like_none(world, client, app):
    # R-CORE-1 for My2N: A's owner, in A's own organization, names B's site, apartment, device or
    # user: every site route answers as if there were no such site (apartment, device).
    org_a, alice = org_with_owner(world, "Alpha", "alice@example.com")
    org_b, bob = org_with_owner(world, SECRET_NAME, "bravo-owner@example.com")
    b = _bravo_my2n(world, client, bob.token, org_b)
    r = client.post(f"/api/v1/orgs/{org_a}/sites", json={"name": "Alpha Court"}, headers=auth(alice.token))
    assert r.status_code == 201, r.text
    a_site = r.json()["id"]
    engine = world.ctx.engine
    b_history = history_of(engine, org_b)
    spec = client.get("/openapi.json").json()
    plausible = {"email": "alice@example.com", "name": "x", "serial": "x", "code": b["voucher"], "model": "apartment"}
    site_routes = [(path, method, op) for path, ops in spec["paths"].items() if "{site_id}" in path
                   for method, op in ops.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(site_routes) >= 20
    calls = 0
    # First B's site under A's organization, then B's apartment, device and user under A's site.
    for site_id, expect in ((b["site"], "site_not_found"), (a_site, None)):
        values = {"org_id": org_a, "site_id": site_id, "apartment_id": b["apartment"], "serial": MY2N_SERIAL,
                  "user_id": b["site_admin"]}
        for path, method, op in site_routes:
            params = PARAM.findall(path)
            if expect is None and not {"apartment_id", "serial"} & set(params):
                continue
            url = path
            for p in params:
                url = url.replace("{" + p + "}", str(values[p]))
            calls += 1
            r = client.request(method.upper(), url, json=_request_body(op, spec, plausible),
                               headers=auth(alice.token, f"cross-{calls}"))
            where = f"{method.upper()} {url} -> {r.status_code}: {r.text[:300]}"
            code = r.json()["error"]["code"] if r.status_code >= 400 else None
            wanted = expect or ("apartment_not_found" if "{apartment_id}" in path else "device_not_found")
            assert (r.status_code, code) == (404, wanted), where
            for marker in ("Bravo Towers", "Bravo Flat 7"):  # B's names (the serial is the caller's own input)
                assert marker not in r.text, where
    assert calls >= len(site_routes) + 3
    assert history_of(engine, org_b) == b_history  # nothing of B's changed


def test_tables_that_hold_tenant_data_name_their_organization():
    # R-CORE-1 / STYLE 4: a tenant-owned row has a non-null organization id. Global tables (users,
    # the catalog, the issuer's signing keys, counters) have no org_id; any table that has one
    # must fill it.
    tenant_tables = {"memberships", "history_entries", "ledger_accounts", "ledger_transactions",
                     "key_batches", "idempotency_records", "events"}
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    assert tenant_tables <= set(tables)
    for name, table in tables.items():
        if name in tenant_tables:
            assert "org_id" in table.c, f"{name} has no org_id"
        if "org_id" in table.c:
            assert not table.c.org_id.nullable, f"{name}.org_id is nullable"
