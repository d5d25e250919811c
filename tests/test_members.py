"""Members of an organization (R-CORE-2): owners add people, change their roles and take them
out, through the services, the API, the CLI and the People page; the organization always keeps
an owner (``last_owner``); every change is in the history as a sentence."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import World, auth
from entitle.cli.main import app
from entitle.db import reading, transaction
from entitle.errors import Conflict, Forbidden, NotFound
from entitle.history.sentences import render
from entitle.history.services import page
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role
from helpers import error_code, join, org_with_owner, person
from test_web import HTMX, sign_in
from test_web_ac import content_of, error_text, text_of


def roles_of(world: World, org_id: int) -> dict[str, str]:
    with reading(world.ctx.sessions) as s:
        return {m.user.email: m.role for m in tenancy.members(s, org_id)}


# --- the rules -----------------------------------------------------------------------------------

def test_the_only_owner_can_be_neither_demoted_nor_removed(world):  # R-CORE-2
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "bob@example.com", Role.admin)
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        ann_user = tenancy.user_by_email(s, "ann@example.com")
        with pytest.raises(Conflict) as demoted:
            tenancy.add_member(s, org_id=org, user=ann_user, role=Role.admin, actor=ann, now=world.now)
    assert demoted.value.code == "last_owner" and "only owner of Acme" in demoted.value.message
    with transaction(world.ctx.sessions) as s, pytest.raises(Conflict) as removed:
        tenancy.remove_member(s, org_id=org, email="ann@example.com", actor=ann,
                              now=world.now)
    assert removed.value.code == "last_owner"
    assert roles_of(world, org) == {"ann@example.com": "owner", "bob@example.com": "admin"}

    # with a second owner, the first may step down, and then leave
    with transaction(world.ctx.sessions) as s:
        tenancy.add_member(s, org_id=org, user=tenancy.user_by_email(s, "bob@example.com"), role=Role.owner,
                           actor=ann, now=world.now)
    with transaction(world.ctx.sessions) as s:
        tenancy.add_member(s, org_id=org, user=tenancy.user_by_email(s, "ann@example.com"), role=Role.viewer,
                           actor=ann, now=world.now)
    assert roles_of(world, org) == {"ann@example.com": "viewer", "bob@example.com": "owner"}


def test_only_owners_change_members_and_a_stranger_is_not_found(world):  # R-CORE-2, R-CORE-1
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    admin = join(world, org, "adm@example.com", Role.admin)
    join(world, org, "val@example.com", Role.viewer)
    _other, outsider = org_with_owner(world, "Other", "olga@example.com")
    ann, adm_actor, olga = world.actor(_owner.user), world.actor(admin.user), world.actor(outsider.user)
    with transaction(world.ctx.sessions) as s, pytest.raises(Forbidden) as refused:
        tenancy.remove_member(s, org_id=org, email="val@example.com", actor=adm_actor,
                              now=world.now)
    assert refused.value.code == "role_insufficient"
    with transaction(world.ctx.sessions) as s, pytest.raises(NotFound) as hidden:
        tenancy.remove_member(s, org_id=org, email="val@example.com", actor=olga,
                              now=world.now)
    assert hidden.value.code == "organization_not_found"
    with transaction(world.ctx.sessions) as s, pytest.raises(NotFound) as missing:
        tenancy.remove_member(s, org_id=org, email="olga@example.com", actor=ann,
                              now=world.now)
    assert missing.value.code == "member_not_found" and "olga@example.com is not a member of Acme" in missing.value.message
    assert set(roles_of(world, org)) == {"ann@example.com", "adm@example.com", "val@example.com"}


def test_a_removal_reads_as_a_sentence_in_the_history(world):  # R-CORE-2, R-CORE-5
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        tenancy.remove_member(s, org_id=org, email="VAL@example.com ", actor=ann,
                              now=world.now)
    with reading(world.ctx.sessions) as s:
        last = page(s, org, limit=1)[0]
        sentence = render(last).text
    assert last.action == "member.removed"
    assert "removed val@example.com from the organization (they were a viewer)" in sentence


# --- the API -------------------------------------------------------------------------------------

def test_api_removes_a_member_and_refuses_the_last_owner(world, client):  # R-CORE-2
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    viewer = join(world, org, "val@example.com", Role.viewer)
    r = client.delete(f"/api/v1/orgs/{org}/members/ann@example.com", headers=auth(viewer.token))
    assert (r.status_code, error_code(r)) == (403, "role_insufficient")
    r = client.delete(f"/api/v1/orgs/{org}/members/ann@example.com", headers=auth(owner.token))
    assert (r.status_code, error_code(r)) == (409, "last_owner")
    r = client.post(f"/api/v1/orgs/{org}/members", json={"email": "ann@example.com", "role": "viewer"},
                    headers=auth(owner.token))
    assert (r.status_code, error_code(r)) == (409, "last_owner")
    r = client.delete(f"/api/v1/orgs/{org}/members/val@example.com", headers=auth(owner.token))
    assert r.status_code == 200 and r.json() == {"email": "val@example.com", "role": "viewer"}
    r = client.delete(f"/api/v1/orgs/{org}/members/val@example.com", headers=auth(owner.token))
    assert (r.status_code, error_code(r)) == (404, "member_not_found")
    # taken out: the organization is now one they cannot see (R-CORE-1); the account still works
    r = client.get(f"/api/v1/orgs/{org}", headers=auth(viewer.token))
    assert (r.status_code, error_code(r)) == (404, "organization_not_found")
    assert client.get("/api/v1/me", headers=auth(viewer.token)).status_code == 200


# --- the CLI -------------------------------------------------------------------------------------

def test_cli_member_remove(world, ctx):  # R-CORE-2
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    url = ctx.settings.database_url
    run = CliRunner().invoke
    done = run(app, ["member", "remove", "--org", "Acme", "--email", "val@example.com", "--json", "--database-url", url])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"org_id": org, "email": "val@example.com", "role": "viewer"}
    last = run(app, ["member", "remove", "--org", "Acme", "--email", "ann@example.com", "--database-url", url])
    assert last.exit_code == 1 and "last_owner" in last.stderr and "only owner of Acme" in last.stderr
    assert roles_of(world, org) == {"ann@example.com": "owner"}


# --- the People page -------------------------------------------------------------------------------

def test_people_page_lists_members_and_an_owner_manages_them(world, client):  # R-CORE-2
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    person(world, "new@example.com")
    csrf = sign_in(client, "ann@example.com")
    html = content_of(client.get("/people").text)
    page = text_of(html)
    assert "2 members (1 owner, 1 viewer)" in page and "ann@example.com (you)" in page
    # The list first, then the form to add someone; each member's role and Remove in their row
    assert page.index("Members") < page.index("Add a person")
    assert 'aria-label="Remove val@example.com"' in html and 'aria-label="Save the role of val@example.com"' in html

    r = client.post("/people", data={"csrf_token": csrf, "email": "new@example.com", "role": "admin"}, headers=HTMX)
    assert r.status_code == 200 and "new@example.com is now a member of Acme, as an admin." in text_of(r.text)
    r = client.post("/people", data={"csrf_token": csrf, "email": "val@example.com", "role": "admin"}, headers=HTMX)
    assert "val@example.com is now an admin of Acme." in text_of(r.text)
    r = client.post("/people/remove", data={"csrf_token": csrf, "email": "new@example.com"}, headers=HTMX)
    assert "new@example.com is no longer a member of Acme" in text_of(r.text)
    assert roles_of(world, org) == {"ann@example.com": "owner", "val@example.com": "admin"}

    r = client.post("/people/remove", data={"csrf_token": csrf, "email": "ann@example.com"}, headers=HTMX)
    assert r.status_code == 409 and error_text(r.text).startswith("last_owner ann@example.com is the only owner of Acme")
    r = client.post("/people", data={"csrf_token": csrf, "email": "nobody@example.com", "role": "viewer"},
                    headers=HTMX)
    assert r.status_code == 404 and "There is no Entitle account for nobody@example.com" in error_text(r.text)
    r = client.post("/people/remove", data={"email": "val@example.com"}, headers=HTMX)  # no CSRF token
    assert r.status_code == 403 and roles_of(world, org)["val@example.com"] == "admin"


def test_people_page_for_a_non_owner_shows_no_forms_and_refuses_changes(world, client):  # R-CORE-2
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "adm@example.com", Role.admin)
    csrf = sign_in(client, "adm@example.com")
    page = client.get("/people").text
    assert "Owners add people, change roles and take people out: ask one of them." in text_of(page)
    assert 'action="/people/remove"' not in page and 'action="/people"' not in page
    r = client.post("/people/remove", data={"csrf_token": csrf, "email": "ann@example.com"}, headers=HTMX)
    assert r.status_code == 403 and error_text(r.text).startswith("role_insufficient")
    assert roles_of(world, org) == {"ann@example.com": "owner", "adm@example.com": "admin"}


def test_an_owner_who_leaves_goes_to_the_home_page(world, client):  # R-CORE-2
    org, _owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "bob@example.com", Role.owner)
    csrf = sign_in(client, "ann@example.com")
    r = client.post("/people/remove", data={"csrf_token": csrf, "email": "ann@example.com"}, headers=HTMX)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/"
    assert roles_of(world, org) == {"bob@example.com": "owner"}


def test_two_owners_demoting_each_other_at_once_leave_one_owner(world):  # R-CORE-2
    import threading

    org, ann = org_with_owner(world, "Acme", "ann@example.com")
    bob = join(world, org, "bob@example.com", Role.owner)
    actors = {"ann@example.com": world.actor(ann.user), "bob@example.com": world.actor(bob.user)}
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def demote(who: str, other: str) -> None:
        barrier.wait()
        try:
            with transaction(world.ctx.sessions) as s:
                tenancy.add_member(s, org_id=org, user=tenancy.user_by_email(s, other), role=Role.viewer,
                                   actor=actors[who], now=world.now)
            outcomes[who] = "done"
        except Conflict as exc:
            outcomes[who] = exc.code

    threads = [threading.Thread(target=demote, args=("ann@example.com", "bob@example.com")),
               threading.Thread(target=demote, args=("bob@example.com", "ann@example.com"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["done", "last_owner"]
    assert sorted(roles_of(world, org).values()) == ["owner", "viewer"]
