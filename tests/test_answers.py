"""Remembered answers (issue 17, ``entitle.api.answers``; docs/architecture.md, "Remembered
answers"): a read is answered again from memory only while nothing was committed since and no
time rule has changed it; the test suite otherwise runs with ``answers_check`` (every answer
from memory is made again and compared), these tests without it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from conftest import auth
from entitle.clock import add_years
from entitle.tenancy.models import Organization, Role
from helpers import join, org_with_owner, redeem
from test_api_costs import transactions


@pytest.fixture
def remembering(client) -> Iterator[object]:  # noqa: ANN001
    answers = client.app.state.answers
    answers.check = False
    yield answers
    answers.check = True


def read(client, token: str, path: str, ctx) -> tuple[object, int]:  # noqa: ANN001
    """The answer and how many statements the database ran for it."""
    with transactions(ctx.engine) as done:
        r = client.get(path, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json(), sum(len(t) for t in done)


def from_memory(client, token: str, path: str, ctx) -> object:  # noqa: ANN001
    """The answer given from memory. On PostgreSQL the database's mark is the cluster's: a
    commit by the other test worker's database moves it too (an answer is then made again,
    which is never wrong), so this reads until nothing was committed in between."""
    answers = []
    for _ in range(50):
        answer, ran = read(client, token, path, ctx)
        answers.append(answer)
        if ran == 0:
            assert all(a == answer for a in answers), answers
            return answer
    raise AssertionError(f"{path} was never answered from memory")


def test_a_read_is_answered_from_memory_until_something_is_committed(world, client, ctx, remembering):
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    path = f"/api/v1/orgs/{org}/wallet"
    read(client, owner.token, path, ctx)  # the token is looked up: not remembered yet
    first, ran = read(client, owner.token, path, ctx)
    assert ran == 1 and first["lines"] == []
    assert from_memory(client, owner.token, path, ctx) == first

    [code] = world.mint("91379040", quantity=3)
    assert redeem(client, owner.token, org, code).status_code == 200
    after, ran = read(client, owner.token, path, ctx)
    assert ran == 1 and [(line["part_number"], line["units"]) for line in after["lines"]] == [("91379040", 3)]


def test_a_commit_by_another_connection_is_seen_at_once(world, client, ctx, remembering):
    # What another process commits moves the database's mark just as this one's commits do.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    read(client, owner.token, "/api/v1/orgs", ctx)
    before = from_memory(client, owner.token, "/api/v1/orgs", ctx)
    with ctx.engine.begin() as conn:  # not through the app, not through its sessions
        conn.execute(update(Organization).where(Organization.id == org).values(name="Acme Security"))
    after, ran = read(client, owner.token, "/api/v1/orgs", ctx)
    assert ran == 1 and [o["name"] for o in after["items"]] == ["Acme Security"] != [o["name"] for o in before["items"]]


def test_a_wallet_lot_leaves_the_remembered_wallet_at_its_five_years(world, client, ctx, clock, remembering):
    # R-AX-4, R-CORE-7: the lot's units are in the wallet until the instant its five years end,
    # and out of it from that instant, whether the answer was remembered or not.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=2)
    redeemed_at = clock.now()
    assert redeem(client, owner.token, org, code).status_code == 200
    path = f"/api/v1/orgs/{org}/wallet"
    read(client, owner.token, path, ctx)
    ends = add_years(redeemed_at, 5)
    clock.set(ends - timedelta(microseconds=1))
    held, _ = read(client, owner.token, path, ctx)
    assert from_memory(client, owner.token, path, ctx) == held and held["lines"][0]["units"] == 2
    clock.set(ends)
    gone, ran = read(client, owner.token, path, ctx)
    assert ran > 0 and [line["units"] for line in gone["lines"]] in ([], [0])


def test_another_token_never_gets_an_answer_made_for_someone_else(world, client, ctx, remembering):
    # R-CORE-1, R-CORE-2: an answer is remembered per token: each member sees their own role, an
    # outsider is refused and an unknown token is not authenticated, as without remembering.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    viewer = join(world, org, "vic@example.com", Role.viewer)
    for token in (owner.token, viewer.token):
        read(client, token, "/api/v1/orgs", ctx)
    mine = from_memory(client, owner.token, "/api/v1/orgs", ctx)
    theirs = from_memory(client, viewer.token, "/api/v1/orgs", ctx)
    assert [o["role"] for o in mine["items"]] == ["owner"] and [o["role"] for o in theirs["items"]] == ["viewer"]
    # An outsider's token is refused as before, remembered answers or not.
    outsider = org_with_owner(world, "Beta", "bob@example.com")[1]
    assert client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(outsider.token)).status_code in (403, 404)
    assert client.get(f"/api/v1/orgs/{org}/wallet", headers=auth("ent_not-a-token")).status_code == 401


def test_the_memory_is_bounded(world, client, ctx, remembering):
    remembering.max_answers = 3
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    read(client, owner.token, "/api/v1/orgs", ctx)
    for limit in range(1, 8):
        read(client, owner.token, f"/api/v1/orgs?limit={limit}", ctx)
    assert len(remembering) == 3


def test_the_check_finds_an_answer_that_was_wrong_to_remember(world, client, ctx, monkeypatch):
    # answers_check (the suite's setting): a route that says its answer holds longer than it
    # does is caught by the first read that gets it from memory.
    from entitle.ledger import services as ledger

    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=2)
    redeemed_at = ctx.clock.now()
    assert redeem(client, owner.token, org, code).status_code == 200
    monkeypatch.setattr(ledger, "wallet_changes_at", lambda lines: None)  # "nothing ever expires"
    path = f"/api/v1/orgs/{org}/wallet"
    ends = add_years(redeemed_at, 5)
    # On PostgreSQL a commit of the other test worker can come between the two reads (from_memory):
    # the second is then made again, rightly; so until the second one comes from memory.
    for _ in range(50):
        try:
            ctx.clock.set(ends - timedelta(seconds=1))
            client.get(path, headers=auth(owner.token))
            ctx.clock.set(ends)
            client.get(path, headers=auth(owner.token))
        except AssertionError as stale:  # either way round: an answer made on one side of the edge
            assert "remembered answer" in str(stale)
            return
    raise AssertionError("the stale answer was never given from memory")


def test_remembering_can_be_turned_off(world, client, ctx, remembering):
    # ENTITLE_REMEMBER_ANSWERS=false: every read is made.
    remembering.enabled = False
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    assert [read(client, owner.token, f"/api/v1/orgs/{org}/wallet", ctx)[1] for _ in range(3)][1:] == [1, 1]
    assert len(remembering) == 0


def test_a_clock_set_back_makes_the_answer_again(world, client, ctx, clock, remembering):
    # R-CORE-7: an answer made at one moment is never given for an earlier one (ENTITLE_NOW moved
    # back, a test's clock): a time rule may lie between the two.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    path = f"/api/v1/orgs/{org}/wallet"
    read(client, owner.token, path, ctx)
    from_memory(client, owner.token, path, ctx)
    clock.set(clock.now() - timedelta(seconds=1))
    assert read(client, owner.token, path, ctx)[1] == 1


def test_a_remembered_axis_status_changes_at_the_grace_end_the_year_end_and_a_lot_s_five_years(
        world, client, ctx, clock, remembering):
    # R-AX-3, R-AX-4, R-AX-6, R-CORE-7: remembered up to each moment its answer changes, made again
    # from that moment: in grace until the grace end, then not licensed; the next subscription
    # year from the year's end; a lot out of the wallet at its five years.
    from test_axis_api import P, Org

    o = Org(world, client)
    o.system("ACS-1", cams=2)
    o.redeem("AXIS-ACS-CORE-1Y", 1)
    received = clock.now()
    year = o.start()["current_year"]
    path = f"{o.base}/products/{P}"
    grace_end, year_end = (datetime.fromisoformat(year[k]) for k in ("grace_end", "end"))

    def state_at(moment: datetime) -> dict:
        clock.set(moment)
        read(client, o.token, path, ctx)
        return from_memory(client, o.token, path, ctx)

    assert state_at(grace_end - timedelta(microseconds=1))["state"] == "in_grace"
    assert state_at(grace_end)["state"] == "not_licensed"
    assert state_at(year_end - timedelta(microseconds=1))["current_year"]["index"] == 0
    nxt = state_at(year_end)
    assert nxt["current_year"]["index"] == 1 and nxt["state"] == "in_grace"
    lot_ends = add_years(received, 5)
    assert state_at(lot_ends - timedelta(microseconds=1))["wallet"]["lots"] != []
    assert state_at(lot_ends)["wallet"]["lots"] == []


def sweep(at, start: datetime, *, end: datetime | None = None, min_step: timedelta = timedelta(0),  # noqa: ANN001
          steps: int = 50) -> list[dict]:
    """The answers ``at`` gives (answer, its next moment) from ``start``, each read at the moment
    the one before named (``min_step`` on at least), up to ``end``; each is checked to be the same
    at the microsecond before its moment and halfway there."""
    tick, answers, moment = timedelta(microseconds=1), [], start
    for _ in range(steps):
        if end is not None and moment >= end:
            break
        shown, until = at(moment)
        answers.append(shown)
        if until is None:
            break
        assert until > moment
        if until - moment > tick:
            assert at(until - tick)[0] == shown, (moment, until)
            assert at(moment + (until - moment) / 2)[0] == shown, (moment, until)
        moment = max(until, moment + min_step)
    return answers


def test_a_site_dashboard_holds_until_the_moment_it_says(world):
    # R-MY-3, R-MY-5, R-MY-6, R-CORE-7: for apartments paid through moments around the ones that
    # matter (the license's end, its 30-day warning, the year an order looks ahead, across a
    # 29 February), the dashboard read at any moment of the sweep is the same up to the last
    # microsecond before the next moment it names, and a remembered one is kept no longer.
    from entitle.db import reading, transaction
    from entitle.my2n import board
    from entitle.my2n import services as my2n
    from entitle.my2n.models import Site
    from test_my2n_board import CLI, make_site

    site_id = make_site(world, "Flats", "Flats")
    start = world.now
    leap = datetime(2028, 2, 29, 12, tzinfo=start.tzinfo)
    paid = {"leap": leap, "leap next year": add_years(leap, 1), "in 40 days": start + timedelta(days=40),
            "in 400 days": start + timedelta(days=400), "in 3 years": add_years(start, 3), "never": None}
    with transaction(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        for name, through in paid.items():
            apt = my2n.create_apartment(s, site=site, name=name, actor=CLI, now=start)
            apt.paid_through = through
            my2n.add_device(s, site=site, serial=f"P-{name}", kind="third_party", apartment_id=apt.id, actor=CLI,
                            now=start)

    def at(moment: datetime) -> tuple[dict, datetime | None]:
        edges: list[datetime] = []
        with reading(world.ctx.sessions) as s:
            shown = board.dashboard(s, site=s.get(Site, site_id), now=moment, edges=edges)
        return shown, board.changes_at(edges, moment)

    assert len(sweep(at, start, end=datetime(2030, 6, 1, tzinfo=start.tzinfo), min_step=timedelta(hours=6),
                     steps=400)) > 10


def test_an_access_commander_overview_holds_until_the_moment_it_says(world, client):
    # R-AC-4, R-AC-5, R-AC-6, R-CORE-7: with the license device and another device seen, the
    # overview read at any moment of a sweep through the heartbeat timeout, the protective period
    # and the suspension is the same up to the microsecond before the next moment it names.
    from entitle.access_commander import services as ac
    from entitle.access_commander.models import Installation
    from entitle.db import reading
    from test_ac_api import Inst

    inst = Inst(world, client)
    inst.redeem("91379040")
    inst.add_device("LD-1")
    inst.add_device("D-2")
    inst.license("LD-1", [("91379040", 1)])
    start = world.ctx.clock.now()

    def at(moment: datetime) -> tuple[dict, datetime | None]:
        with reading(world.ctx.sessions) as s:
            ov = ac.overview(s, s.get(Installation, inst.id), moment)
            return ac.overview_to_dict(ov), ac.overview_changes_at(ov)

    assert {"active", "protective", "suspended"} <= {shown["state"] for shown in sweep(at, start)}
