"""The sweep (R-CORE-8): the transitions that happen with time alone are found and their events
recorded exactly once -- at their moment and not a microsecond before, never again when the sweep
runs again, once when two sweeps run at the same time, and once when a sweep killed halfway is
run again. Each kind is driven through the real services, with the clock moved by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conftest import World
from entitle.access_commander import services as ac
from entitle.access_commander.models import Installation
from entitle.actors import operator
from entitle.axis import rules as axis_rules
from entitle.axis import services as axis
from entitle.cli.sweep import Ticker
from entitle.clock import add_years
from entitle.context import Context
from entitle.db import transaction
from entitle.delivery import notifications
from entitle.delivery import sweep as sweeping
from entitle.delivery import webhooks
from entitle.delivery.models import Notification, SweepMark, WebhookDelivery
from entitle.history.models import HistoryEntry
from entitle.keys import services as keys
from entitle.ledger.models import Account, Entry
from entitle.my2n import billing
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment
from entitle.my2n.payments import LocalProvider
from entitle.platform import events as platform_events
from entitle.platform.models import Event
from entitle.tenancy.models import Role
from helpers import ClockedCli, clocked_cli, join, org_with_owner
from webhook_receiver import running_receiver

OP = operator("sweep-test")
P = "axis-camera-station"
CORE_1Y = "AXIS-ACS-CORE-1Y"
US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def utc(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


# --- reading what the sweep recorded ------------------------------------------------------------

def swept(ctx: Context, at: datetime, **kwargs: Any) -> dict[str, int]:
    return sweeping.sweep(ctx.sessions, now=at, **kwargs)


def recorded(ctx: Context, kind: str, org_id: int | None = None) -> list[Event]:
    with ctx.sessions() as s:
        q = select(Event).where(Event.type == kind)
        if org_id is not None:
            q = q.where(Event.org_id == org_id)
        return list(s.scalars(q.order_by(Event.id)))


def mark_count(ctx: Context) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SweepMark)) or 0)


def crossing(ctx: Context, kind: str, at: datetime, *, org_id: int | None = None, before: int = 0) -> Event:
    """Time moved across the transition's moment: a microsecond before it nothing is recorded; at
    it, its event once; a sweep run again records nothing new. Returns the event."""
    swept(ctx, at - US)
    assert len(recorded(ctx, kind, org_id)) == before, f"{kind} recorded before {at}"
    swept(ctx, at)
    after = recorded(ctx, kind, org_id)
    assert len(after) == before + 1, f"{kind} not recorded once at {at}"
    again = swept(ctx, at)
    assert again["recorded"] == 0 and len(recorded(ctx, kind, org_id)) == before + 1
    return after[-1]


def assert_each_once(ctx: Context) -> None:
    """Every mark has its own event, and each swept kind has as many events as marks (plus, for
    axis.grace.started, the one each subscription's start records itself)."""
    with ctx.sessions() as s:
        marks = list(s.scalars(select(SweepMark)))
        assert all(m.event_id is not None for m in marks)
        assert len({m.event_id for m in marks}) == len(marks)
        starts = int(s.scalar(select(func.count()).select_from(HistoryEntry)
                              .where(HistoryEntry.action == "axis.subscription.started")) or 0)
        for kind in {m.kind for m in marks}:
            events = int(s.scalar(select(func.count()).select_from(Event).where(Event.type == kind)) or 0)
            written = sum(1 for m in marks if m.kind == kind)
            assert events == written + (starts if kind == "axis.grace.started" else 0), kind


class _Paused:
    """The sessions of one sweep, with ``meanwhile`` run once between its reading (what it
    found) and its first write: another sweep, or a write, gets in between."""

    def __init__(self, factory: sessionmaker[Session], meanwhile: Callable[[], object]) -> None:
        self.factory, self.meanwhile, self.paused = factory, meanwhile, False

    def __call__(self, **kwargs: Any) -> Session:
        return self.factory(**kwargs)

    @property
    def kw(self) -> dict[str, Any]:  # what entitle.db.reading reads (the bind)
        return self.factory.kw

    def begin(self) -> AbstractContextManager[Session]:
        if not self.paused:
            self.paused = True
            self.meanwhile()
        return self.factory.begin()


# --- AXIS ---------------------------------------------------------------------------------------

class AxisOrg:
    """An organization's AXIS Camera Station Pro: a system with core devices, driven through the
    services one transaction per call."""

    def __init__(self, world: World, org_id: int, *, registered: datetime, core: int = 2) -> None:
        self.world, self.id = world, org_id
        with self.tx() as s:
            system = axis.register_system(s, org_id=org_id, uid=f"ACS-{org_id}", name="HQ", product_code=P,
                                          actor=OP, now=registered)
            if core:
                axis.add_devices(s, org_id=org_id, system_id=system.id, actor=OP, now=registered,
                                 devices=[axis.NewDevice(f"CAM-{org_id}-{i}", "core") for i in range(core)])

    def tx(self) -> AbstractContextManager[Session]:
        return transaction(self.world.ctx.sessions)

    def start(self, now: datetime) -> None:
        with self.tx() as s:
            axis.start_subscription(s, org_id=self.id, product_code=P, actor=OP, now=now)

    def redeem(self, units: int, now: datetime) -> None:
        [code] = self.world.mint(CORE_1Y, quantity=units)
        with self.tx() as s:
            keys.redeem(s, org_id=self.id, typed_key=code, actor=OP, now=now)

    def allocate(self, now: datetime, year: int, units: int) -> dict[str, Any]:
        with self.tx() as s:
            return axis.allocate(s, org_id=self.id, product_code=P, actor=OP, now=now,
                                 lines=[axis.Line("core", year, units)])


def test_a_grace_period_warns_7_days_before_its_end_and_ends_once(world: World) -> None:  # R-CORE-8, R-AX-3
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - 10 * DAY)
    org.start(s0)
    grace_end = s0 + 30 * DAY
    ending = crossing(ctx, "axis.grace.ending", grace_end - 7 * DAY)
    assert ending.payload == {"product": P, "year": 0, "grace_end": grace_end.isoformat(),
                              "license_types": {"core": {"need": 2, "allocated": 0}},
                              "due_at": (grace_end - 7 * DAY).isoformat()}
    ended = crossing(ctx, "axis.grace.ended", grace_end)
    assert ended.payload["due_at"] == grace_end.isoformat() and ended.created_at == grace_end
    # The grace period the start opened was announced by the start, and only by it.
    assert len(recorded(ctx, "axis.grace.started")) == 1
    swept(ctx, grace_end + 60 * DAY)
    assert [len(recorded(ctx, k)) for k in ("axis.grace.started", "axis.grace.ending", "axis.grace.ended")] == [1, 1, 1]
    assert_each_once(ctx)


