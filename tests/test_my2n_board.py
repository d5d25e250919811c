"""The site dashboard at scale (``entitle.my2n.board``): the same answer as
``board.reference_dashboard`` (the rules applied to every row) on any site, from one statement (R-MY-3, R-MY-6)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, event

from conftest import START, World
from entitle.actors import operator
from entitle.db import reading, transaction
from entitle.my2n import board, rules
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, Site, SiteDevice

CLI = operator("board-test")
KINDS = my2n.KINDS
WARNING = rules.LAPSE_WARNING
TICK = timedelta(microseconds=1)


def make_site(world: World, org_name: str, site_name: str, region: str = "EU") -> int:
    org_id = world.org(org_name, region=region)
    with transaction(world.ctx.sessions) as s:
        return my2n.create_site(s, org_id=org_id, name=site_name, actor=CLI, now=world.now).id


# --- generated sites ------------------------------------------------------------------------------

# Paid-through dates around ``now``: never paid, far either side, and exactly on the edges of
# "lapsed" (now >= paid-through) and "lapses soon" (now < paid-through <= now + 30 days).
EDGES = (timedelta(0), -TICK, TICK, WARNING, WARNING - TICK, WARNING + TICK, -WARNING)
offsets = st.one_of(
    st.none(),
    st.sampled_from(EDGES),
    st.sampled_from(EDGES),  # the edges as often as the rest
    st.integers(-400 * 86_400, 400 * 86_400).map(lambda s: timedelta(seconds=s)),
    st.integers(-60 * 86_400 * 10**6, 60 * 86_400 * 10**6).map(lambda us: timedelta(microseconds=us)),
)


@dataclass(frozen=True)
class GenDevice:
    kind: str
    apartment: int | None  # index into the site's apartments, or None (outside every apartment)
    local_mode: bool


@st.composite
def sites(draw: st.DrawFn) -> tuple[list[str], list[timedelta | None], list[GenDevice]]:
    """Apartments (names in an order unlike their ids, paid-through offsets from now), each with
    answering devices of every kind, in local mode or not, never more than 4 paid ones (R-MY-2);
    and devices outside every apartment: intercoms, and others not assigned yet (R-MY-4)."""
    names = draw(st.lists(st.text("ABCabc019 -", min_size=1, max_size=6), unique=True, max_size=10))
    paid_through = [draw(offsets) for _ in names]
    answering = st.tuples(st.sampled_from([k for k in KINDS if k != "intercom"]), st.booleans())
    devices: list[GenDevice] = []
    for i in range(len(names)):
        paid = 0
        for kind, local_mode in draw(st.lists(answering, max_size=6)):
            if kind in rules.PAID_KINDS:
                if paid == rules.MAX_PAID_DEVICES:
                    continue
                paid += 1
            devices.append(GenDevice(kind, i, local_mode))
    devices += [GenDevice(kind, None, local_mode)
                for kind, local_mode in draw(st.lists(st.tuples(st.sampled_from(KINDS), st.booleans()), max_size=6))]
    return names, paid_through, draw(st.permutations(devices))


def fill(world: World, site_id: int, site: tuple[list[str], list[timedelta | None], list[GenDevice]],
         now: datetime, paid_for: list[int | None] | None = None) -> None:
    """Replace the site's apartments and devices with the generated ones (rows written directly:
    what is compared is two readers of the same rows)."""
    names, paid_through, devices = site
    with transaction(world.ctx.sessions) as s:
        row = s.get(Site, site_id)
        assert row is not None
        s.execute(delete(SiteDevice).where(SiteDevice.site_id == site_id))
        s.execute(delete(Apartment).where(Apartment.site_id == site_id))
        apartments = [Apartment(org_id=row.org_id, site_id=site_id, name=name,
                                paid_through=None if off is None else now + off, created_at=now,
                                devices_paid_for=paid_for[i] if paid_for else None)
                      for i, (name, off) in enumerate(zip(names, paid_through, strict=True))]
        s.add_all(apartments)
        s.flush()
        # A serial is on one site of an organization (issue 14): each site's own.
        s.add_all(SiteDevice(org_id=row.org_id, site_id=site_id, serial=f"S{site_id}-{i}", kind=d.kind,
                             local_mode=d.local_mode,
                             apartment_id=None if d.apartment is None else apartments[d.apartment].id, created_at=now)
                  for i, d in enumerate(devices))


def both(world: World, site_id: int, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    with reading(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        assert site is not None
        return board.reference_dashboard(s, site=site, now=now), board.dashboard(s, site=site, now=now)


def test_the_board_answers_exactly_what_the_rules_answer_row_by_row(world: World) -> None:  # R-MY-3, R-MY-6
    # The SQL count of billable devices (paid, not in local mode) must be the rule's
    # needs_license, and the lapse warnings the rule's, on any site: two sites of one
    # organization and one of another (US: the other part number) share the tables.
    main = make_site(world, "Residence", "Block A")
    with transaction(world.ctx.sessions) as s:
        org_id = s.get(Site, main).org_id  # type: ignore[union-attr]
        sibling = my2n.create_site(s, org_id=org_id, name="Block B", actor=CLI, now=world.now).id
    foreign = make_site(world, "Tower", "Tower", region="US")

    @given(data=st.data())
    @settings(max_examples=int(os.environ.get("ENTITLE_HYPOTHESIS_EXAMPLES", "40")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(data: st.DataObject) -> None:
        now = START + timedelta(seconds=data.draw(st.integers(0, 3 * 365 * 86_400), "now"),
                                microseconds=data.draw(st.integers(0, 999_999), "µs"))
        for site_id in (main, sibling, foreign):
            site = data.draw(sites(), f"site {site_id}")
            # Some apartments paid per device (R-MY-5, issue 14 point 6): for 0 to 4 devices.
            paid_for = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 4)), min_size=len(site[0]),
                                          max_size=len(site[0])), f"devices paid for {site_id}")
            fill(world, site_id, site, now, paid_for)
        for site_id in (main, sibling, foreign):
            old, new = both(world, site_id, now)
            assert new == old

    run()


# --- the rules, by example ----------------------------------------------------------------------

def test_the_seed_site_five_apartments_one_empty_four_need_a_license(world: World) -> None:  # R-MY-3
    site_id = make_site(world, "Residence", "Block A")
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        assert site is not None
        apts = [my2n.create_apartment(s, site=site, name=f"A{i}", actor=CLI, now=now) for i in range(1, 6)]
        my2n.add_device(s, site=site, serial="IC-1", kind="intercom", actor=CLI, now=now)
        for i, apt in enumerate(apts[:4]):
            my2n.add_device(s, site=site, serial=f"PHONE-{i}", kind="phone", apartment_id=apt.id, actor=CLI, now=now)
    old, new = both(world, site_id, now)
    assert (new["apartments"], new["needing_license"], new["order"]) == (5, 4, {"part_number": "9137958", "quantity": 4})
    # Never paid: "not paid", not "lapsed" (issue 14 point 10).
    assert (new["lapsed"], new["not_paid"]) == ([], ["A1", "A2", "A3", "A4"])
    assert {r["state"] for r in new["rows"]} == {"not_paid", "no_license_needed"}
    assert [r["paid_devices"] for r in new["rows"]] == [1, 1, 1, 1, 0]
    assert new == old


def test_local_mode_needs_no_license_but_counts_as_a_paid_device(world: World) -> None:  # R-MY-2, R-MY-3
    site_id = make_site(world, "Tower", "Tower", region="APAC")
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        assert site is not None
        a, b = (my2n.create_apartment(s, site=site, name=n, actor=CLI, now=now) for n in ("1A", "1B"))
        for serial, kind in (("TAB", "tablet"), ("PH", "phone")):
            my2n.add_device(s, site=site, serial=serial, kind=kind, apartment_id=a.id, local_mode=True, actor=CLI,
                            now=now)
        my2n.add_device(s, site=site, serial="AU", kind="answering_unit", apartment_id=b.id, actor=CLI, now=now)
    old, new = both(world, site_id, now)
    assert new["needing_license"] == 0 and new["order"] == {"part_number": "02683-001", "quantity": 0}
    assert [(r["name"], r["needs_license"], r["paid_devices"]) for r in new["rows"]] == [("1A", False, 2),
                                                                                        ("1B", False, 0)]
    assert new == old


def test_lapsed_from_the_paid_through_moment_and_warned_up_to_30_days_before(world: World) -> None:  # R-MY-6
    site_id = make_site(world, "Flats", "Flats")
    now = world.now
    edges = {"ends now": now, "ended": now - TICK, "never paid": None, "in 30 days": now + WARNING,
             "in 30 days and a µs": now + WARNING + TICK, "in a µs": now + TICK}
    with transaction(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        assert site is not None
        for name, paid_through in edges.items():
            apt = my2n.create_apartment(s, site=site, name=name, actor=CLI, now=now)
            apt.paid_through = paid_through
            my2n.add_device(s, site=site, serial=f"P-{name}", kind="third_party", apartment_id=apt.id, actor=CLI,
                            now=now)
        quiet = my2n.create_apartment(s, site=site, name="ended, nothing billable", actor=CLI, now=now)
        quiet.paid_through = now - WARNING
    old, new = both(world, site_id, now)
    assert (new["lapsed"], new["not_paid"]) == (["ends now", "ended"], ["never paid"])  # point 10
    assert new["lapsing_soon"] == ["in 30 days", "in a µs"]
    assert new == old


# --- one statement --------------------------------------------------------------------------------

def test_the_board_reads_the_site_in_one_statement_however_many_apartments(world: World, engine: Engine) -> None:
    site_id = make_site(world, "Big", "Big")
    now = world.now
    fill(world, site_id, ([f"A{i}" for i in range(60)], [None] * 60,
                          [GenDevice(kind, i, False) for i in range(60) for kind in ("phone", "answering_unit")]),
         now)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    with reading(world.ctx.sessions) as s:
        site = s.get(Site, site_id)
        assert site is not None
        event.listen(engine, "before_cursor_execute", seen)
        try:
            result = board.dashboard(s, site=site, now=now)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    # The apartments in one grouped statement; besides it only the payment plan and the credit
    # pool's accounts (R-MY-5: what to order), whatever the number of apartments.
    assert len(statements) == 3 and sum("GROUP BY" in st for st in statements) == 1
    assert any("my2n_payment_plans" in st for st in statements)
    assert any("ledger_accounts" in st for st in statements)
    assert result["apartments"] == 60 and result["needing_license"] == 60
