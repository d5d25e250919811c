"""The caller's notifications over the API (R-CORE-8): GET /api/v1/notifications (newest first,
paginated, unread filter) and POST /api/v1/notifications/{id}/read; each user sees only their
own, of organizations they are still a member of (R-CORE-1)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete

from conftest import auth
from entitle.db import transaction
from entitle.platform import events
from entitle.tenancy.models import Membership, Role
from helpers import error_code, join, org_with_owner

URL = "/api/v1/notifications"


def lapse(world, org_id: int, apartment: str) -> None:  # noqa: ANN001
    with transaction(world.ctx.sessions) as s:
        events.emit(s, org_id=org_id, type="my2n.apartment.lapsed", now=world.now, apartment=apartment, site="Riverside")


def test_an_admin_lists_their_notifications_newest_first_page_by_page(world, client):  # R-CORE-8
    org, owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    viewer = join(world, org, "viewer@example.com", Role.viewer)
    for i in range(3):
        lapse(world, org, f"A-{i}")
        world.ctx.clock.advance(dt.timedelta(minutes=1))
    with transaction(world.ctx.sessions) as s:  # a type admins are not told about
        events.emit(s, org_id=org, type="key.redeemed", now=world.now, key_id=1)

    r = client.get(URL, params={"limit": 2}, headers=auth(owner.token))
    assert r.status_code == 200, r.text
    page = r.json()
    assert [n["title"] for n in page["items"]] == [
        f"My2N: the license of apartment A-{i} (Riverside) lapsed; its paid devices stopped." for i in (2, 1)]
    first = page["items"][0]
    assert first["organization"] == "Riverside Homes" and first["org_id"] == org
    assert first["event"]["type"] == "my2n.apartment.lapsed" and first["event"]["id"].startswith("evt_")
    assert first["created_at"] == "2026-01-15T09:02:00+00:00"
    assert (first["read"], first["read_at"], first["emailed_at"]) == (False, None, None)
    assert page["unread"] == 3 and page["next_cursor"] == page["items"][-1]["id"]

    rest = client.get(URL, params={"limit": 2, "cursor": page["next_cursor"]}, headers=auth(owner.token)).json()
    assert [n["title"] for n in rest["items"]] == [
        "My2N: the license of apartment A-0 (Riverside) lapsed; its paid devices stopped."]
    assert rest["next_cursor"] is None

    # a viewer is not told
    assert client.get(URL, headers=auth(viewer.token)).json() == {"items": [], "next_cursor": None, "unread": 0}


def test_marking_read_filters_unread_and_is_idempotent(world, client):  # R-CORE-8
    org, owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    lapse(world, org, "A-1")
    lapse(world, org, "A-2")
    older, newer = sorted(n["id"] for n in client.get(URL, headers=auth(owner.token)).json()["items"])

    r = client.post(f"{URL}/{older}/read", headers=auth(owner.token))
    assert r.status_code == 200, r.text
    assert r.json()["read"] is True and r.json()["read_at"] == "2026-01-15T09:00:00+00:00"
    world.ctx.clock.advance(dt.timedelta(hours=1))
    again = client.post(f"{URL}/{older}/read", headers=auth(owner.token)).json()
    assert again["read_at"] == "2026-01-15T09:00:00+00:00"  # read once, when it was first read

    unread = client.get(URL, params={"unread": "true"}, headers=auth(owner.token)).json()
    assert [n["id"] for n in unread["items"]] == [newer] and unread["unread"] == 1
    everything = client.get(URL, headers=auth(owner.token)).json()
    assert [(n["id"], n["read"]) for n in everything["items"]] == [(newer, False), (older, True)]


def test_nobody_reads_or_marks_anyone_elses_notifications(world, client):  # R-CORE-1 R-CORE-8
    _org_a, alice = org_with_owner(world, "Alpha", "alice@example.com")
    org_b, bob = org_with_owner(world, "Bravo Hidden Works", "bob@example.com")
    colleague = join(world, org_b, "bob-admin@example.com", Role.admin)
    lapse(world, org_b, "B-SECRET")
    bobs = client.get(URL, headers=auth(bob.token)).json()["items"]
    [colleagues] = client.get(URL, headers=auth(colleague.token)).json()["items"]
    assert len(bobs) == 1 and colleagues["id"] != bobs[0]["id"]

    listed = client.get(URL, headers=auth(alice.token))
    assert listed.json()["items"] == [] and "B-SECRET" not in listed.text
    for notification_id in (bobs[0]["id"], colleagues["id"], 10**9):
        r = client.post(f"{URL}/{notification_id}/read", headers=auth(alice.token))
        assert r.status_code == 404 and error_code(r) == "notification_not_found", r.text
        assert "B-SECRET" not in r.text
    # the same organization's other admin cannot mark bob's either
    r = client.post(f"{URL}/{bobs[0]['id']}/read", headers=auth(colleague.token))
    assert r.status_code == 404
    assert client.get(URL, headers=auth(bob.token)).json()["unread"] == 1

    # someone removed from the organization stops seeing its notifications
    with transaction(world.ctx.sessions) as s:
        s.execute(delete(Membership).where(Membership.org_id == org_b, Membership.user_id == colleague.user.id))
    assert client.get(URL, headers=auth(colleague.token)).json() == {"items": [], "next_cursor": None, "unread": 0}
    r = client.post(f"{URL}/{colleagues['id']}/read", headers=auth(colleague.token))
    assert r.status_code == 404


def test_notifications_need_a_token(client):
    r = client.get(URL)
    assert r.status_code == 401 and error_code(r) == "authentication_required"
    r = client.post(f"{URL}/1/read")
    assert r.status_code == 401