def test_grace_transitions_follow_the_licensing_at_their_moment(world: World) -> None:  # R-CORE-8, R-AX-3
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    grace_end = s0 + 30 * DAY
    # Licensed in time: neither a warning nor an end.
    early = AxisOrg(world, world.org("Early"), registered=s0 - DAY)
    early.start(s0)
    early.redeem(2, s0 + DAY)
    assert early.allocate(s0 + DAY, 0, 2)["state"] == "fully_licensed"
    # Licensed after the warning, before the end: warned, not ended.
    between = AxisOrg(world, world.org("Between"), registered=s0 - DAY)
    between.start(s0)
    swept(ctx, grace_end - 7 * DAY)
    between.redeem(2, grace_end - DAY)
    between.allocate(grace_end - DAY, 0, 2)
    # Licensed after the end, before any sweep saw it: the end happened unlicensed, so it is
    # announced; the warning, due while nobody swept, is not sent after the end.
    late = AxisOrg(world, world.org("Late"), registered=s0 - DAY)
    late.start(s0)
    late.redeem(2, grace_end + DAY)
    late.allocate(grace_end + DAY, 0, 2)
    swept(ctx, grace_end + 2 * DAY)

    def kinds(org: AxisOrg) -> list[str]:
        return [k for k in ("axis.grace.ending", "axis.grace.ended") if recorded(ctx, k, org.id)]

    assert kinds(early) == []
    assert kinds(between) == ["axis.grace.ending"]
    assert kinds(late) == ["axis.grace.ended"]
    [ended] = recorded(ctx, "axis.grace.ended", late.id)
    assert ended.payload["license_types"] == {"core": {"need": 2, "allocated": 0}}


def test_a_renewal_grace_starts_at_each_anniversary_not_licensed_once(world: World) -> None:  # R-CORE-8, R-AX-6
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY)
    org.start(s0)
    org.redeem(2, s0)
    org.allocate(s0, 0, 2)  # year 0 fully licensed
    swept(ctx, s0 + 40 * DAY)
    assert len(recorded(ctx, "axis.grace.started")) == 1  # the start's own
    s1 = add_years(s0, 1)
    started = crossing(ctx, "axis.grace.started", s1, before=1)
    assert started.payload == {"product": P, "year": 1, "grace_end": (s1 + 30 * DAY).isoformat(),
                               "license_types": {"core": {"need": 2, "allocated": 0}}, "due_at": s1.isoformat()}
    # Year 1 is licensed within its grace, and year 2 ahead of time: no more grace events.
    org.redeem(4, s1 + 2 * DAY)
    org.allocate(s1 + 2 * DAY, 1, 2)
    org.allocate(s1 + 2 * DAY, 2, 2)
    s2 = add_years(s0, 2)
    for at in (s1 + 23 * DAY, s1 + 30 * DAY, s2, s2 + 30 * DAY):
        assert swept(ctx, at)["recorded"] == 0
    # Year 3 is not licensed: its grace starts, warns and ends.
    s3 = add_years(s0, 3)
    crossing(ctx, "axis.grace.started", s3, before=2)
    crossing(ctx, "axis.grace.ending", s3 + 23 * DAY)
    crossing(ctx, "axis.grace.ended", s3 + 30 * DAY)
    assert [e.payload["year"] for e in recorded(ctx, "axis.grace.started")] == [0, 1, 3]
    assert_each_once(ctx)


