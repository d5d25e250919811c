"""Redeem attempts are rate-limited per organization and per client (R-CORE-4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from conftest import auth
from entitle.api.app import create_app
from entitle.context import Context, build
from entitle.db import make_engine
from entitle.keys.models import LicenseKey
from entitle.tenancy.models import Role
from helpers import error_code, org_with_owner, redeem, wallet_of


def limited(ctx: Context, *, per_org: str = "1000/minute", per_client: str = "1000/minute",
            engine=None) -> Context:  # noqa: ANN001
    """A context like the test's (same database and clock) with low redeem limits."""
    settings = ctx.settings.model_copy(update={"redeem_limit_per_org": per_org,
                                               "redeem_limit_per_client": per_client})
    return build(settings, ctx.clock, engine=engine or ctx.engine)


@pytest.fixture
def low_org_limit(ctx: Context):  # noqa: ANN201
    with TestClient(create_app(ctx=limited(ctx, per_org="3/minute"))) as c:
        yield c


def test_the_fourth_redeem_in_a_minute_is_refused_with_retry_after(world, low_org_limit, clock):
    # R-CORE-4: per organization, 3/minute -> the 4th attempt is 429 rate_limited + Retry-After.
    client = low_org_limit
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    keys = world.mint("91379040", count=5)
    assert [redeem(client, owner.token, org, k).status_code for k in keys[:3]] == [200, 200, 200]
    clock.advance(timedelta(seconds=20))
    r = redeem(client, owner.token, org, keys[3])
    assert (r.status_code, error_code(r)) == (429, "rate_limited")
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 40
    assert r.json()["error"]["detail"]["scope"] == "organization"
    assert f"{retry} s" in r.json()["error"]["message"]
    assert wallet_of(world.ctx.engine, org) == {"91379040": 3}  # the refused key did not move
    # Moving the clock past the window lets redeems through again.
    clock.advance(timedelta(seconds=retry))
    assert redeem(client, owner.token, org, keys[3]).status_code == 200
    assert wallet_of(world.ctx.engine, org) == {"91379040": 4}


def test_failed_attempts_count_too(world, low_org_limit):
    # R-CORE-4: the limit is on attempts (guessing keys), not on successes.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [good] = world.mint("91379040")
    for typed in ("AAAAA-AAAAA-AAAAA-AAAAA", "bad", "BBBBB-BBBBB-BBBBB-BBBBB"):
        assert redeem(low_org_limit, owner.token, org, typed).status_code in (400, 404)
    r = redeem(low_org_limit, owner.token, org, good)
    assert error_code(r) == "rate_limited"


def test_the_organization_limit_is_per_organization(world, low_org_limit):
    # R-CORE-4: another organization has its own counter.
    one, ann = org_with_owner(world, "One", "ann@example.com")
    two, bob = org_with_owner(world, "Two", "bob@example.com")
    keys = world.mint("91379040", count=5)
    for k in keys[:3]:
        assert redeem(low_org_limit, ann.token, one, k).status_code == 200
    assert redeem(low_org_limit, ann.token, one, keys[3]).status_code == 429
    assert redeem(low_org_limit, bob.token, two, keys[3]).status_code == 200


def test_the_client_limit_applies_across_organizations_and_not_to_other_clients(world, ctx, clock):
    # R-CORE-4: per client (address), 2/minute, whatever organization it redeems into.
    app = create_app(ctx=limited(ctx, per_client="2/minute"))
    one, ann = org_with_owner(world, "One", "ann@example.com")
    two, _ = org_with_owner(world, "Two", "bob@example.com")
    world.member(two, ann.user, Role.admin)
    keys = world.mint("91379040", count=4)
    with TestClient(app, client=("192.0.2.10", 40000)) as first, \
            TestClient(app, client=("192.0.2.20", 40000)) as second:
        assert redeem(first, ann.token, one, keys[0]).status_code == 200
        assert redeem(first, ann.token, two, keys[1]).status_code == 200
        r = redeem(first, ann.token, two, keys[2])
        assert (r.status_code, error_code(r)) == (429, "rate_limited")
        assert r.json()["error"]["detail"]["scope"] == "client"
        assert "Retry-After" in r.headers
        # the organizations are well under their own limit: another client gets through
        assert redeem(second, ann.token, two, keys[2]).status_code == 200
        clock.advance(timedelta(seconds=61))
        assert redeem(first, ann.token, one, keys[3]).status_code == 200


def test_two_app_instances_share_the_counters(world, ctx, database_url):
    # R-CORE-4: two processes (two apps, each with its own engine) on one database share limits.
    other_engine = make_engine(database_url)
    try:
        app_a = create_app(ctx=limited(ctx, per_org="3/minute"))
        app_b = create_app(ctx=limited(ctx, per_org="3/minute", engine=other_engine))
        org, owner = org_with_owner(world, "Acme", "ann@example.com")
        keys = world.mint("91379040", count=4)
        with TestClient(app_a) as a, TestClient(app_b) as b:
            codes = [redeem(c, owner.token, org, k).status_code for c, k in zip((a, b, a), keys)]
            assert codes == [200, 200, 200]
            r = redeem(b, owner.token, org, keys[3])
            assert (r.status_code, error_code(r)) == (429, "rate_limited")
        with world.ctx.sessions() as s:
            assert s.query(LicenseKey).filter_by(state="active").count() == 1
    finally:
        other_engine.dispose()


def test_a_redis_url_without_the_redis_client_names_the_extra(ctx, monkeypatch):
    # ENTITLE_REDIS_URL needs the optional `[redis]` extra: without it, a plain refusal that says
    # what to install (not an ImportError from deep inside `limits` on the first redeem).
    import importlib.util

    from entitle.errors import EntitleError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "redis" else find_spec(name, *args))
    settings = ctx.settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    with pytest.raises(EntitleError) as refused:
        build(settings, ctx.clock, engine=ctx.engine).redeem_limiter  # noqa: B018 - made on first use
    assert refused.value.code == "redis_unavailable" and refused.value.status == 500
    assert "entitle[redis]" in refused.value.message and "ENTITLE_REDIS_URL" in refused.value.message
