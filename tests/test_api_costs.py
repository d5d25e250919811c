"""What an API request costs the database, and what is built once (issue 17; docs/benchmarks.md,
"The API layer"). Counted, not timed: SQL statements through SQLAlchemy's events, builds of the
OpenAPI document, the token look-ups a cache saves, and the bound a cached token keeps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fastapi.applications
import pytest
from sqlalchemy import Engine, event, select, update
from starlette.responses import JSONResponse

from conftest import auth
from entitle.platform.models import Event
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import ApiToken, Role
from helpers import join, org_with_owner, redeem

# Issue 17's goal: a redeem's transaction runs at most 10 statements. What they are: the
# idempotency record's claim, which on PostgreSQL also locks the organization (1); one read of the
# organization and the key with the history head, the wallet's accounts of the key's SKU and the
# batch account with their units, and whether there are webhooks (1); a lot's new account (an AXIS
# subscription key: 1); the key's conditional UPDATE (1); the history entry and its head (2;
# PostgreSQL 1); the event (1); the ledger: on PostgreSQL the accounts' lock and their balances,
# read again after it (2), then the transaction with its entries (SQLite 2, PostgreSQL 1); the
# idempotency record's answer (1). So 9, with a new lot 10, on both. Webhook endpoints add their
# read and the deliveries (2). Before issue 17: 19, and 3 more to authenticate.
REDEEM_STATEMENTS = {"91379040": 9, "AXIS-ACS-CORE-1Y": 10}
REDEEM_GOAL = 10


@contextmanager
def transactions(engine: Engine) -> Iterator[list[list[str]]]:
    """The statements each transaction ran while the block ran (BEGIN to COMMIT or ROLLBACK)."""
    done: list[list[str]] = []
    running: dict[int, list[str]] = {}

    def begin(conn: Any) -> None:
        running[id(conn)] = []

    def end(conn: Any) -> None:
        if id(conn) in running:
            done.append(running.pop(id(conn)))

    def statement(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if id(conn) in running and not sql.startswith("BEGIN"):
            running[id(conn)].append(" ".join(sql.split())[:120])

    hooks = [("begin", begin), ("commit", end), ("rollback", end), ("before_cursor_execute", statement)]
    for name, hook in hooks:
        event.listen(engine, name, hook)
    try:
        yield done
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)


def _counted_redeem(world, client, ctx, part: str) -> list[str]:  # noqa: ANN001
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    first, second = world.mint(part, count=2)
    assert redeem(client, owner.token, org, first).status_code == 200  # the wallet account exists now
    with transactions(ctx.engine) as done:
        r = redeem(client, owner.token, org, second)
    assert r.status_code == 200, r.text
    assert r.json()["wallet_units"] == 2
    [txn] = [t for t in done if any("idempotency_records" in s for s in t)]
    # The token was looked up by the first redeem: only the rate limits' counters run beside it.
    assert all("rate_limit_counters" in s for t in done if t is not txn for s in t), done
    return txn


@pytest.mark.parametrize("part", sorted(REDEEM_STATEMENTS))
def test_a_redeem_stays_within_its_statement_budget(world, client, ctx, part):
    txn = _counted_redeem(world, client, ctx, part)
    budget = REDEEM_STATEMENTS[part]
    assert budget <= REDEEM_GOAL
    assert len(txn) <= budget, f"{len(txn)} statements (budget {budget}):\n" + "\n".join(txn)
    assert not any("webhook_endpoints" in s for s in txn), txn  # none here: known from the first read


def test_a_redeem_into_an_organization_with_webhooks_writes_their_deliveries(world, client, ctx):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    r = client.post(f"/api/v1/orgs/{org}/webhooks", headers=auth(owner.token),
                    json={"url": "https://example.com/hook", "event_types": ["key.redeemed"]})
    assert r.status_code in (200, 201), r.text
    [code] = world.mint("91379040")
    with transactions(ctx.engine) as done:
        assert redeem(client, owner.token, org, code).status_code == 200
    [txn] = [t for t in done if any("idempotency_records" in s for s in t)]
    assert any(s.startswith("INSERT INTO webhook_deliveries") for s in txn), txn


def test_a_read_runs_in_one_transaction_with_its_authentication(world, client, ctx):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    with transactions(ctx.engine) as done:
        r = client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(owner.token))  # the token is new here
    assert r.status_code == 200, r.text
    assert len(done) == 1 and len(done[0]) == 2, done  # the token's actor, then the wallet
    with transactions(ctx.engine) as done:
        assert client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(owner.token)).status_code == 200
    assert len(done) == 1 and len(done[0]) == 1, done  # the actor is remembered: the wallet only


def test_openapi_json_is_built_and_encoded_once_per_process(ctx, monkeypatch):
    from fastapi.testclient import TestClient

    from entitle.api.app import create_app

    built, encoded = [], []
    real_build, real_render = fastapi.applications.get_openapi, JSONResponse.render
    monkeypatch.setattr(fastapi.applications, "get_openapi", lambda **kw: built.append(1) or real_build(**kw))
    monkeypatch.setattr(JSONResponse, "render", lambda self, content: encoded.append(1) or real_render(self, content))
    with TestClient(create_app(ctx=ctx)) as c:
        answers = [c.get("/openapi.json") for _ in range(3)]
    assert {r.status_code for r in answers} == {200} and len({r.content for r in answers}) == 1
    assert answers[0].headers["content-type"] == "application/json"
    assert answers[0].json()["info"]["title"] == "Entitle"
    assert (len(built), len(encoded)) == (1, 1)


def test_a_token_revoked_here_stops_at_once_and_elsewhere_within_the_bound(world, client, ctx):
    # docs/architecture.md, "Authentication": a process remembers a token's actor for
    # heartbeat_token_ttl_seconds; its own changes are seen at once.
    clock = [0.0]
    ctx._token_actors = tenancy.TokenActors(30.0, monotonic=lambda: clock[0])
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    viewer = join(world, org, "val@example.com", Role.viewer)
    me = f"/api/v1/orgs/{org}"
    assert client.get(me, headers=auth(owner.token)).status_code == 200
    assert client.get(me, headers=auth(viewer.token)).status_code == 200

    # This process revokes the owner's token (the API, the services): refused at once.
    with ctx.sessions() as s:
        [token_id] = [t.id for t in tenancy.active_tokens(s, user_id=owner.user.id)]
    assert client.post(f"/api/v1/auth/tokens/{token_id}/revoke", headers=auth(owner.token)).status_code == 200
    assert client.get(me, headers=auth(owner.token)).json()["error"]["code"] == "token_invalid"

    # Another process revokes the viewer's token (here: a statement outside any session): this
    # process trusts what it looked up until the bound has passed, then refuses.
    assert client.get(me, headers=auth(viewer.token)).status_code == 200  # looked up at 0.0
    with ctx.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.user_id == viewer.user.id).values(revoked_at=world.now))
    clock[0] = 29.0
    assert client.get(me, headers=auth(viewer.token)).status_code == 200
    clock[0] = 30.0
    assert client.get(me, headers=auth(viewer.token)).json()["error"]["code"] == "token_invalid"


def test_a_role_changed_here_applies_to_the_next_request(world, client, ctx):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    admin = join(world, org, "adm@example.com", Role.admin)
    body = {"email": "new@example.com", "role": "viewer"}
    tenancy_user = world.user("new@example.com")
    assert tenancy_user.id
    r = client.post(f"/api/v1/orgs/{org}/members", json=body, headers=auth(admin.token))
    assert r.status_code == 403  # an admin does not manage members; the actor is now remembered
    world.member(org, admin.user, Role.owner)  # another session of this process makes them owner
    r = client.post(f"/api/v1/orgs/{org}/members", json=body, headers=auth(admin.token))
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/orgs/{org}", headers=auth(owner.token)).status_code == 200


@contextmanager
def thread_hops(monkeypatch: Any) -> Iterator[list[str]]:
    """What each hop to the thread pool ran while the block ran (FastAPI's and ours)."""
    import anyio.to_thread

    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    yield hops
    monkeypatch.setattr(anyio.to_thread, "run_sync", real)


def test_a_sync_route_its_answer_and_its_commit_take_one_thread_hop(world, client, ctx, monkeypatch):
    # entitle.api.routing: the route, then its commit, in one hop; its answer validated on the loop.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    world.user("new@example.com")
    assert client.get(f"/api/v1/orgs/{org}", headers=auth(owner.token)).status_code == 200  # the token remembered
    with thread_hops(monkeypatch) as hops, transactions(ctx.engine) as done:
        r = client.post(f"/api/v1/orgs/{org}/members", json={"email": "new@example.com", "role": "viewer"},
                        headers=auth(owner.token))
    assert r.status_code == 201, r.text
    assert hops == ["_work"], hops
    [txn] = done
    assert any(s.startswith("INSERT INTO memberships") for s in txn), txn
    with ctx.sessions() as s:  # committed before the answer was sent
        assert "new@example.com" in {m.user.email for m in tenancy.members(s, org)}


def test_a_refused_write_is_rolled_back_whatever_it_wrote(world, client, ctx, monkeypatch):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    with thread_hops(monkeypatch) as hops:
        r = client.delete(f"/api/v1/orgs/{org}/members/ann@example.com", headers=auth(owner.token))
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_owner", r.text
    assert "_work" in hops and "_finish" in hops, hops  # the route, then the rollback at the request's end
    with ctx.sessions() as s:
        assert [m.user.email for m in tenancy.members(s, org)] == ["ann@example.com"]


def test_a_quick_read_runs_on_the_event_loop_on_sqlite_only(world, client, ctx, monkeypatch):
    # entitle.api.routing.quick_read: no hop on SQLite; on PostgreSQL a statement is a round trip
    # the event loop must not wait for, so the route runs in the thread pool.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    url = f"/api/v1/orgs/{org}/wallet"
    assert client.get(url, headers=auth(owner.token)).status_code == 200
    with thread_hops(monkeypatch) as hops:
        r = client.get(url, headers=auth(owner.token))
    assert r.status_code == 200 and r.json() == {"org_id": org, "lines": []}, r.text
    assert hops == ([] if ctx.engine.dialect.name == "sqlite" else ["_work"]), hops
    with thread_hops(monkeypatch) as hops:  # a read not marked quick: one hop on both
        assert client.get(f"/api/v1/orgs/{org}/ledger", headers=auth(owner.token)).status_code == 200
    assert hops == ["_work"], hops


def test_an_axis_product_status_reads_the_registration_once(world, client, ctx):
    # The route asks the status, which reads the registration first, instead of reading it itself
    # and again in the status. Its statements: the product and its SKUs, the registration, the
    # need, the allocations, the wallet's lots, the hardware, the compensation remainders (8).
    org, owner = org_with_owner(world, "Cams", "cam@example.com")
    base, h = f"/api/v1/orgs/{org}/axis", auth(owner.token)
    r = client.post(f"{base}/systems", json={"uid": "ACS-1", "name": "HQ", "product": "axis-camera-station"}, headers=h)
    assert r.status_code == 201, r.text
    r = client.post(f"{base}/systems/{r.json()['id']}/devices", headers=h,
                    json={"devices": [{"serial": f"CAM-{i}", "license_type": "core"} for i in range(3)]})
    assert r.status_code == 201, r.text
    assert client.post(f"{base}/products/axis-camera-station/subscription", headers=h).status_code == 201
    [key] = world.mint("AXIS-ACS-CORE-1Y", quantity=5)
    assert redeem(client, owner.token, org, key).status_code == 200
    url = f"{base}/products/axis-camera-station"
    assert client.get(url, headers=h).status_code == 200
    with transactions(ctx.engine) as done:
        r = client.get(url, headers=h)
    assert r.status_code == 200 and r.json()["license_types"]["core"]["need"] == 3, r.text
    assert r.json()["wallet"]["units"]["core"] == {"subscription:1": 5}, r.text
    [txn] = done
    registrations = [s for s in txn if s.startswith("SELECT axis_products.")]
    assert len(registrations) == 1 and len(txn) <= 8, "\n".join(txn)
    # A product the organization never registered is still refused.
    other, other_owner = org_with_owner(world, "Other", "other@example.com")
    r = client.get(f"/api/v1/orgs/{other}/axis/products/axis-camera-station", headers=auth(other_owner.token))
    assert r.status_code == 404 and r.json()["error"]["code"] == "product_not_registered", r.text


def test_adding_devices_checks_the_growth_allowance_without_the_whole_status(world, client, ctx):
    # R-AX-9 after a device change: the need now and the year's allocation, not the status's
    # wallet lots, hardware and compensation remainders.
    org, owner = org_with_owner(world, "Cams", "cam@example.com")
    base, h = f"/api/v1/orgs/{org}/axis", auth(owner.token)
    r = client.post(f"{base}/systems", json={"uid": "ACS-1", "name": "HQ", "product": "axis-camera-station"}, headers=h)
    assert r.status_code == 201, r.text
    devices = f"{base}/systems/{r.json()['id']}/devices"
    assert client.post(f"{base}/products/axis-camera-station/subscription", headers=h).status_code == 201
    [key] = world.mint("AXIS-ACS-CORE-1Y", quantity=1)
    assert redeem(client, owner.token, org, key).status_code == 200
    r = client.post(f"{base}/products/axis-camera-station/allocations", headers={**h, "Idempotency-Key": "a1"},
                    json={"lines": [{"license_type": "core", "year": 0, "units": 1}]})
    assert r.status_code == 201, r.text
    with transactions(ctx.engine) as done:
        r = client.post(devices, headers=h, json={"devices": [{"serial": f"CAM-{i}", "license_type": "core"}
                                                              for i in range(3)]})
    assert r.status_code == 201, r.text
    [txn] = [t for t in done if any(s.startswith("INSERT INTO axis_devices") for s in t)]
    assert not [s for s in txn if "axis_compensation_remainders" in s or s.startswith("SELECT axis_hardware.")], txn
    # 3 devices on 1 unit: past twice the allocation, flagged once.
    status = client.get(f"{base}/products/axis-camera-station", headers=h).json()
    assert status["growth"] == {"over": True, "license_types": {"core": {"need": 3, "allocated": 1, "limit": 2}}}
    with ctx.sessions() as s:
        flagged = s.scalars(select(Event.id).where(Event.org_id == org, Event.type == "axis.growth_allowance.exceeded"))
        assert len(flagged.all()) == 1


def test_a_license_generation_plans_once_under_the_license_lock(world, client, ctx):
    # R-AC-3 R-AC-4: the answer's plan is the one the generation made after locking the current
    # license, not a second one made before it: the current license is read once (the lock).
    org, owner = org_with_owner(world, "Plant", "plant@example.com")
    h = auth(owner.token)
    r = client.post(f"/api/v1/orgs/{org}/ac/installations", json={"name": "Plant"}, headers=h)
    assert r.status_code == 201, r.text
    base = f"/api/v1/orgs/{org}/ac/installations/{r.json()['installation']['id']}"
    assert client.post(f"{base}/devices", json={"serial": "LD-1", "type": "ip_intercom"}, headers=h).status_code == 201
    assert client.post(f"{base}/devices/LD-1/state", json={"connected": True}, headers=h).status_code == 200
    for key in world.mint("91379040", count=2, quantity=2):
        assert redeem(client, owner.token, org, key).status_code == 200
    body = {"license_device": "LD-1", "packages": [{"part_number": "91379040", "quantity": 1}]}
    assert client.post(f"{base}/licenses", json=body, headers=auth(owner.token, "lic-1")).status_code == 201
    with transactions(ctx.engine) as done:
        r = client.post(f"{base}/licenses", json=body, headers=auth(owner.token, "lic-2"))
    assert r.status_code == 201, r.text
    [move] = r.json()["plan"]["moves"]  # the first license's unit back, the new one's out: 3 -> 3
    assert (move["back_to_wallet"], move["from_wallet"], move["wallet_before"], move["wallet_after"]) == (1, 1, 3, 3)
    [txn] = [t for t in done if any(s.startswith("INSERT INTO ac_licenses") for s in t)]
    current = [s for s in txn if s.startswith("SELECT ac_licenses.id")]
    assert len(current) <= 2, "\n".join(txn)  # the lock, and the device list's license after the change


def test_an_allocation_reads_the_wallet_once_before_it_moves_units(world, client, ctx):
    # R-AX-4 R-AX-5: expire_lots reads the lots once and hands the usable ones to the status
    # before and to the allocation: 25 statements (27 when each read them again): the idempotency
    # record (2), the product and its SKUs (2), the registration (1), the lots (1), the status
    # before (5), the target account, balances, the ledger transaction and entries (4), the
    # allocation (1), history (3), the status after for the answer (6).
    org, owner = org_with_owner(world, "Cams", "cam@example.com")
    base, h = f"/api/v1/orgs/{org}/axis", auth(owner.token)
    r = client.post(f"{base}/systems", json={"uid": "ACS-1", "name": "HQ", "product": "axis-camera-station"}, headers=h)
    assert r.status_code == 201, r.text
    assert client.post(f"{base}/products/axis-camera-station/subscription", headers=h).status_code == 201
    for key in world.mint("AXIS-ACS-CORE-1Y", quantity=5, count=2):
        assert redeem(client, owner.token, org, key).status_code == 200
    url, body = f"{base}/products/axis-camera-station/allocations", {"lines": [{"license_type": "core", "year": 0, "units": 1}]}
    assert client.post(url, headers={**h, "Idempotency-Key": "a0"}, json=body).status_code == 201
    with transactions(ctx.engine) as done:
        r = client.post(url, headers={**h, "Idempotency-Key": "a1"}, json=body)
    assert r.status_code == 201, r.text
    [txn] = [t for t in done if any(s.startswith("INSERT INTO axis_allocations") for s in t)]
    # PostgreSQL also locks the organization and, in the ledger, the accounts: 2 more.
    budget = 25 + (2 if ctx.engine.dialect.name == "postgresql" else 0)
    assert len(txn) <= budget, "\n".join(txn)
    assert client.get(f"{base}/products/axis-camera-station", headers=h).json()["wallet"]["units"]["core"] == {
        "subscription:1": 8}