def test_units_expire_in_the_wallet_five_years_after_they_entered_it_once(world: World) -> None:  # R-CORE-8, R-AX-4
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY, core=0)  # no grace events
    org.start(s0)
    received = s0 + 10 * DAY + timedelta(hours=3, microseconds=250)
    org.redeem(4, received)
    org.redeem(6, received + 400 * DAY)
    expiry = add_years(received, axis_rules.STORAGE_YEARS)
    event = crossing(ctx, "axis.units.expired", expiry)
    assert event.payload["units"] == 4 and event.payload["part_number"] == CORE_1Y
    assert event.payload["product"] == P and event.payload["lot"].startswith("lot/")
    assert event.payload["due_at"] == expiry.isoformat()
    # The sweep recorded the expiry whole: the units left the wallet in the ledger, with history.
    assert expired_units(ctx) == 4 and wallet_units(ctx, org.id) == 6
    [h] = expiry_history(ctx)
    assert (h.actor, h.before, h.after) == ("sweep", {"units": 4, "part_number": CORE_1Y},
                                            {"units": 0, "expired_at": expiry.isoformat()})
    # The next write finds nothing more to record, and nothing is announced again.
    year = axis_rules.year_at(s0, expiry + DAY)
    assert year is not None
    org.allocate(expiry + DAY, year.index, 1)
    assert expired_units(ctx) == 4 and len(expiry_history(ctx)) == 1
    assert len(recorded(ctx, "axis.units.expired")) == 1
    assert swept(ctx, expiry + 2 * DAY)["recorded"] == 0
    assert_each_once(ctx)


def test_an_expiry_a_write_announced_first_is_not_announced_by_the_sweep(world: World) -> None:  # R-CORE-8, R-AX-4
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY, core=0)  # no grace events
    org.start(s0)
    org.redeem(4, s0)
    org.redeem(6, s0 + 400 * DAY)
    expiry = add_years(s0, axis_rules.STORAGE_YEARS)
    year = axis_rules.year_at(s0, expiry)
    assert year is not None
    # A sweep has found the expired lot (it still holds units) when an allocation at the same
    # moment records the expiry, and announces it, first; the sweep then finds the lot's mark.
    paused = _Paused(ctx.sessions, lambda: org.allocate(expiry, year.index, 1))
    result = sweeping.sweep(paused, now=expiry)  # type: ignore[arg-type]
    assert result == {"found": 1, "recorded": 0, "skipped": 1}
    [event] = recorded(ctx, "axis.units.expired")
    assert event.payload["units"] == 4
    with ctx.sessions() as s:
        [h] = s.scalars(select(HistoryEntry).where(HistoryEntry.action == "axis.units.expired"))
        assert h.after == {"units": 0, "expired_at": expiry.isoformat()}
    assert swept(ctx, expiry) == {"found": 0, "recorded": 0, "skipped": 0}  # the lot holds no units now
    assert_each_once(ctx)


def expired_units(ctx: Context) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Account.id == Entry.account_id)
                            .where(Account.kind == "expired")) or 0)


def wallet_units(ctx: Context, org_id: int) -> int:
    """The wallet's units in the ledger (expired lots count until their expiry is recorded)."""
    with ctx.sessions() as s:
        return int(s.scalar(select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Account.id == Entry.account_id)
                            .where(Account.kind == "wallet", Account.org_id == org_id)) or 0)


def expiry_history(ctx: Context) -> list[HistoryEntry]:
    with ctx.sessions() as s:
        return list(s.scalars(select(HistoryEntry).where(HistoryEntry.action == "axis.units.expired")
                              .order_by(HistoryEntry.seq)))


