"""Every text the services store has its column's bound, whatever the interface: the console and
the web UI reach the services without the API's schema, and SQLite does not enforce a column's
size (docs/security.md, "Bounds"). Over it: a refusal with a stable code, nothing stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from entitle.actors import operator
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.errors import EntitleError
from entitle.keys.models import KeyBatch
from entitle.keys import services as keys
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import ApiToken, Organization, User
from helpers import org_with_owner, person


def refused(world, work) -> EntitleError:
    with pytest.raises(EntitleError) as caught, transaction(world.ctx.sessions) as s:
        work(s)
    return caught.value


def count(world, model) -> int:
    with world.ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_an_organization_name_is_at_most_200_characters(world):
    with transaction(world.ctx.sessions) as s:
        tenancy.create_organization(s, name="A" * 200, region="EU", actor=operator(), now=world.now)
    e = refused(world, lambda s: tenancy.create_organization(s, name="B" * 201, region="EU", actor=operator(),
                                                               now=world.now))
    assert (e.code, e.detail["length"]) == ("name_invalid", 201) and "at most 200 characters" in e.message
    with world.ctx.sessions() as s:
        assert [n for n in s.scalars(select(Organization.name)) if n != "Issuer"] == ["A" * 200]


def test_an_email_a_token_name_and_a_key_batch_name_have_their_bounds(world):
    e = refused(world, lambda s: tenancy.create_user(s, email="a" * 310 + "@example.com", password="long enough",
                                                       now=world.now))
    assert e.code == "text_too_long" and e.detail == {"field": "email", "length": 322, "max_length": 320}
    assert "The e-mail address is 322 characters long: shorten it to at most 320." == e.message
    assert count(world, User) == 0

    ann = person(world, "ann@example.com").user
    before = count(world, ApiToken)
    e = refused(world, lambda s: tenancy.create_token(s, user=s.get(User, ann.id), name="t" * 201, now=world.now))
    assert e.code == "text_too_long" and e.detail["max_length"] == 200
    assert count(world, ApiToken) == before

    world.load_catalog()
    e = refused(world, lambda s: keys.mint(s, sku_part="91379040", quantity_per_key=1, count=1, actor=operator(),
                                           now=world.now, name="n" * 201))
    assert e.code == "text_too_long" and count(world, KeyBatch) == 0


def test_a_webhook_description_is_at_most_200_characters(world):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    actor = world.actor(owner.user)
    e = refused(world, lambda s: webhooks.create_endpoint(s, org_id=org, url="https://hooks.example.com/x",
                                                          event_types=[], actor=actor, now=world.now,
                                                          key=world.ctx.secret, description="d" * 201))
    assert e.code == "text_too_long" and e.detail["field"] == "description"
