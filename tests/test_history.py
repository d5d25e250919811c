"""The organization's history: appended with every change, chained, tamper-evident (R-CORE-6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from conftest import auth
from entitle.actors import operator
from entitle.db import transaction
from entitle.history import services as history
from entitle.history.models import HistoryEntry
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role
from helpers import error_code, history_of, join, ledger_counts, load_regional_skus, org_with_owner, redeem


def issuer_org_id(world) -> int:  # noqa: ANN001
    with transaction(world.ctx.sessions) as s:
        return tenancy.issuer_organization(s, now=world.now).id


def test_every_change_appends_an_entry(world, client):
    # R-CORE-6: org created, member set, key redeemed; catalog loaded and keys minted go to the
    # issuer's history. Each entry names who, what, which object, before/after.
    engine = world.ctx.engine
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "val@example.com", Role.viewer)
    [code] = world.mint("91379040", quantity=2)
    assert redeem(client, owner.token, org, code).status_code == 200
    assert [a for _, a, _ in history_of(engine, org)] == \
        ["organization.created", "member.set", "member.set", "key.redeemed"]
    assert [a for _, a, _ in history_of(engine, issuer_org_id(world))] == ["catalog.loaded", "keys.minted"]

    items = client.get(f"/api/v1/orgs/{org}/history", headers=auth(owner.token)).json()["items"]
    redeemed = items[0]
    assert redeemed["actor"] == "ann@example.com" and redeemed["object_type"] == "license_key"
    assert redeemed["before"] == {"part_number": "91379040", "wallet": 0}
    assert redeemed["after"] == {"part_number": "91379040", "wallet": 2}
    assert items[1]["object_id"] == "val@example.com" and items[1]["after"] == {"role": "viewer"}
    assert [i["seq"] for i in items] == [4, 3, 2, 1]


def test_a_refused_change_appends_nothing(world, client):
    # R-CORE-6: a failed redeem (of any kind) leaves no history entry.
    engine = world.ctx.engine
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    load_regional_skus(world)
    [code] = world.mint("AC-US-ONLY")  # US & APAC only: refused in this EU organization
    before = history_of(engine, org)
    for typed in (code, "bad-key"):
        assert redeem(client, owner.token, org, typed).status_code in (400, 403)
    assert history_of(engine, org) == before


def test_history_is_written_in_the_same_transaction_as_the_change(world, monkeypatch):
    # R-CORE-6: if anything after the ledger movement fails, neither the movement nor the
    # history entry survives; if writing history fails, the change is rolled back too.
    engine = world.ctx.engine
    org, _ = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040")
    before = (history_of(engine, org), ledger_counts(engine))

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("crash after the history entry")

    monkeypatch.setattr(keys.events, "emit", boom)  # runs after history.record in redeem
    with pytest.raises(RuntimeError), transaction(world.ctx.sessions) as s:
        keys.redeem(s, org_id=org, typed_key=code, actor=operator(), now=world.now)
    assert (history_of(engine, org), ledger_counts(engine)) == before
    monkeypatch.undo()

    monkeypatch.setattr(keys.history, "record", boom)
    with pytest.raises(RuntimeError), transaction(world.ctx.sessions) as s:
        keys.redeem(s, org_id=org, typed_key=code, actor=operator(), now=world.now)
    assert (history_of(engine, org), ledger_counts(engine)) == before
    with world.ctx.sessions() as s:
        assert s.query(LicenseKey).one().state == "active"


def _three_entries(world, client):  # noqa: ANN001, ANN202
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    join(world, org, "adm@example.com", Role.admin)
    [code] = world.mint("91379040")
    assert redeem(client, owner.token, org, code).status_code == 200
    join(world, org, "val@example.com", Role.viewer)
    assert [seq for seq, _, _ in history_of(world.ctx.engine, org)] == [1, 2, 3, 4, 5]
    return org, owner


def verify(client, org: int, token: str) -> dict:  # noqa: ANN001
    r = client.get(f"/api/v1/orgs/{org}/history/verify", headers=auth(token))
    assert r.status_code == 200
    return r.json()


def test_an_untouched_chain_verifies(world, client):
    # R-CORE-6
    org, owner = _three_entries(world, client)
    assert verify(client, org, owner.token) == {"ok": True, "checked": 5, "first_bad_seq": None, "reason": None}
    entries = history_of(world.ctx.engine, org)
    with world.ctx.sessions() as s:
        rows = s.query(HistoryEntry).filter_by(org_id=org).order_by(HistoryEntry.seq).all()
    assert rows[0].prev_hash == history.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    assert len({h for _, _, h in entries}) == 5


@pytest.mark.parametrize("tamper, bad_seq", [
    ("after", 4), ("at", 2), ("delete", 3), ("actor", 5), ("delete_last_but_one", 4),
])
def test_an_edit_behind_the_softwares_back_is_detected(world, client, tamper, bad_seq):
    # R-CORE-6: an UPDATE of `after`, a changed `at`, a DELETE - each found at the right entry.
    org, owner = _three_entries(world, client)
    t = HistoryEntry.__table__
    row = (t.c.org_id == org) & (t.c.seq == bad_seq)
    with world.ctx.engine.begin() as conn:
        if tamper == "after":
            conn.execute(update(t).where(row).values(after={"part_number": "91379040", "wallet": 500}))
        elif tamper == "at":
            at = conn.execute(t.select().where(row)).one().at
            conn.execute(update(t).where(row).values(at=at - timedelta(days=30)))
        elif tamper == "actor":
            conn.execute(update(t).where(row).values(actor="someone-else@example.com"))
        else:
            conn.execute(delete(t).where(row))
    result = verify(client, org, owner.token)
    assert result["ok"] is False
    assert result["first_bad_seq"] == bad_seq
    assert result["checked"] == bad_seq - 1
    assert result["reason"]


def test_rewriting_an_entry_and_its_hash_is_detected_at_that_entry(world, client):
    # R-CORE-6: someone who also recomputes the edited entry's own hash cannot recompute its key
    # check (and would break the next link too). tests/test_history_tamper.py has the rest.
    org, owner = _three_entries(world, client)
    t = HistoryEntry.__table__
    with world.ctx.sessions() as s:
        e = s.query(HistoryEntry).filter_by(org_id=org, seq=2).one()
        forged_after = {"role": "viewer"}
        forged = history.entry_hash(e.prev_hash, seq=e.seq, at=e.at, actor=e.actor, action=e.action,
                                    object_type=e.object_type, object_id=e.object_id,
                                    before=e.before, after=forged_after)
    with world.ctx.engine.begin() as conn:
        conn.execute(update(t).where((t.c.org_id == org) & (t.c.seq == 2))
                     .values(after=forged_after, hash=forged))
    result = verify(client, org, owner.token)
    assert (result["ok"], result["first_bad_seq"]) == (False, 2)
    assert "key check" in result["reason"]


def test_tampering_in_one_organization_does_not_flag_another(world, client):
    # R-CORE-6: each organization has its own chain.
    org, owner = _three_entries(world, client)
    other, bob = org_with_owner(world, "Other", "bob@example.com")
    t = HistoryEntry.__table__
    with world.ctx.engine.begin() as conn:
        conn.execute(update(t).where((t.c.org_id == org) & (t.c.seq == 1)).values(actor="x"))
    assert verify(client, org, owner.token)["first_bad_seq"] == 1
    assert verify(client, other, bob.token)["ok"] is True


def test_no_api_route_can_change_history(app, client, world):
    # R-CORE-6: under /history there are only GETs; any other method is refused.
    paths = app.openapi()["paths"]
    history_paths = {p: ops for p, ops in paths.items() if "history" in p}
    assert history_paths, "the history routes are documented"
    for path, ops in history_paths.items():
        assert set(ops) == {"get"}, (path, set(ops))
    org, owner = _three_entries(world, client)
    before = history_of(world.ctx.engine, org)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in history_paths:
            url = path.replace("{org_id}", str(org))
            r = client.request(method, url, json={"after": {}}, headers=auth(owner.token, "h"))
            assert r.status_code == 405, (method, url, r.status_code)
            assert error_code(r) == "method_not_allowed"
    assert history_of(world.ctx.engine, org) == before


def test_a_page_can_be_narrowed_to_actions(world):  # R-CORE-6
    org = world.org("Filtered")
    actor = operator()
    with transaction(world.ctx.sessions) as s:
        for action in ("axis.allocated", "key.redeemed", "ac.device.added", "axis.upgraded", "axis_other"):
            history.record(s, org_id=org, actor=actor, now=world.now, action=action, object_type="x", object_id=1)
    with world.ctx.sessions() as s:
        def actions(**kw):
            return [e.action for e in history.page(s, org, limit=10, **kw)]

        assert actions(action_prefix="axis.") == ["axis.upgraded", "axis.allocated"]
        assert actions(action_prefix="axis.", actions=("key.redeemed",)) == \
            ["axis.upgraded", "key.redeemed", "axis.allocated"]
        assert "ac.device.added" in actions() and "axis_other" in actions()