def test_a_quiet_wallets_expiry_reaches_the_ledger_and_history_at_its_moment(world: World) -> None:  # R-CORE-8, R-AX-4
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY, core=0)
    org.start(s0)
    org.redeem(10, s0)
    expiry = add_years(s0, axis_rules.STORAGE_YEARS)
    # A microsecond before: nothing expires.
    swept(ctx, expiry - US)
    assert (expired_units(ctx), wallet_units(ctx, org.id), expiry_history(ctx)) == (0, 10, [])
    # At the expiry, the sweep alone (no allocation ever follows) writes ledger and history, once.
    assert swept(ctx, expiry)["recorded"] == 1
    assert (expired_units(ctx), wallet_units(ctx, org.id), len(expiry_history(ctx))) == (10, 0, 1)
    assert swept(ctx, expiry + DAY) == {"found": 0, "recorded": 0, "skipped": 0}
    assert len(expiry_history(ctx)) == 1 and expired_units(ctx) == 10
    assert_each_once(ctx)


def test_a_redeem_after_an_expiry_shows_the_live_wallet(world: World) -> None:  # R-AX-4, R-CORE-7
    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY, core=0)
    org.start(s0)
    org.redeem(10, s0)
    expiry = add_years(s0, axis_rules.STORAGE_YEARS)

    def last_redeem() -> tuple[int, int]:
        with ctx.sessions() as s:
            h = s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == org.id,
                                                     HistoryEntry.action == "key.redeemed")
                          .order_by(HistoryEntry.seq.desc()).limit(1)).one()
            return h.before["wallet"], h.after["wallet"]

    # Just before the expiry the old units are live; at it (no sweep yet), they are not.
    org.redeem(1, expiry - US)
    assert last_redeem() == (10, 11)
    org.redeem(1, expiry)
    assert last_redeem() == (1, 2)  # the live wallet: the second unit's lot and this one
    # The sweep then records the expiry of the old lot: the ledger agrees with what was shown.
    swept(ctx, expiry)
    assert wallet_units(ctx, org.id) == 2 and expired_units(ctx) == 10


def _expiring_lot(world: World) -> tuple[AxisOrg, datetime, int]:
    """An organization whose 4 oldest units expire at the returned moment (6 newer stay)."""
    s0 = utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY, core=0)
    org.start(s0)
    org.redeem(4, s0)
    org.redeem(6, s0 + 400 * DAY)
    expiry = add_years(s0, axis_rules.STORAGE_YEARS)
    year = axis_rules.year_at(s0, expiry)
    assert year is not None
    return org, expiry, year.index


def _at_once(*work: Callable[[Callable[[], object]], object]) -> None:
    """Run each ``work(wait)`` in its own thread; ``wait`` holds them until all are ready."""
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(w: Callable[[Callable[[], object]], object]) -> None:
        try:
            w(lambda: barrier.wait(timeout=60))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_two_sweeps_at_once_record_an_expiry_once(world: World) -> None:  # R-CORE-8, R-AX-4
    ctx = world.ctx
    org, expiry, _year = _expiring_lot(world)
    results: list[dict[str, int]] = []

    def sweep(wait: Callable[[], object]) -> None:
        # Each has found the lot (it holds units) before either writes.
        results.append(sweeping.sweep(_Paused(ctx.sessions, wait), now=expiry))  # type: ignore[arg-type]

    _at_once(sweep, sweep)
    assert sorted((r["found"], r["recorded"], r["skipped"]) for r in results) == [(1, 0, 1), (1, 1, 0)]
    assert expired_units(ctx) == 4 and len(expiry_history(ctx)) == 1
    assert len(recorded(ctx, "axis.units.expired")) == 1 and wallet_units(ctx, org.id) == 6
    assert_each_once(ctx)


def test_a_sweep_and_an_allocation_at_once_record_an_expiry_once(world: World) -> None:  # R-CORE-8, R-AX-4
    ctx = world.ctx
    org, expiry, year = _expiring_lot(world)
    results: list[dict[str, int]] = []

    def sweep(wait: Callable[[], object]) -> None:
        results.append(sweeping.sweep(_Paused(ctx.sessions, wait), now=expiry))  # type: ignore[arg-type]

    def allocate(wait: Callable[[], object]) -> None:
        wait()
        org.allocate(expiry, year, 1)

    _at_once(sweep, allocate)
    # Whichever took the organization's lock first recorded it; the other found the lot empty.
    [r] = results
    assert r["found"] == 1 and r["recorded"] + r["skipped"] == 1
    assert expired_units(ctx) == 4 and len(expiry_history(ctx)) == 1
    assert len(recorded(ctx, "axis.units.expired")) == 1
    assert wallet_units(ctx, org.id) == 5  # the 6 live units, one of them allocated
    assert_each_once(ctx)


# --- My2N ---------------------------------------------------------------------------------------

