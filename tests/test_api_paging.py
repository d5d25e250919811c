"""Every list of the API is paginated (SPEC §5 "pagination on lists", issue 15 point 5).

A list answers ``{"items": [...], "next_cursor": ...}``: at most ``limit`` items (default 50, at
most 500; AXIS devices 1,000) in a keyset order, and ``next_cursor`` brings the next page
(docs/api.md). The first test walks the OpenAPI document, so a list added later without paging
fails it; the others page through real lists to the end.
"""

from __future__ import annotations

from typing import Any

from conftest import auth
from entitle.catalog import services as catalog
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role, User
from helpers import join, org_with_owner, person

API = "/api/v1"
P = "axis-camera-station"

# Lists that answer whole because they are bounded by construction; nothing else may.
BOUNDED = {
    "/api/v1/webhooks/event-types": len(webhooks.EVENT_TYPES),  # the fixed set of event types
    "/api/v1/orgs/{org_id}/webhooks": webhooks.MAX_ENDPOINTS,  # at most 20 per organization
}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _answer_schema(spec: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    ok = next(r for s, r in op["responses"].items() if s.startswith("2"))
    return _resolve(spec, ok.get("content", {}).get("application/json", {}).get("schema", {}))


def test_every_list_endpoint_pages_with_limit_and_cursor(client):
    # SPEC §5: a GET answering an array, or an object with items, takes limit and cursor and
    # answers next_cursor; its limit has a maximum (a page is bounded).
    spec = client.get("/openapi.json").json()
    lists, unpaged = [], []
    for path, ops in spec["paths"].items():
        if "get" not in ops:
            continue
        answer = _answer_schema(spec, ops["get"])
        if answer.get("type") != "array" and "items" not in answer.get("properties", {}):
            continue
        lists.append(path)
        params = {p["name"]: p for p in ops["get"].get("parameters", []) if p["in"] == "query"}
        paged = ("limit" in params and "cursor" in params and "next_cursor" in answer.get("properties", {})
                 and answer["properties"]["items"].get("type") == "array"
                 and params["limit"]["schema"].get("maximum", 10**9) <= 1000)
        if not paged and path not in BOUNDED:
            unpaged.append(path)
    assert not unpaged, f"lists without limit, cursor and next_cursor: {unpaged}"
    assert set(BOUNDED) <= set(lists), "a bounded list is gone: drop it from BOUNDED"
    assert all(bound <= 100 for bound in BOUNDED.values())
    assert len(lists) >= 25  # the walk sees the lists (sites, devices, catalog…)


def walk(client: Any, url: str, token: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a list, page by page: no page larger than ``limit``, no item twice, and
    the last page says so (next_cursor null)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        r = client.get(url, params={"limit": limit, **({"cursor": cursor} if cursor is not None else {})},
                       headers=auth(token))
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a page before the last one is empty"
    raise AssertionError("the pages never end")


def test_a_large_catalog_comes_a_page_at_a_time(world, client):
    # Issue 15: GET /catalog/products answered 10.9 MB in one piece with a big catalog.
    reader = person(world, "reader@example.com").token
    doc = {"products": [{"code": f"bulk-{i:04d}", "name": f"Bulk product {i}", "model": "axis",
                         "skus": [{"part_number": f"BULK-{i:04d}", "name": "A unit", "grant_kind": "subscription",
                                   "grants": {"license_type": "core"}, "term_years": 1}]} for i in range(620)]}
    with transaction(world.ctx.sessions) as s:
        catalog.load(s, catalog.parse_obj(doc), actor=world.actor(world.user("vendor@example.com", issuer=True)),
                     now=world.now)
        every = {p.code for p in catalog.products(s)}
    first = client.get(f"{API}/catalog/products", headers=auth(reader))
    assert len(first.json()["items"]) == 50 and first.json()["next_cursor"] is not None
    assert len(first.content) < 100_000
    assert len(client.get(f"{API}/catalog/products?limit=500", headers=auth(reader)).json()["items"]) == 500
    codes = [p["code"] for p in walk(client, f"{API}/catalog/products", reader, 200)]
    assert len(codes) == len(set(codes)) and set(codes) == every  # each product once, in the catalog's order
    assert codes[-620:] == [f"bulk-{i:04d}" for i in range(620)]
    r = client.get(f"{API}/catalog/products?limit=501", headers=auth(reader))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_tokens_sessions_and_members_come_in_pages(world, client):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    for i in range(4):
        join(world, org, f"m{i}@example.com", Role.viewer)
    with transaction(world.ctx.sessions) as s:
        user = s.get(User, owner.user.id)
        made = [tenancy.create_token(s, user=user, name=f"t{i}", now=world.now)[1].id for i in range(4)]
        for _ in range(3):
            tenancy.start_session(s, user=user, now=world.now)
    tokens = walk(client, f"{API}/auth/tokens", owner.token, 2)
    assert [t["id"] for t in tokens][:4] == made[::-1] and len(tokens) == 5  # newest first, the test's own last
    assert len(walk(client, f"{API}/auth/sessions", owner.token, 1)) == 3
    members = walk(client, f"{API}/orgs/{org}/members", owner.token, 2)
    assert [m["email"] for m in members] == ["ann@example.com", *(f"m{i}@example.com" for i in range(4))]


def test_axis_devices_page_by_serial(world, client):
    # The device list keeps its order by serial number (a keyset on the serial whose cursor is
    # the last device's id); removed devices are not in it; a cursor of another system's device
    # bounds nothing.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    base = f"{API}/orgs/{org}/axis/systems"
    h = auth(owner.token)
    systems = [client.post(base, json={"uid": uid, "product": P}, headers=h).json()["id"] for uid in ("A", "B")]
    serials = [f"CAM-{n:03d}" for n in (7, 3, 11, 1, 5, 9, 2)]
    r = client.post(f"{base}/{systems[0]}/devices", json={"devices": [{"serial": x, "license_type": "core"}
                                                                      for x in serials]}, headers=h)
    assert r.status_code == 201, r.text
    client.post(f"{base}/{systems[1]}/devices", json={"devices": [{"serial": "ZZZ", "license_type": "core"}]},
                headers=h)
    assert client.post(f"{base}/{systems[0]}/devices/remove", json={"serials": ["CAM-005"]},
                       headers=h).status_code == 200
    listed = walk(client, f"{base}/{systems[0]}/devices", owner.token, 2)
    assert [d["serial"] for d in listed] == sorted(set(serials) - {"CAM-005"})
    first = client.get(f"{base}/{systems[0]}/devices?limit=2", headers=h).json()
    other = client.get(f"{base}/{systems[1]}/devices?cursor={first['next_cursor']}", headers=h).json()
    assert other == {"items": [], "next_cursor": None}
    assert len(client.get(f"{base}/{systems[0]}/devices", headers=h).json()["items"]) == 6  # 1,000 a page by default


def test_every_list_of_an_organization_honours_limit(world, client):
    # The wiring of each list: with limit=1 no page holds more than one item, and following
    # next_cursor ends, for every paged list under /orgs/{org_id} and the caller's own.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    with transaction(world.ctx.sessions) as s:
        s.get(User, owner.user.id).is_issuer = True
    for i in range(2):
        join(world, org, f"m{i}@example.com", Role.viewer)
        client.post(f"{API}/orgs/{org}/ac/installations", json={"name": f"HQ {i}"}, headers=auth(owner.token))
        client.post(f"{API}/orgs/{org}/axis/systems", json={"uid": f"S{i}", "product": P}, headers=auth(owner.token))
        client.post(f"{API}/orgs/{org}/sites", json={"name": f"Block {i}"}, headers=auth(owner.token))
    spec = client.get("/openapi.json").json()
    walked = 0
    for path, ops in spec["paths"].items():
        params = ops.get("get", {}).get("parameters", [])
        if not any(p["name"] == "cursor" for p in params):
            continue
        if {p["name"] for p in params if p["in"] == "path"} - {"org_id"}:
            continue
        items = walk(client, path.replace("{org_id}", str(org)), owner.token, 1)
        assert len({str(x) for x in items}) == len(items), path
        walked += 1
    assert walked >= 15