class Residence:
    """A My2N site whose apartments each have a phone (a paid device) and are paid for a year by
    card (the local payment provider), recurring payment then turned off: the licenses lapse at
    their date unless renewed (with recurring payment on they are renewed, tests/test_my2n_renewal.py)."""

    def __init__(self, world: World, *, apartments: int = 1, name: str = "Residence") -> None:
        self.world, self.ctx = world, world.ctx
        self.org_id, owner = org_with_owner(world, name, f"owner@{name.lower()}.example")
        self.owner = world.actor(owner.user)
        self.local = LocalProvider(webhook_secret="whsec_test", clock=self.ctx.clock)
        with transaction(self.ctx.sessions) as s:
            site = my2n.create_site(s, org_id=self.org_id, name="Block A", actor=self.owner, now=world.now)
            for i in range(1, apartments + 1):
                apt = my2n.create_apartment(s, site=site, name=f"A{i}", actor=self.owner, now=world.now)
                my2n.add_device(s, site=site, serial=f"{name}-PHONE-{i}", kind="phone", apartment_id=apt.id,
                                actor=self.owner, now=world.now)
            self.site_id = site.id
        self.run(billing.set_card, payment_method="pm_card_4242", provider=self.local)
        self.run(billing.activate_recurring, provider=self.local)
        self.run(billing.deactivate_recurring, provider=self.local)

    def run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with transaction(self.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return fn(s, site=site, actor=self.owner, now=self.world.now, **kwargs)

    def paid_through(self) -> datetime:
        with self.ctx.sessions() as s:
            [paid] = set(s.scalars(select(Apartment.paid_through).where(Apartment.site_id == self.site_id)))
            assert paid is not None
            return paid

    def renew(self, at: datetime) -> None:
        """At ``at`` the payer turns recurring payment on again (the same billing year: nothing
        to charge), the next year is charged ahead of the anniversary, and it is turned off."""
        self.ctx.clock.set(at)  # type: ignore[attr-defined]
        anniversary = self.paid_through()
        self.run(billing.activate_recurring, provider=self.local)
        with transaction(self.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            billing.renew(s, site=site, now=anniversary, provider=self.local)
        self.run(billing.deactivate_recurring, provider=self.local)


def test_an_apartment_license_warns_30_days_before_it_lapses_and_lapses_once(world: World) -> None:  # R-CORE-8, R-MY-6
    ctx = world.ctx
    home = Residence(world)
    paid = home.paid_through()
    assert paid == add_years(world.now, 1)
    expiring = crossing(ctx, "my2n.apartment.expiring", paid - 30 * DAY)
    assert expiring.payload["apartment"] == "A1" and expiring.payload["site"] == "Block A"
    assert expiring.payload["paid_through"] == paid.isoformat()
    lapsed = crossing(ctx, "my2n.apartment.lapsed", paid)
    assert lapsed.payload["paid_through"] == paid.isoformat()
    assert len(recorded(ctx, "my2n.apartment.expiring")) == 1  # not warned again at the lapse
    assert_each_once(ctx)


def test_a_sweep_that_first_runs_after_the_lapse_sends_the_lapse_not_a_late_warning(world: World) -> None:
    # R-MY-6, R-CORE-8: a warning already too late is not sent.
    ctx = world.ctx
    home = Residence(world)
    paid = home.paid_through()
    assert swept(ctx, paid)["recorded"] == 1
    assert recorded(ctx, "my2n.apartment.expiring") == [] and len(recorded(ctx, "my2n.apartment.lapsed")) == 1


def test_a_renewed_apartment_license_warns_and_lapses_anew(world: World) -> None:  # R-CORE-8, R-MY-6
    ctx = world.ctx
    home = Residence(world)
    paid = home.paid_through()
    crossing(ctx, "my2n.apartment.expiring", paid - 30 * DAY)
    home.renew(paid - DAY)
    renewed = home.paid_through()
    assert renewed == add_years(paid, 1)
    # The old paid-through date passes without a lapse: it was renewed.
    assert swept(ctx, paid)["recorded"] == 0 and recorded(ctx, "my2n.apartment.lapsed") == []
    second = crossing(ctx, "my2n.apartment.expiring", renewed - 30 * DAY, before=1)
    assert second.payload["paid_through"] == renewed.isoformat()
    crossing(ctx, "my2n.apartment.lapsed", renewed)
    assert_each_once(ctx)


# --- Access Commander ---------------------------------------------------------------------------

class Installed:
    """An Access Commander installation with its license device LD-1 and a second device, both
    activated; a heartbeat timeout of a day, so that one report a day later keeps the device
    connected the whole day (24 h connected: a 10-day protective period, R-AC-5)."""

    def __init__(self, world: World, org_id: int, added: datetime) -> None:
        self.ctx, self.org_id = world.ctx, org_id
        with transaction(self.ctx.sessions) as s:
            inst, _token = ac.create_installation(s, org_id=org_id, name="Front gate", actor=OP, now=added,
                                                  uid=f"AC-GATE-{org_id}", heartbeat_timeout_seconds=86400)
            self.id, self.uid = inst.id, inst.uid
            for serial in ("LD-1", "DOOR-2"):
                ac.add_device(s, installation=inst, serial=serial, type="access_unit", actor=OP, now=added)
                ac.report_state(s, installation=inst, serial=serial, connected=True, now=added)
        [code] = world.mint("91379040")
        with transaction(self.ctx.sessions) as s:
            keys.redeem(s, org_id=org_id, typed_key=code, actor=OP, now=added)
            inst = ac.get_installation(s, org_id, self.id)
            ac.generate_license(s, installation=inst, license_device="LD-1", packages=[("91379040", 1)], actor=OP,
                                now=added, secret=self.ctx.secret)
            for serial in ("LD-1", "DOOR-2"):
                ac.activate(s, installation=inst, serial=serial, actor=OP, now=added)

    def report(self, serial: str, connected: bool, at: datetime) -> None:
        with transaction(self.ctx.sessions) as s:
            ac.report_state(s, installation=s.get(Installation, self.id), serial=serial, connected=connected, now=at)

    def view(self, at: datetime) -> dict[str, Any]:
        with self.ctx.sessions() as s:
            return ac.overview_to_dict(ac.overview(s, s.get(Installation, self.id), at))


def test_a_protective_period_warns_3_days_before_it_ends_then_ends_and_devices_stop(world: World) -> None:  # R-CORE-8, R-AC-5, R-AC-6
    ctx, t0 = world.ctx, utc(2026, 2, 2, 8)
    gate = Installed(world, world.org("Gate"), t0)
    gate.report("LD-1", True, t0 + DAY)
    gate.report("LD-1", False, t0 + DAY)
    end = t0 + 11 * DAY  # 24 h connected: 10 days from the disconnection
    assert gate.view(t0 + 2 * DAY)["protective_until"] == end.isoformat()
    ending = crossing(ctx, "ac.protective_period.ending", end - 3 * DAY)
    assert ending.payload["installation"] == gate.uid
    assert ending.payload["protective_until"] == end.isoformat()
    assert ending.payload["disconnected_at"] == (t0 + DAY).isoformat()
    ended = crossing(ctx, "ac.protective_period.ended", end)
    assert ended.payload["due_at"] == end.isoformat()
    assert gate.view(end)["state"] == "suspended"
    [inactive] = recorded(ctx, "ac.devices.inactive")
    assert inactive.payload["devices"] == ["DOOR-2", "LD-1"] and inactive.payload["count"] == 2
    assert inactive.payload["due_at"] == end.isoformat()
    # The license device comes back after the end: still suspended, and the end is not announced
    # again (the suspension keeps its moment); nor after a second disconnection.
    gate.report("LD-1", True, end + DAY)
    gate.report("LD-1", False, end + 2 * DAY)
    assert swept(ctx, end + 20 * DAY)["recorded"] == 0
    assert [len(recorded(ctx, k)) for k in ("ac.protective_period.ending", "ac.protective_period.ended",
                                            "ac.devices.inactive")] == [1, 1, 1]
    assert_each_once(ctx)


def test_a_new_disconnection_after_a_reconnection_is_a_new_protective_period(world: World) -> None:  # R-CORE-8, R-AC-5
    ctx, t0 = world.ctx, utc(2026, 2, 2, 8)
    gate = Installed(world, world.org("Gate"), t0)
    gate.report("LD-1", False, t0)  # 0 connected: a 1-day period, so it is "ending" at once
    first_end = t0 + DAY
    crossing(ctx, "ac.protective_period.ending", t0)
    gate.report("LD-1", True, t0 + timedelta(hours=2))  # back in time: this period never ends
    assert swept(ctx, t0 + timedelta(hours=2, minutes=1))["recorded"] == 0
    gate.report("LD-1", False, t0 + timedelta(hours=3))
    # A new period, from the last evidence (2 h) and again of 1 day: warned once more.
    second_end = t0 + timedelta(hours=2) + DAY
    assert gate.view(t0 + timedelta(hours=3))["protective_until"] == second_end.isoformat()
    assert swept(ctx, t0 + timedelta(hours=3))["recorded"] == 1
    assert len(recorded(ctx, "ac.protective_period.ending")) == 2
    assert swept(ctx, first_end)["recorded"] == 0  # the first period's end never came
    ended = crossing(ctx, "ac.protective_period.ended", second_end)
    assert ended.payload["protective_until"] == second_end.isoformat()
    [inactive] = recorded(ctx, "ac.devices.inactive")
    assert inactive.payload["protective_until"] == second_end.isoformat()
    assert_each_once(ctx)


def test_no_devices_made_inactive_when_none_was_active(world: World) -> None:  # R-CORE-8, R-AC-6
    ctx, t0 = world.ctx, utc(2026, 2, 2, 8)
    gate = Installed(world, world.org("Gate"), t0)
    with transaction(ctx.sessions) as s:
        inst = ac.get_installation(s, gate.org_id, gate.id)
        for serial in ("DOOR-2", "LD-1"):
            ac.deactivate(s, installation=inst, serial=serial, actor=OP, now=t0)
    gate.report("LD-1", False, t0)
    crossing(ctx, "ac.protective_period.ended", t0 + DAY)
    assert recorded(ctx, "ac.devices.inactive") == []


# --- fan-out ------------------------------------------------------------------------------------

def test_swept_events_go_to_webhooks_and_to_each_admin(world: World) -> None:  # R-CORE-8
    ctx, t0 = world.ctx, utc(2026, 3, 1, 10)
    org_id, _owner = org_with_owner(world, "Fan", "owner@fan.example")
    join(world, org_id, "admin@fan.example", Role.admin)
    join(world, org_id, "viewer@fan.example", Role.viewer)
    with transaction(ctx.sessions) as s:
        webhooks.create_endpoint(s, org_id=org_id, url="http://127.0.0.1:9/hooks", event_types=[], actor=OP,
                                 now=t0, key=ctx.secret)
        webhooks.create_endpoint(s, org_id=org_id, url="http://127.0.0.1:9/ac-only", event_types=["ac.*"],
                                 actor=OP, now=t0, key=ctx.secret)
    cams = AxisOrg(world, org_id, registered=t0 - DAY)
    cams.start(t0)
    gate = Installed(world, org_id, t0)
    gate.report("LD-1", False, t0)
    result = [swept(ctx, t0), swept(ctx, t0 + 30 * DAY)]
    kinds = {"axis.grace.ended", "ac.protective_period.ending", "ac.protective_period.ended", "ac.devices.inactive"}
    assert sum(r["recorded"] for r in result) == len(kinds)
    with ctx.sessions() as s:
        swept_events = list(s.scalars(select(Event).join(SweepMark, SweepMark.event_id == Event.id)))
        assert {e.type for e in swept_events} == kinds
        for event in swept_events:
            deliveries = list(s.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)))
            assert len(deliveries) == (2 if event.type.startswith("ac.") else 1)
            assert {d.state for d in deliveries} == {"pending"}
            notes = list(s.scalars(select(Notification).where(Notification.event_id == event.id)))
            assert len(notes) == 2  # the owner and the admin, not the viewer
            assert len({n.user_id for n in notes}) == 2
            title = notes[0].title
            assert title == notifications.title_of(event) and "?" not in title
            assert (P if event.type.startswith("axis.") else gate.uid) in title


# --- concurrency and a killed sweep ---------------------------------------------------------------

def test_two_sweeps_at_once_record_each_transition_once(world: World) -> None:  # R-CORE-8
    ctx = world.ctx
    home = Residence(world, apartments=8)
    at = home.paid_through()  # 8 apartments lapse now (a warning this late is not sent)
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            # Each waits for the other to have found everything before writing: both try all.
            paused = _Paused(ctx.sessions, lambda: barrier.wait(timeout=60))
            results.append(sweeping.sweep(paused, now=at, batch=3))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 2
    assert [r["found"] for r in results] == [8, 8]
    # Both tried all 8: each was recorded by one sweep and skipped by the other.
    assert sum(r["recorded"] for r in results) == 8
    assert sum(r["skipped"] for r in results) == 8
    assert len(recorded(ctx, "my2n.apartment.expiring")) == 0
    assert len(recorded(ctx, "my2n.apartment.lapsed")) == 8
    assert mark_count(ctx) == 8
    subjects = [e.payload["apartment"] for e in recorded(ctx, "my2n.apartment.lapsed")]
    assert sorted(subjects) == [f"A{i}" for i in range(1, 9)]
    assert_each_once(ctx)


def test_a_sweep_killed_halfway_is_finished_by_the_next_without_recording_twice(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:  # R-CORE-8
    ctx = world.ctx
    home = Residence(world, apartments=4)
    at = home.paid_through() - 30 * DAY  # 4 apartments lapse within 30 days
    real_emit = platform_events.emit
    calls = 0

    def dies_in_the_second_batch(*args: Any, **kwargs: Any) -> Event:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")
        return real_emit(*args, **kwargs)

    monkeypatch.setattr(platform_events, "emit", dies_in_the_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        swept(ctx, at, batch=1)
    # The first batch committed; the second rolled back whole (its mark with it).
    assert len(recorded(ctx, "my2n.apartment.expiring")) == 1 and mark_count(ctx) == 1
    monkeypatch.setattr(platform_events, "emit", real_emit)
    assert swept(ctx, at, batch=1) == {"found": 4, "recorded": 3, "skipped": 0}
    events = recorded(ctx, "my2n.apartment.expiring")
    assert sorted(e.payload["apartment"] for e in events) == ["A1", "A2", "A3", "A4"]
    assert swept(ctx, at)["recorded"] == 0
    assert_each_once(ctx)


# --- the console and the schedule -----------------------------------------------------------------

@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClockedCli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


def test_entitle_sweep_records_what_is_due_once(world: World, cli: ClockedCli) -> None:  # R-CORE-8
    s0 = utc(2026, 3, 1, 10)
    org = AxisOrg(world, world.org("Cams"), registered=s0 - DAY)
    org.start(s0)
    cli.now = s0 + 23 * DAY - US
    assert cli.json("sweep") == {"at": cli.now.isoformat(), "found": 0, "recorded": 0, "skipped": 0}
    cli.now = s0 + 23 * DAY
    assert cli.json("sweep", "--batch", "1") == {"at": cli.now.isoformat(), "found": 1, "recorded": 1, "skipped": 0}
    assert cli.json("sweep")["recorded"] == 0
    cli.now = s0 + 30 * DAY
    text = cli.ok("sweep")
    assert "1 transition due, 1 recorded now, 0 recorded by earlier sweeps" in text
    text = cli.ok("sweep")
    assert "1 transition due, 0 recorded now, 1 recorded by earlier sweeps" in text
    assert len(recorded(world.ctx, "axis.grace.ending")) == 1 and len(recorded(world.ctx, "axis.grace.ended")) == 1
    result = cli("sweep", "--batch", "0")
    assert result.exit_code != 0


def test_a_failing_tick_is_logged_and_the_next_tick_retries() -> None:  # R-CORE-8
    calls: list[str] = []

    def flaky() -> str:
        calls.append("x")
        if len(calls) == 1:
            raise RuntimeError("database is down")
        return "ok"

    ticker = Ticker([("flaky", flaky)], every=0.01).start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    ticker.stop()
    assert len(calls) >= 3  # the failure did not end the loop
    assert ticker.tick() == {"flaky": "ok"}
    failing = Ticker([("broken", lambda: 1 / 0), ("after", lambda: "ran")], every=1)
    assert failing.tick() == {"broken": None, "after": "ran"}  # one failing job does not stop the others


def test_serve_sweeps_delivers_and_mails_on_its_schedule(world: World, cli: ClockedCli,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # R-CORE-8
    import uvicorn

    ctx, s0 = world.ctx, utc(2026, 3, 1, 10)
    org_id, _owner = org_with_owner(world, "Cams", "owner@cams.example")
    org = AxisOrg(world, org_id, registered=s0 - DAY)
    org.start(s0)
    cli.now = s0 + 30 * DAY
    monkeypatch.setenv("ENTITLE_DATABASE_URL", cli.url)  # serve exports it for its workers
    monkeypatch.setenv("ENTITLE_MAIL", "local")

    def done() -> bool:
        ended = recorded(ctx, "axis.grace.ended")
        with ctx.sessions() as s:
            mailed = s.scalar(select(func.count()).select_from(Notification)
                              .where(Notification.emailed_at.is_not(None), Notification.event_id.in_(
                                  [e.id for e in ended])))
        return bool(ended) and f"evt_{ended[0].id}" in receiver.acknowledged() and mailed == 1

    def serving(*_args: Any, **_kwargs: Any) -> None:
        """Stands for the server: runs until the loop beside it has recorded the grace's end,
        sent it to the webhook and mailed it to the owner."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)

    with running_receiver() as receiver:
        with transaction(ctx.sessions) as s:
            webhooks.create_endpoint(s, org_id=org_id, url=receiver.url(), event_types=["axis.grace.ended"],
                                     actor=OP, now=s0, key=ctx.secret)
        monkeypatch.setattr(uvicorn, "run", serving)
        result = cli("serve", "--sweep-every", "0.05")
        assert result.exit_code == 0, result.output
        assert done()
        [ended] = recorded(ctx, "axis.grace.ended")
        assert ended.created_at == cli.now
        time.sleep(0.2)  # the loop stopped with the server
        assert len(recorded(ctx, "axis.grace.ended")) == 1 and receiver.ids() == [f"evt_{ended.id}"]
