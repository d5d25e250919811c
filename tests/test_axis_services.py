"""AXIS License Manager through the services (SPEC §3, R-AX-1 … R-AX-13), with the clock moved
by hand: every call gets an explicit ``now``. Each scenario ends by checking the ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import make_system_file, verify
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import World
from entitle.actors import operator
from entitle.axis import services as axis
from entitle.axis.models import Allocation, Hardware
from entitle.clock import add_years
from entitle.catalog import services as catalog
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.history.models import HistoryEntry
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.platform.models import Event
from entitle.signing import services as signing
from entitle.systems import services as systems
from entitle.systems.models import System
from helpers import ledger_counts

OP = operator("axis-test")
P = "axis-camera-station"
US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


@dataclass
class Org:
    """One organization's AXIS licensing, driven through the services one transaction per call
    (a refused call rolls back, as a request would)."""

    world: World
    id: int
    system_id: int | None = None
    _serial: int = 0

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with transaction(self.world.ctx.sessions) as s:
            yield s

    def register(self, now: datetime, *, uid: str | None = None, core: int = 0, universal: int = 0) -> int:
        with self.tx() as s:
            system = axis.register_system(s, org_id=self.id, uid=uid or f"ACS-{self.id}", name="HQ",
                                          product_code=P, actor=OP, now=now)
            self.system_id = system.id
        if core or universal:
            self.add(now, core=core, universal=universal)
        return self.system_id

    def add(self, now: datetime, *, core: int = 0, universal: int = 0, hardware: str | None = None) -> list[str]:
        devices = []
        for license_type, n in (("core", core), ("universal", universal)):
            for _ in range(n):
                self._serial += 1
                devices.append(axis.NewDevice(f"CAM-{self._serial:04d}", license_type, hardware))
        assert self.system_id is not None
        with self.tx() as s:
            axis.add_devices(s, org_id=self.id, system_id=self.system_id, devices=devices, actor=OP, now=now)
        return [d.serial for d in devices]

    def start(self, now: datetime) -> None:
        with self.tx() as s:
            axis.start_subscription(s, org_id=self.id, product_code=P, actor=OP, now=now)

    def redeem(self, part: str, quantity: int, now: datetime) -> str:
        [code] = self.world.mint(part, quantity=quantity)
        with self.tx() as s:
            keys.redeem(s, org_id=self.id, typed_key=code, actor=OP, now=now)
        return code

    def allocate(self, now: datetime, *lines: tuple[Any, ...]) -> dict[str, Any]:
        with self.tx() as s:
            return axis.allocate(s, org_id=self.id, product_code=P, actor=OP, now=now,
                                 lines=[axis.Line(*line) for line in lines])

    def status(self, now: datetime) -> dict[str, Any]:
        with self.tx() as s:
            return axis.status(s, org_id=self.id, product=axis.product_by_code(s, P), now=now)

    def refused(self, code: str, action: Callable[[Session], Any]) -> EntitleError:
        """Run ``action`` in a transaction; it must be refused with ``code`` and write nothing."""
        before = ledger_counts(self.world.ctx.engine), self.history_len()
        with pytest.raises(EntitleError) as exc, self.tx() as s:
            action(s)
        assert exc.value.code == code, (exc.value.code, exc.value.message)
        assert exc.value.message.endswith("."), "a refusal is a sentence the user can act on"
        assert (ledger_counts(self.world.ctx.engine), self.history_len()) == before
        return exc.value

    def history_len(self) -> int:
        with self.world.ctx.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(HistoryEntry)
                                .where(HistoryEntry.org_id == self.id)) or 0)

    def history(self, action: str) -> list[HistoryEntry]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == self.id,
                                                             HistoryEntry.action == action)
                                  .order_by(HistoryEntry.seq)))

    def events(self, type_: str) -> list[Event]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(Event).where(Event.org_id == self.id, Event.type == type_)
                                  .order_by(Event.id)))

    def balance(self, kind: str, part: str | None = None) -> int:
        """Sum of the organization's entries on accounts of ``kind`` (optionally one SKU)."""
        with self.world.ctx.sessions() as s:
            q = (select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Account.id == Entry.account_id)
                 .where(Account.org_id == self.id, Account.kind == kind))
            if part is not None:
                q = q.where(Account.sku_id == catalog.sku_by_part(s, part).id)
            return int(s.scalar(q) or 0)


def new_org(world: World, name: str = "Cams") -> Org:
    return Org(world, world.org(name))


def subscribed(world: World, now: datetime, *, name: str = "Cams", uid: str | None = None, core: int = 0,
               universal: int = 0, redeem: Sequence[tuple[str, int]] = ()) -> Org:
    """A new organization whose product is registered with these devices, subscribed at ``now``,
    with these keys redeemed then."""
    org = new_org(world, name)
    org.register(now, uid=uid, core=core, universal=universal)
    org.start(now)
    for part, quantity in redeem:
        org.redeem(part, quantity, now)
    return org


def lot_units(st: dict[str, Any]) -> list[tuple[str, int]]:
    return [(lot["part_number"], lot["units"]) for lot in st["wallet"]["lots"]]


def assert_ledger_sound(world: World) -> None:
    with world.ctx.sessions() as s:
        assert ledger.unbalanced_transactions(s) == []
        assert ledger.negative_accounts(s) == []
        assert ledger.running_balance_mismatches(s) == []


@pytest.fixture(autouse=True)
def _ledger_sound_after_each_scenario(world: World) -> Iterator[None]:
    yield
    assert_ledger_sound(world)


# --- R-AX-1 registration -------------------------------------------------------------------------

def test_a_registration_never_moves_to_another_organization(world: World) -> None:  # R-AX-1
    t0 = utc(2026, 2, 1)
    a, b = new_org(world, "A"), new_org(world, "B")
    a.register(t0, uid="ACS-SHARED", core=2)
    e = b.refused("system_registered_elsewhere", lambda s: axis.register_system(
        s, org_id=b.id, uid="ACS-SHARED", name="stolen", product_code=P, actor=OP, now=t0 + DAY))
    assert "another organization" in e.message
    a.refused("system_exists", lambda s: axis.register_system(
        s, org_id=a.id, uid="ACS-SHARED", name="again", product_code=P, actor=OP, now=t0 + DAY))
    # The other organization cannot reach the system's devices either (it looks like no system).
    b.refused("system_not_found", lambda s: axis.add_devices(
        s, org_id=b.id, system_id=a.system_id, devices=[axis.NewDevice("X", "core")], actor=OP, now=t0))
    # Hardware registrations do not move either.
    with a.tx() as s:
        axis.register_hardware(s, org_id=a.id, product_code=P, serial="S30-0001", license_type="core",
                               actor=OP, now=t0)
    b.refused("hardware_registered_elsewhere", lambda s: axis.register_hardware(
        s, org_id=b.id, product_code=P, serial="S30-0001", license_type="core", actor=OP, now=t0))
    # Nothing is licensed before a system registers the product to the organization.
    b.refused("product_not_registered", lambda s: axis.start_subscription(
        s, org_id=b.id, product_code=P, actor=OP, now=t0))
    b.refused("product_not_registered", lambda s: axis.allocate(
        s, org_id=b.id, product_code=P, lines=[axis.Line("core", 0, 1)], actor=OP, now=t0))
    assert (b.status(t0)["registered"], b.status(t0)["state"]) == (False, "not_registered")
    assert _products(b, t0) == []
    assert [r["product"] for r in _products(a, t0)] == [P]


def _products(org: Org, now: datetime) -> list[dict[str, Any]]:
    with org.tx() as s:
        return axis.products(s, org_id=org.id, now=now)


# --- R-AX-2 current need -------------------------------------------------------------------------

def test_current_need_counts_devices_per_license_type_over_time(world: World) -> None:  # R-AX-2
    t0 = utc(2026, 2, 1)
    org = new_org(world)
    org.register(t0, core=8, universal=2)
    st = org.status(t0)
    assert {t: v["need_now"] for t, v in st["license_types"].items()} == {"core": 8, "universal": 2}
    # Removing a device lowers the need from then on; the past need is kept.
    with org.tx() as s:
        axis.remove_devices(s, org_id=org.id, system_id=org.system_id, serials=["CAM-0001"], actor=OP,
                            now=t0 + DAY)
        assert axis.need(s, org.id, axis.product_by_code(s, P).id, now=t0 + DAY, at=t0) == {
            "core": (7, 8), "universal": (2, 2)}
    org.start(t0 + 2 * DAY)
    st = org.status(t0 + 2 * DAY)
    # The need now and for each coming subscription year (the current year plus five ahead).
    assert [y["index"] for y in st["years"]] == [0, 1, 2, 3, 4, 5]
    assert all(y["license_types"]["core"]["need"] == 7 and y["license_types"]["universal"]["need"] == 2
               for y in st["years"])
    # Devices on hardware are licensed by the hardware, not counted in the subscription need.
    with org.tx() as s:
        axis.register_hardware(s, org_id=org.id, product_code=P, serial="S30-N", license_type="core",
                               actor=OP, now=t0 + 2 * DAY)
    org.add(t0 + 2 * DAY, core=3, hardware="S30-N")
    assert org.status(t0 + 2 * DAY)["license_types"]["core"]["need_now"] == 7
    # A serial removed earlier can come back: it counts again.
    with org.tx() as s:
        axis.add_devices(s, org_id=org.id, system_id=org.system_id, devices=[axis.NewDevice("CAM-0001", "core")],
                         actor=OP, now=t0 + 3 * DAY)
    assert org.status(t0 + 3 * DAY)["license_types"]["core"]["need_now"] == 8
    org.refused("device_exists", lambda s: axis.add_devices(
        s, org_id=org.id, system_id=org.system_id, devices=[axis.NewDevice("CAM-0001", "core")], actor=OP,
        now=t0 + 3 * DAY))
    org.refused("license_type_unknown", lambda s: axis.add_devices(
        s, org_id=org.id, system_id=org.system_id, devices=[axis.NewDevice("CAM-9", "gold")], actor=OP,
        now=t0 + 3 * DAY))


# --- R-AX-3 start a subscription, the grace period ---------------------------------------------

def test_starting_fixes_the_years_and_opens_thirty_days_of_grace(world: World) -> None:  # R-AX-3
    s0 = utc(2026, 3, 1, 10)
    org = new_org(world)
    org.register(s0 - 10 * DAY, core=4)
    org.refused("subscription_not_started", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 0, 1)], actor=OP, now=s0))
    org.start(s0)
    st = org.status(s0)
    assert st["current_year"] == {"index": 0, "start": s0.isoformat(), "end": utc(2027, 3, 1, 10).isoformat(),
                                  "grace_end": (s0 + 30 * DAY).isoformat()}
    assert st["state"] == "in_grace"
    # Day 29 (and the last microsecond of day 30's eve) is still grace; day 30 is not.
    assert org.status(s0 + 29 * DAY)["state"] == "in_grace"
    assert org.status(s0 + 30 * DAY - US)["state"] == "in_grace"
    assert org.status(s0 + 30 * DAY)["state"] == "not_licensed"
    assert org.status(s0 + 30 * DAY)["license_types"]["core"]["state"] == "not_licensed"
    [started] = org.history("axis.subscription.started")
    assert started.after == {"subscription_start": s0.isoformat(), "year": 0, "grace_end": (s0 + 30 * DAY).isoformat()}
    [grace] = org.events("axis.grace.started")
    assert grace.payload["grace_end"] == (s0 + 30 * DAY).isoformat()
    # The dates are fixed: a second start is refused.
    e = org.refused("subscription_already_started", lambda s: axis.start_subscription(
        s, org_id=org.id, product_code=P, actor=OP, now=s0 + 40 * DAY))
    assert e.detail["subscription_start"] == s0.isoformat()
    # Some units allocated after the grace: partially licensed.
    org.redeem("AXIS-ACS-CORE-1Y", 2, s0 + 31 * DAY)
    assert org.allocate(s0 + 31 * DAY, ("core", 0, 2))["state"] == "partially_licensed"


# --- R-AX-4 the wallet ---------------------------------------------------------------------------

def test_the_wallet_gives_the_oldest_units_first(world: World) -> None:  # R-AX-4
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=7)
    org.redeem("AXIS-ACS-CORE-1Y", 5, s0 + DAY)
    org.redeem("AXIS-ACS-CORE-1Y", 5, s0 + 2 * DAY)
    st = org.status(s0 + 3 * DAY)
    assert lot_units(st) == [("AXIS-ACS-CORE-1Y", 5), ("AXIS-ACS-CORE-1Y", 5)]
    assert st["wallet"]["units"] == {"core": {"subscription:1": 10}}
    org.allocate(s0 + 3 * DAY, ("core", 0, 7))
    st = org.status(s0 + 3 * DAY)
    # The first key's lot is empty; the second keeps 3.
    [lot] = st["wallet"]["lots"]
    assert (lot["units"], lot["received_at"]) == (3, (s0 + 2 * DAY).isoformat())
    assert org.balance("wallet", "AXIS-ACS-CORE-1Y") == 3
    assert org.balance("axis_allocation", "AXIS-ACS-CORE-1Y") == 7


def test_one_year_and_five_year_units(world: World) -> None:  # R-AX-4
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=3, redeem=[("AXIS-ACS-CORE-1Y", 3), ("AXIS-ACS-CORE-5Y", 3)])
    # Five-year units license five subscription years at once.
    org.allocate(s0, ("core", 0, 3, 5))
    st = org.status(s0)
    assert [y["license_types"]["core"]["allocated"] for y in st["years"]] == [3, 3, 3, 3, 3, 0]
    assert lot_units(st) == [("AXIS-ACS-CORE-1Y", 3)]
    # One-year units are not five-year units, and there is no two-year unit.
    e = org.refused("insufficient_units", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 5, 1, 5)], actor=OP, now=s0))
    assert e.detail["lines"] == [{"license_type": "core", "term_years": 5, "needed": 1, "available": 0,
                                  "missing": 1}]
    org.refused("term_invalid", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 5, 1, 2)], actor=OP, now=s0))
    org.allocate(s0, ("core", 5, 3, 1))
    assert org.status(s0)["years"][5]["fully_licensed"] is True


def test_unallocated_units_expire_five_years_after_redemption(world: World) -> None:  # R-AX-4
    s0 = utc(2026, 3, 1, 12)
    t = s0 + 10 * DAY + timedelta(hours=3, microseconds=250)  # when the old key is redeemed
    org = subscribed(world, s0, core=1)
    org.redeem("AXIS-ACS-CORE-1Y", 4, t)
    org.redeem("AXIS-ACS-CORE-1Y", 6, t + 400 * DAY)
    expiry = add_years(t, 5)
    assert expiry == utc(2031, 3, 11, 15) + timedelta(microseconds=250)
    # One microsecond before its expiry the old lot is still in the wallet and used first.
    before = org.status(expiry - US)
    assert lot_units(before) == [("AXIS-ACS-CORE-1Y", 4), ("AXIS-ACS-CORE-1Y", 6)]
    assert before["wallet"]["lots"][0]["expires_at"] == expiry.isoformat()

    # At the expiry moment reading already leaves it out, though nothing is written yet.
    at = org.status(expiry)
    assert lot_units(at) == [("AXIS-ACS-CORE-1Y", 6)]
    assert at["wallet"]["units"] == {"core": {"subscription:1": 6}}
    assert org.balance("wallet", "AXIS-ACS-CORE-1Y") == 10 and org.balance("expired") == 0
    assert org.history("axis.units.expired") == []
    # A refused write rolls back with everything else: still not recorded.
    org.refused("insufficient_units", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 5, 7)], actor=OP, now=expiry))
    assert org.balance("expired") == 0

    # The next write records the expiry in the ledger and history, and uses the newer lot.
    out = org.allocate(expiry, ("core", 5, 1))
    assert out["allocations"][0]["units"] == 1
    assert org.balance("expired", "AXIS-ACS-CORE-1Y") == 4
    assert org.balance("wallet", "AXIS-ACS-CORE-1Y") == 5
    [h] = org.history("axis.units.expired")
    assert h.before == {"units": 4, "part_number": "AXIS-ACS-CORE-1Y"}
    assert h.after == {"units": 0, "expired_at": expiry.isoformat()}
    [ev] = org.events("axis.units.expired")
    assert ev.payload["units"] == 4
    assert lot_units(org.status(expiry)) == [("AXIS-ACS-CORE-1Y", 5)]
    # Recorded once: a later write finds nothing more to expire.
    org.allocate(expiry + DAY, ("core", 5, 1))
    assert len(org.history("axis.units.expired")) == 1 and org.balance("expired") == 4


def test_a_leap_day_lot_expires_on_28_february(world: World) -> None:  # R-AX-4
    s0 = utc(2028, 2, 29)
    org = subscribed(world, s0, core=1, redeem=[("AXIS-ACS-CORE-5Y", 2)])
    assert org.status(utc(2033, 2, 28) - US)["wallet"]["lots"][0]["expires_at"] == utc(2033, 2, 28).isoformat()
    assert org.status(utc(2033, 2, 28))["wallet"]["lots"] == []


# --- R-AX-5 allocation ---------------------------------------------------------------------------

def test_allocation_licenses_a_year_or_says_how_many_units_are_missing(world: World) -> None:  # R-AX-5
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=8, universal=2, redeem=[("AXIS-ACS-CORE-1Y", 5), ("AXIS-ACS-UNIVERSAL-1Y", 2)])
    # Every line or none: the short core line refuses the whole confirmation.
    e = org.refused("insufficient_units", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, actor=OP, now=s0,
        lines=[axis.Line("universal", 0, 2), axis.Line("core", 0, 8)]))
    assert e.detail["missing"] == 3
    assert e.detail["lines"] == [{"license_type": "core", "term_years": 1, "needed": 8, "available": 5,
                                  "missing": 3}]
    assert "3 missing" in e.message
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Allocation).where(Allocation.org_id == org.id)) == 0
    org.refused("units_invalid", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 0, 0)], actor=OP, now=s0))
    org.refused("license_type_unknown", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("gold", 0, 1)], actor=OP, now=s0))
    org.refused("allocation_empty", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[], actor=OP, now=s0))
    # Partly: one type covered, the other not; in grace still.
    assert org.allocate(s0 + DAY, ("universal", 0, 2), ("core", 0, 5))["state"] == "in_grace"
    assert org.events("axis.fully_licensed") == []
    org.redeem("AXIS-ACS-CORE-1Y", 3, s0 + 2 * DAY)
    out = org.allocate(s0 + 2 * DAY, ("core", 0, 3))
    assert out["state"] == "fully_licensed"
    [ev] = org.events("axis.fully_licensed")
    assert ev.payload == {"product": P, "year": 0}
    st = org.status(s0 + 2 * DAY)
    assert st["license_types"]["core"] == {"need_now": 8, "need": 8, "allocated": 8, "state": "fully_licensed"}
    assert st["years"][0]["fully_licensed"] is True and st["years"][1]["fully_licensed"] is False
    # Still fully licensed long after the grace period, until the year ends.
    assert org.status(utc(2027, 3, 1) - US)["state"] == "fully_licensed"


def test_years_up_to_five_ahead_can_be_allocated(world: World) -> None:  # R-AX-5
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=1, redeem=[("AXIS-ACS-CORE-1Y", 10)])
    org.allocate(s0, ("core", 5, 1))  # current year + 5
    e = org.refused("year_out_of_range", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 6, 1)], actor=OP, now=s0))
    assert (e.detail["first"], e.detail["last"]) == (0, 5)
    # Two years on, the window has moved: year 1 is past, year 7 is reachable, 8 is not.
    later = utc(2028, 3, 1)
    assert org.status(later)["current_year"]["index"] == 2
    org.refused("year_out_of_range", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 1, 1)], actor=OP, now=later))
    org.allocate(later, ("core", 7, 1))
    e = org.refused("year_out_of_range", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 8, 1)], actor=OP, now=later))
    assert (e.detail["first"], e.detail["last"]) == (2, 7)
    assert [y["index"] for y in org.status(later)["years"]] == [2, 3, 4, 5, 6, 7]


# --- R-AX-6 renewal ------------------------------------------------------------------------------

def test_each_renewal_opens_a_new_grace_period(world: World) -> None:  # R-AX-6
    s0 = utc(2026, 3, 1, 8)
    org = subscribed(world, s0, core=4, redeem=[("AXIS-ACS-CORE-1Y", 4)])
    org.allocate(s0, ("core", 0, 4))
    assert org.status(utc(2027, 3, 1, 8) - US)["state"] == "fully_licensed"
    y1 = utc(2027, 3, 1, 8)
    st = org.status(y1)
    assert st["current_year"] == {"index": 1, "start": y1.isoformat(), "end": utc(2028, 3, 1, 8).isoformat(),
                                  "grace_end": (y1 + 30 * DAY).isoformat()}
    assert st["state"] == "in_grace"
    assert org.status(y1 + 30 * DAY - US)["state"] == "in_grace"
    assert org.status(y1 + 30 * DAY)["state"] == "not_licensed"
    # Year 1 was never renewed: unlicensed for the rest of its days, whatever happens to later
    # years (allocated to ahead of time, during year 1, for years 2 and 3).
    org.redeem("AXIS-ACS-CORE-1Y", 8, y1 + 31 * DAY)
    org.allocate(y1 + 31 * DAY, ("core", 2, 4), ("core", 3, 4))
    y2 = utc(2028, 3, 1, 8)
    assert org.status(y2 - US)["state"] == "not_licensed"
    # Those anniversaries need no grace; year 4 has one.
    assert org.status(y2)["state"] == "fully_licensed"
    assert org.status(utc(2029, 3, 1, 8))["state"] == "fully_licensed"
    assert org.status(utc(2030, 3, 1, 8))["state"] == "in_grace"
    org.refused("years_invalid", lambda s: axis.renew(s, org_id=org.id, product_code=P, years_ahead=6,
                                                      actor=OP, now=y1))


def test_renewing_is_refused_as_a_whole_when_the_wallet_is_short(world: World) -> None:  # R-AX-6 R-AX-5
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=4, universal=1, redeem=[("AXIS-ACS-CORE-1Y", 8)])
    # Years 0 to 2: core 3 x 4 devices, 8 held; universal 3 x 1 device, none held.
    e = org.refused("insufficient_units", lambda s: axis.renew(s, org_id=org.id, product_code=P, years_ahead=2,
                                                               actor=OP, now=s0))
    assert e.detail["missing"] == 7 and e.detail["years"] == [0, 1, 2]
    assert e.detail["lines"] == [
        {"license_type": "core", "missing": 4, "missing_by_year": {"2": 4}},
        {"license_type": "universal", "missing": 3, "missing_by_year": {"0": 1, "1": 1, "2": 1}}]
    assert "core: 4 missing (year 2: 4)" in e.message and "years 0 to 2" in e.message
    assert lot_units(org.status(s0)) == [("AXIS-ACS-CORE-1Y", 8)]


def _renew(org: Org, now: datetime, years_ahead: int) -> dict[str, Any]:
    with org.tx() as s:
        return axis.renew(s, org_id=org.id, product_code=P, years_ahead=years_ahead, actor=OP, now=now)


def _year_units(org: Org, now: datetime, license_type: str = "core") -> dict[int, int]:
    return {y["index"]: y["license_types"][license_type]["allocated"] for y in org.status(now)["years"]}


def test_a_renewal_in_grace_licenses_the_year_it_is_in_first(world: World) -> None:  # R-AX-6 R-AX-5
    s0 = utc(2026, 3, 1, 8)
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-1Y", 40)])
    org.allocate(s0, ("core", 0, 10))
    y1 = utc(2027, 3, 1, 8)  # year 1's renewal grace: year 0 allocated, 30 units in the wallet
    assert org.status(y1)["state"] == "in_grace" and _year_units(org, y1)[1] == 0
    out = _renew(org, y1, years_ahead=1)
    # The year it is in first, then the one ahead asked; and it says so.
    assert [(a["year"], a["units"], a["years"]) for a in out["allocations"]] == [(1, 10, 1), (2, 10, 1)]
    assert (out["years"], out["licensed_years"]) == ([1, 2], [1, 2])
    assert out["message"] == "Renewed: allocated to years 1, 2; years 1 to 2 are fully licensed."
    assert out["state"] == "fully_licensed"
    # Licensed when the grace ends, and through year 2; year 3 opens a grace period again.
    assert org.status(y1 + 30 * DAY)["state"] == "fully_licensed"
    assert org.status(utc(2029, 3, 1, 8) - US)["state"] == "fully_licensed"
    assert org.status(utc(2029, 3, 1, 8))["state"] == "in_grace"
    # Covered: nothing more to allocate for these years; 0 ahead is the current year only.
    again = _renew(org, y1 + DAY, years_ahead=1)
    assert again["allocations"] == [] and again["message"] == "Nothing to renew: years 1 to 2 are fully licensed already."
    assert _renew(org, y1 + DAY, years_ahead=0)["message"] == "Nothing to renew: year 1 is fully licensed already."
    [h1, h2] = org.history("axis.allocated")[1:]
    assert (h1.after["year"], h2.after["year"]) == (1, 2)


def test_a_renewal_at_year_0_reaches_five_years_ahead(world: World) -> None:  # R-AX-6 R-AX-5
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=2, redeem=[("AXIS-ACS-CORE-1Y", 12)])
    # 0 ahead: the current year alone.
    assert [a["year"] for a in _renew(org, s0, years_ahead=0)["allocations"]] == [0]
    # 5 ahead: every year of the allocation window, the current one included (covered already).
    out = _renew(org, s0 + DAY, years_ahead=5)
    assert [a["year"] for a in out["allocations"]] == [1, 2, 3, 4, 5]
    assert out["licensed_years"] == [0, 1, 2, 3, 4, 5]
    assert _year_units(org, s0 + DAY) == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    for bad in (-1, 6):
        e = org.refused("years_invalid", lambda s, bad=bad: axis.renew(s, org_id=org.id, product_code=P,
                                                                        years_ahead=bad, actor=OP, now=s0))
        assert "0 to 5 years ahead" in e.message


def test_a_renewal_is_all_or_nothing_over_the_years_it_covers(world: World) -> None:  # R-AX-6 R-AX-5
    s0 = utc(2026, 3, 1, 8)
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-1Y", 10)])
    org.allocate(s0, ("core", 0, 10))
    y1 = utc(2027, 3, 1, 8)
    org.redeem("AXIS-ACS-CORE-1Y", 19, y1)  # one unit short of years 1 and 2
    e = org.refused("insufficient_units", lambda s: axis.renew(s, org_id=org.id, product_code=P, years_ahead=1,
                                                               actor=OP, now=y1))
    assert e.detail["missing"] == 1 and e.detail["lines"][0]["missing_by_year"] == {"2": 1}
    assert _year_units(org, y1)[1] == 0  # nothing allocated, not even year 1
    # The current year alone fits: the product is licensed when its grace ends.
    assert [a["year"] for a in _renew(org, y1, years_ahead=0)["allocations"]] == [1]
    assert org.status(y1 + 30 * DAY)["state"] == "fully_licensed"


def test_a_renewal_with_five_year_units_licenses_each_year_once(world: World) -> None:  # R-AX-6 R-AX-4
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=2, redeem=[("AXIS-ACS-CORE-5Y", 2), ("AXIS-ACS-CORE-1Y", 2)])
    # Years 0..5: the five-year units license years 0..4, one-year units year 5 -- not five
    # five-year allocations stacked on top of each other.
    out = _renew(org, s0, years_ahead=5)
    assert [(a["year"], a["years"], a["units"]) for a in out["allocations"]] == [(0, 5, 2), (5, 1, 2)]
    assert _year_units(org, s0) == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    assert org.status(s0)["wallet"]["lots"] == []
    # A term named takes units of that term only.
    other = subscribed(world, s0, name="Other", uid="ACS-OTHER", core=2, redeem=[("AXIS-ACS-CORE-5Y", 2)])
    e = other.refused("insufficient_units", lambda s: axis.renew(s, org_id=other.id, product_code=P, years_ahead=0,
                                                                 term_years=1, actor=OP, now=s0))
    assert e.detail["missing"] == 2 and "too few 1-year units to license year 0" in e.message
    with other.tx() as s:
        out = axis.renew(s, org_id=other.id, product_code=P, years_ahead=0, term_years=5, actor=OP, now=s0)
    assert [(a["year"], a["years"], a["units"]) for a in out["allocations"]] == [(0, 5, 2)]


def test_a_subscription_started_on_29_february(world: World) -> None:  # R-AX-3 R-AX-6
    s0 = utc(2028, 2, 29)
    org = subscribed(world, s0, core=2, redeem=[("AXIS-ACS-CORE-1Y", 10)])
    org.allocate(s0, ("core", 0, 2), ("core", 4, 2))
    # Year 0 ends on 28 February 2029 (365 days); year 1 runs to 28 February 2030.
    st = org.status(s0)
    assert (st["years"][0]["end"], st["years"][1]["end"]) == (utc(2029, 2, 28).isoformat(),
                                                              utc(2030, 2, 28).isoformat())
    assert org.status(utc(2029, 2, 28) - US)["state"] == "fully_licensed"
    y1 = org.status(utc(2029, 2, 28))
    assert y1["current_year"]["index"] == 1 and y1["state"] == "in_grace"
    assert y1["current_year"]["grace_end"] == utc(2029, 3, 30).isoformat()  # 28 Feb + 30 days
    assert org.status(utc(2029, 3, 30) - US)["state"] == "in_grace"
    assert org.status(utc(2029, 3, 30))["state"] == "not_licensed"
    # The anniversary comes back to 29 February in the next leap year (year 4).
    y4 = org.status(utc(2032, 2, 29))
    assert (y4["current_year"]["index"], y4["current_year"]["start"]) == (4, utc(2032, 2, 29).isoformat())
    assert y4["state"] == "fully_licensed"
    assert org.status(utc(2032, 2, 29) - US)["current_year"]["index"] == 3


# --- R-AX-7 compensation -------------------------------------------------------------------------

def test_allocating_after_the_grace_period_is_compensated_in_license_days(world: World) -> None:  # R-AX-7
    s0 = world.now  # 2026-01-15 09:00; year 0 runs to 2027-01-15 09:00: 365 days
    org = subscribed(world, s0, core=11, redeem=[("AXIS-ACS-CORE-1Y", 11)])
    day100 = s0 + 100 * DAY
    # 10 units on day 100: 10 x 100 = 1000 license-days = 2 units (730) + 270 license-days.
    [a] = org.allocate(day100, ("core", 0, 10))["allocations"]
    assert (a["compensation_license_days"], a["compensation_units"]) == (1000, 2)
    st = org.status(day100)
    assert st["current_year"]["start"] == s0.isoformat()  # the period dates did not move
    assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 270}
    # The credit is a new lot received on day 100 (its five years run from then), after the old one.
    assert [(lot["units"], lot["received_at"]) for lot in st["wallet"]["lots"]] == [
        (1, s0.isoformat()), (2, day100.isoformat())]
    assert st["wallet"]["lots"][1]["expires_at"] == add_years(day100, 5).isoformat()
    # One more unit on day 165: 1 x 165 = 165 license-days; with the 270 kept: 435 = 1 unit + 70.
    [b] = org.allocate(s0 + 165 * DAY, ("core", 0, 1))["allocations"]
    assert (b["compensation_license_days"], b["compensation_units"]) == (165, 1)
    st = org.status(s0 + 165 * DAY)
    assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 70}
    assert [lot["units"] for lot in st["wallet"]["lots"]] == [2, 1]  # the old lot was used first
    assert st["state"] == "fully_licensed" and st["license_types"]["core"]["allocated"] == 11
    # The ledger: 11 units left the wallet for year 0, 3 came back from it as compensation.
    assert org.balance("axis_allocation", "AXIS-ACS-CORE-1Y") == 11 - 3
    assert org.balance("wallet", "AXIS-ACS-CORE-1Y") == 3
    with world.ctx.sessions() as s:
        rows = s.execute(select(Allocation.compensation_days, Allocation.compensation_units)
                         .where(Allocation.org_id == org.id).order_by(Allocation.id)).all()
    assert [tuple(r) for r in rows] == [(1000, 2), (165, 1)]
    assert [h.after["compensation_units"] for h in org.history("axis.allocated")] == [2, 1]


def test_inside_the_grace_period_there_is_no_compensation(world: World) -> None:  # R-AX-7
    s0 = utc(2026, 5, 1, 9)
    early, late = new_org(world, "Early"), new_org(world, "Late")
    for org in (early, late):
        org.register(s0, core=4)
        org.start(s0)
        org.redeem("AXIS-ACS-CORE-1Y", 4, s0)
    [a] = early.allocate(s0 + 30 * DAY - US, ("core", 0, 4))["allocations"]
    assert (a["compensation_license_days"], a["compensation_units"]) == (0, 0)
    # At the grace end itself: 4 units x 30 days = 120 license-days, less than a unit (365).
    [b] = late.allocate(s0 + 30 * DAY, ("core", 0, 4))["allocations"]
    assert (b["compensation_license_days"], b["compensation_units"]) == (120, 0)
    assert late.status(s0 + 30 * DAY)["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 120}
    assert early.status(s0 + 30 * DAY)["wallet"]["remainder_license_days"] == {}
    # Allocated ahead of time for a coming year: nothing overlaps.
    late.redeem("AXIS-ACS-CORE-1Y", 4, s0 + 200 * DAY)
    [c] = late.allocate(s0 + 200 * DAY, ("core", 1, 4))["allocations"]
    assert c["compensation_license_days"] == 0


def test_compensation_in_a_leap_year_and_after_a_renewal(world: World) -> None:  # R-AX-7 R-AX-6
    s0 = utc(2027, 3, 1)  # year 0: 2027-03-01 .. 2028-03-01 holds 29 February 2028: 366 days
    org = subscribed(world, s0, core=3, redeem=[("AXIS-ACS-CORE-1Y", 9)])
    # Day 244 (2027-10-31): 3 x 244 = 732 license-days = exactly 2 units of 366, nothing left.
    [a] = org.allocate(s0 + 244 * DAY, ("core", 0, 3))["allocations"]
    assert (a["period_start"], a["period_end"]) == (s0.isoformat(), utc(2028, 3, 1).isoformat())
    assert (a["compensation_license_days"], a["compensation_units"]) == (732, 2)
    assert org.status(s0 + 244 * DAY)["wallet"]["remainder_license_days"] == {}
    # Year 1 (2028-03-01 .. 2029-03-01, 365 days), allocated on its day 61 (2028-05-01), after its
    # grace: 3 x 61 = 183 license-days, no whole unit; kept as the remainder.
    y1 = utc(2028, 3, 1)
    assert org.status(y1 + 61 * DAY)["state"] == "not_licensed"
    [b] = org.allocate(y1 + 61 * DAY, ("core", 1, 3))["allocations"]
    assert (b["compensation_license_days"], b["compensation_units"]) == (183, 0)
    assert org.status(y1 + 61 * DAY)["state"] == "fully_licensed"
    assert org.status(y1 + 61 * DAY)["current_year"]["start"] == y1.isoformat()
    assert org.status(y1 + 61 * DAY)["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 183}


def test_a_remainder_becomes_units_with_the_next_compensation_of_its_part(world: World) -> None:  # R-AX-7
    # The decision in docs/axis.md ("Compensation"): license-days kept from a 366-day year can be
    # worth a whole unit of a 365-day year; they are paid with the next compensation of the part,
    # not by an allocation that has none.
    s0 = utc(2027, 3, 1)  # year 0 holds 29 February 2028: 366 days; year 1 has 365
    org = subscribed(world, s0, core=1, redeem=[("AXIS-ACS-CORE-1Y", 3)])
    day365 = s0 + 365 * DAY  # 2028-02-29, the last day of year 0
    [a] = org.allocate(day365, ("core", 0, 1))["allocations"]
    assert (a["compensation_license_days"], a["compensation_units"]) == (365, 0)  # less than 366
    [b] = org.allocate(day365, ("core", 1, 1))["allocations"]  # ahead: nothing overlaps
    assert (b["compensation_license_days"], b["compensation_units"]) == (0, 0)
    assert org.status(day365)["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 365}
    y1 = utc(2028, 3, 1)
    [c] = org.allocate(y1 + 31 * DAY, ("core", 1, 1))["allocations"]  # after year 1's grace
    assert (c["compensation_license_days"], c["compensation_units"]) == (31, 1)  # 365 + 31 = 1 unit + 31
    st = org.status(y1 + 31 * DAY)
    assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 31}
    assert st["wallet"]["units"]["core"] == {"subscription:1": 1}


def test_compensation_for_five_year_units_gives_back_the_overlap_only(world: World) -> None:  # R-AX-7
    s0 = utc(2026, 3, 1)  # year 0: 2026-03-01 .. 2027-03-01, 365 days
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-5Y", 10)])
    # 10 five-year units on day 183 (2026-08-31), after the grace: the overlap is 10 devices x
    # 183 days = 1830 license-days. A five-year unit is worth the five years it licenses,
    # 2026-03-01 .. 2031-03-01 = 1826 days (with 29 Feb 2028): 1 unit back + 4 license-days kept,
    # i.e. 5 device-years, never 5 five-year units (25 device-years for 5 overlapped).
    [a] = org.allocate(s0 + 183 * DAY, ("core", 0, 10, 5))["allocations"]
    assert (a["compensation_license_days"], a["compensation_units"]) == (1830, 1)
    st = org.status(s0 + 183 * DAY)
    assert [(lot["part_number"], lot["units"]) for lot in st["wallet"]["lots"]] == [("AXIS-ACS-CORE-5Y", 1)]
    assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-5Y": 4}
    assert [y["license_types"]["core"]["allocated"] for y in st["years"]] == [10, 10, 10, 10, 10, 0]


def test_a_system_registered_mid_period_does_not_move_the_period(world: World) -> None:  # R-AX-7 R-AX-8
    # The product's registration (its first system) comes before its subscription starts, so
    # the coverage of later allocations starts at the allocation date (after the grace end).
    s0 = utc(2026, 1, 1)  # year 0: 2026-01-01 .. 2027-01-01, 365 days
    org = subscribed(world, s0, uid="ACS-FIRST", core=2, redeem=[("AXIS-ACS-CORE-1Y", 2)])
    org.allocate(s0, ("core", 0, 2))
    day100 = s0 + 100 * DAY
    org.register(day100, uid="ACS-SECOND", core=5)
    st = org.status(day100)
    assert st["registered_at"] == s0.isoformat() and st["current_year"]["start"] == s0.isoformat()
    # Its devices came after the grace end: they wait for the next renewal (R-AX-8).
    assert st["state"] == "fully_licensed" and st["years"][1]["license_types"]["core"]["need"] == 7
    # Licensing them now anyway, on day 110: 5 x 110 = 550 license-days = 1 unit + 185.
    org.redeem("AXIS-ACS-CORE-1Y", 5, day100)
    [a] = org.allocate(s0 + 110 * DAY, ("core", 0, 5))["allocations"]
    assert (a["compensation_license_days"], a["compensation_units"]) == (550, 1)


def test_a_product_registered_mid_period_joins_the_organizations_period(world: World) -> None:  # R-AX-7 R-AX-3
    # A second AXIS product, registered 120 days into the organization's running period.
    with transaction(world.ctx.sessions) as s:
        catalog.load(s, catalog.parse_obj({"products": [{
            "code": "axis-body-worn", "name": "AXIS Body Worn Manager", "model": "axis", "skus": [
                {"part_number": "AXIS-BW-CORE-1Y", "name": "Body worn camera license, 1 year",
                 "grant_kind": "subscription", "grants": {"license_type": "core", "devices": 1}, "term_years": 1}]}]}),
            actor=OP, now=world.now)
    s0 = utc(2026, 1, 1)  # year 0: 2026-01-01 .. 2027-01-01, 365 days
    org = subscribed(world, s0, core=1)
    reg = s0 + 120 * DAY
    code = world.mint("AXIS-BW-CORE-1Y", count=1, quantity=10)[0]
    with org.tx() as s:
        bw = axis.register_system(s, org_id=org.id, uid="BW-1", name="Body worn", product_code="axis-body-worn",
                                  actor=OP, now=reg)
        axis.add_devices(s, org_id=org.id, system_id=bw.id, devices=[axis.NewDevice(f"BW-{i}", "core") for i in range(4)],
                         actor=OP, now=reg)
        op = axis.start_subscription(s, org_id=org.id, product_code="axis-body-worn", actor=OP, now=reg + DAY)
        assert op.subscription_start == s0  # the organization's dates, not moved
        keys.redeem(s, org_id=org.id, typed_key=code, actor=OP, now=reg + DAY)
    product = "axis-body-worn"
    with org.tx() as s:
        st = axis.status(s, org_id=org.id, product=axis.product_by_code(s, product), now=reg + 29 * DAY)
        # Its own 30 days from its registration (day 120 .. day 150), not the period's.
        assert st["state"] == "in_grace" and st["current_year"]["grace_end"] == (reg + 30 * DAY).isoformat()
        # Allocated inside its grace: covered from its registration, so 4 units x 120 days =
        # 480 license-days go back = 1 unit (365) + 115 license-days.
        out = axis.allocate(s, org_id=org.id, product_code=product, lines=[axis.Line("core", 0, 4)], actor=OP,
                            now=reg + 29 * DAY)
        [a] = out["allocations"]
        assert (a["compensation_license_days"], a["compensation_units"]) == (480, 1)
        assert out["state"] == "fully_licensed"
        st = axis.status(s, org_id=org.id, product=axis.product_by_code(s, product), now=reg + 29 * DAY)
        assert st["wallet"]["remainder_license_days"] == {"AXIS-BW-CORE-1Y": 115}
        assert sum(lot["units"] for lot in st["wallet"]["lots"]) == 10 - 4 + 1


# --- R-AX-8 devices added mid-period ------------------------------------------------------------

def test_devices_added_after_the_grace_period_count_toward_the_next_renewal(world: World) -> None:  # R-AX-8
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=10)
    org.add(s0 + 5 * DAY, core=2)  # inside the grace: the current year's need grows
    org.redeem("AXIS-ACS-CORE-1Y", 40, s0)
    org.allocate(s0 + 6 * DAY, ("core", 0, 12))
    org.add(s0 + 60 * DAY, core=5)  # after the grace: no allocation needed now
    st = org.status(s0 + 60 * DAY)
    assert st["state"] == "fully_licensed"
    assert st["license_types"]["core"] == {"need_now": 17, "need": 12, "allocated": 12, "state": "fully_licensed"}
    assert st["years"][0]["license_types"]["core"] == {"need": 12, "allocated": 12, "missing": 0}
    assert st["years"][1]["license_types"]["core"] == {"need": 17, "allocated": 0, "missing": 17}
    # The renewal allocates the grown need for the next year.
    out = _renew(org, s0 + 61 * DAY, years_ahead=1)
    assert [(a["year"], a["units"]) for a in out["allocations"]] == [(1, 17)]
    y1 = org.status(utc(2027, 3, 1))
    assert y1["state"] == "fully_licensed" and y1["license_types"]["core"]["need"] == 17


# --- R-AX-9 growth allowance ---------------------------------------------------------------------

def test_growth_beyond_twice_the_allocation_is_flagged_never_blocked(world: World) -> None:  # R-AX-9
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-1Y", 30)])
    org.allocate(s0, ("core", 0, 10))
    org.add(s0 + 40 * DAY, core=10)  # need 20 = 2 x 10: within the allowance
    st = org.status(s0 + 40 * DAY)
    assert st["growth"] == {"over": False, "license_types": {}}
    assert org.events("axis.growth_allowance.exceeded") == []
    org.add(s0 + 41 * DAY, core=1)  # 21: one over, flagged but added
    st = org.status(s0 + 41 * DAY)
    assert st["growth"] == {"over": True, "license_types": {"core": {"need": 21, "allocated": 10, "limit": 20}}}
    assert st["license_types"]["core"]["need_now"] == 21
    assert st["state"] == "fully_licensed"  # the year's need was fixed at its grace end
    [ev] = org.events("axis.growth_allowance.exceeded")
    assert ev.payload["year"] == 0 and ev.payload["license_types"]["core"]["need"] == 21
    # Growing further in the same year: still added, no second event.
    org.add(s0 + 42 * DAY, core=30)
    assert org.status(s0 + 42 * DAY)["license_types"]["core"]["need_now"] == 51
    assert len(org.events("axis.growth_allowance.exceeded")) == 1
    # Allocating more brings it back within the allowance: 51 <= 2 x 30.
    org.allocate(s0 + 43 * DAY, ("core", 0, 20))
    assert org.status(s0 + 43 * DAY)["growth"]["over"] is False
    # Next year: a new flag when the need outgrows that year's allocation.
    y1 = utc(2027, 3, 1)
    org.redeem("AXIS-ACS-CORE-1Y", 20, y1)
    org.allocate(y1, ("core", 1, 20))
    org.add(y1 + DAY, core=1)  # 52 > 2 x 20
    events = org.events("axis.growth_allowance.exceeded")
    assert [e.payload["year"] for e in events] == [0, 1]


# --- R-AX-10 tied to hardware --------------------------------------------------------------------

def test_hardware_with_preloaded_licenses_and_expansions(world: World) -> None:  # R-AX-10
    s0 = utc(2026, 3, 1)
    org = new_org(world)
    org.register(s0, core=1)
    [preloaded] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    # A preloaded key is not for the wallet; it stays unused.
    e = org.refused("key_not_for_wallet", lambda s: keys.redeem(s, org_id=org.id, typed_key=preloaded,
                                                                 actor=OP, now=s0))
    assert "register the hardware" in e.message
    # A wallet key is not a preloaded key: no hardware is registered.
    [sub] = world.mint("AXIS-ACS-CORE-1Y", quantity=3)
    org.refused("key_not_preloaded", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-A", preloaded_key=sub, actor=OP, now=s0))
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Hardware)) == 0
    # Registering the hardware with its key activates its licenses on it at once.
    with org.tx() as s:
        hw = axis.register_hardware(s, org_id=org.id, product_code=P, serial="S30-A", name="Recorder",
                                    preloaded_key=preloaded, actor=OP, now=s0)
        assert axis.hardware_to_dict(s, hw, s0) | {"registered_at": None} == {
            "serial": "S30-A", "name": "Recorder", "license_type": "core", "preloaded_units": 8, "licenses": 8,
            "expansion_units": 0, "devices": 0, "missing": 0, "licensed": True, "registered_at": None}
    assert org.balance("hardware_license") == 8 and org.balance("wallet") == 0
    with world.ctx.sessions() as s:
        key = s.scalars(select(LicenseKey).where(LicenseKey.redeemed_org_id == org.id)).one()
        assert key.state == "used"
    org.refused("key_already_redeemed", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-B", preloaded_key=preloaded, actor=OP, now=s0))
    org.refused("hardware_exists", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-A", license_type="core", actor=OP, now=s0))
    # Only cameras of the recorder's license type can be attached to it.
    org.refused("hardware_mismatch", lambda s: axis.add_devices(
        s, org_id=org.id, system_id=org.system_id, devices=[axis.NewDevice("CAM-U", "universal", "S30-A")],
        actor=OP, now=s0 + DAY))
    # Ten cameras on the recorder: over its 8 licenses; not part of the subscription need.
    org.add(s0 + DAY, core=10, hardware="S30-A")
    assert org.status(s0 + DAY)["license_types"]["core"]["need_now"] == 1
    with org.tx() as s:
        d = axis.hardware_to_dict(s, axis.get_hardware(s, org.id, "S30-A"), s0 + DAY)
    assert (d["licenses"], d["devices"], d["licensed"]) == (8, 10, False)
    # Expansion keys add units to the wallet; they are not subscription units.
    org.redeem("AXIS-ACS-CORE-EXP", 3, s0 + DAY)
    assert org.status(s0 + DAY)["wallet"]["units"] == {"core": {"expansion:1": 3}}
    org.start(s0 + DAY)
    org.refused("insufficient_units", lambda s: axis.allocate(
        s, org_id=org.id, product_code=P, lines=[axis.Line("core", 0, 1)], actor=OP, now=s0 + DAY))
    e = org.refused("insufficient_units", lambda s: axis.allocate_to_hardware(
        s, org_id=org.id, serial="S30-A", units=4, actor=OP, now=s0 + DAY))
    assert e.detail == {"missing": 1, "available": 3, "needed": 4}
    with org.tx() as s:
        d = axis.allocate_to_hardware(s, org_id=org.id, serial="S30-A", units=2, actor=OP, now=s0 + 2 * DAY)
    assert (d["licenses"], d["expansion_units"], d["devices"], d["licensed"]) == (10, 2, 10, True)
    assert org.balance("hardware_license") == 10 and org.balance("wallet", "AXIS-ACS-CORE-EXP") == 1
    # For good: years later (past the five-year wallet limit) the hardware keeps all ten, while
    # the expansion unit left in the wallet has expired.
    later = utc(2033, 1, 1)
    with org.tx() as s:
        hw = axis.get_hardware(s, org.id, "S30-A")
        assert axis.hardware_to_dict(s, hw, later)["licenses"] == 10
    assert org.status(later)["wallet"]["lots"] == []
    # Another organization can neither see nor expand it.
    other = new_org(world, "Other")
    other.refused("hardware_not_found", lambda s: axis.allocate_to_hardware(
        s, org_id=other.id, serial="S30-A", units=1, actor=OP, now=s0))


def test_devices_beyond_a_hardwares_licenses_are_a_need_for_expansions(world: World) -> None:  # R-AX-10 R-AX-12
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=2, redeem=[("AXIS-ACS-CORE-1Y", 2)])
    org.allocate(s0, ("core", 0, 2))
    [preloaded] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    with org.tx() as s:
        axis.register_hardware(s, org_id=org.id, product_code=P, serial="S30-1", preloaded_key=preloaded,
                               actor=OP, now=s0)

    def hardware(now: datetime) -> tuple[str, dict[str, Any]]:
        st = org.status(now)
        [h] = st["hardware"]
        return st["state"], {k: h[k] for k in ("licenses", "devices", "missing", "from_wallet", "to_buy")}

    # At the edge: 8 devices on 8 licenses is licensed; the 9th and 10th need expansions.
    org.add(s0 + DAY, core=8, hardware="S30-1")
    assert hardware(s0 + DAY) == ("fully_licensed", {"licenses": 8, "devices": 8, "missing": 0, "from_wallet": 0,
                                                     "to_buy": 0})
    org.add(s0 + 2 * DAY, core=2, hardware="S30-1")
    state, h = hardware(s0 + 2 * DAY)
    assert state == "partially_licensed"
    assert h == {"licenses": 8, "devices": 10, "missing": 2, "from_wallet": 0, "to_buy": 2}
    # The subscription's need and guidance are still its own (the hardware's devices are not in it).
    st = org.status(s0 + 2 * DAY)
    assert st["license_types"]["core"]["need_now"] == 2 and st["buying_guidance"]["core"]["0"] == 0
    # An expansion unit in the wallet covers one; one is left to buy; allocated, the rest remains.
    org.redeem("AXIS-ACS-CORE-EXP", 1, s0 + 3 * DAY)
    assert hardware(s0 + 3 * DAY)[1] == {"licenses": 8, "devices": 10, "missing": 2, "from_wallet": 1, "to_buy": 1}
    with org.tx() as s:
        axis.allocate_to_hardware(s, org_id=org.id, serial="S30-1", units=1, actor=OP, now=s0 + 3 * DAY)
    assert hardware(s0 + 3 * DAY) == ("partially_licensed", {"licenses": 9, "devices": 10, "missing": 1,
                                                             "from_wallet": 0, "to_buy": 1})
    org.redeem("AXIS-ACS-CORE-EXP", 1, s0 + 4 * DAY)
    with org.tx() as s:
        axis.allocate_to_hardware(s, org_id=org.id, serial="S30-1", units=1, actor=OP, now=s0 + 4 * DAY)
    assert hardware(s0 + 4 * DAY)[0] == "fully_licensed"
    # Hardware alone, nothing licensed on it: not licensed (there is no grace for hardware).
    bare = new_org(world, "Bare")
    bare.register(s0, uid="ACS-BARE")
    with bare.tx() as s:
        axis.register_hardware(s, org_id=bare.id, product_code=P, serial="S30-BARE", license_type="core",
                               actor=OP, now=s0)
    bare.add(s0, core=1, hardware="S30-BARE")
    assert bare.status(s0 + 91 * DAY)["state"] == "not_licensed"
    assert bare.status(s0 + DAY)["state"] == "trial"  # a running trial is still a trial


def test_hardware_without_a_preloaded_key_needs_its_license_type(world: World) -> None:  # R-AX-10
    s0 = utc(2026, 3, 1)
    org = new_org(world)
    org.register(s0)
    org.refused("license_type_required", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-X", actor=OP, now=s0))
    org.refused("license_type_unknown", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-X", license_type="gold", actor=OP, now=s0))
    [preloaded] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=4)
    org.refused("license_type_mismatch", lambda s: axis.register_hardware(
        s, org_id=org.id, product_code=P, serial="S30-X", license_type="universal", preloaded_key=preloaded,
        actor=OP, now=s0))
    with org.tx() as s:
        axis.register_hardware(s, org_id=org.id, product_code=P, serial="S30-X", license_type="core",
                               actor=OP, now=s0)
    org.redeem("AXIS-ACS-CORE-EXP", 2, s0)
    with org.tx() as s:
        d = axis.allocate_to_hardware(s, org_id=org.id, serial="S30-X", units=2, actor=OP, now=s0)
    assert (d["preloaded_units"], d["licenses"], d["expansion_units"]) == (0, 2, 2)
    assert [h.after for h in org.history("axis.hardware.expanded")] == [{"units": 2, "licenses": 2}]


# --- R-AX-11 offline systems ---------------------------------------------------------------------

def test_an_offline_system_file_registers_the_need_and_gets_what_is_licensed(world: World) -> None:  # R-AX-11
    s0 = utc(2026, 3, 1)
    org = new_org(world)
    key = Ed25519PrivateKey.generate()

    def upload(text: str, now: datetime, org_id: int | None = None) -> str:
        with org.tx() as s:
            return systems.upload_system_file(s, org_id=org_id or org.id, text=text, actor=OP,
                                              now=now, secret=world.ctx.secret).license_file

    upload(make_system_file(key, "SYS-OFF-1", P, {"core": 6, "universal": 2}, [], s0), s0)
    st = org.status(s0)
    assert st["registered"] and st["state"] == "trial"
    assert {t: v["need_now"] for t, v in st["license_types"].items()} == {"core": 6, "universal": 2}
    org.start(s0)
    org.redeem("AXIS-ACS-CORE-1Y", 12, s0)
    org.redeem("AXIS-ACS-UNIVERSAL-5Y", 2, s0)
    org.allocate(s0, ("core", 0, 6), ("core", 1, 6), ("universal", 0, 2, 5))
    # A new file (fresh nonce) with fewer channels: the need follows; the license file states the
    # years and counts allocated, signed, and the device library verifies it.
    now = s0 + 10 * DAY
    text = make_system_file(key, "SYS-OFF-1", P, {"core": 5, "universal": 2}, [], now)
    license_file = upload(text, now)
    with world.ctx.sessions() as s:
        ring = signing.keyring(s)
    lic = verify(license_file, ring, now, "SYS-OFF-1")
    licensed = lic.payload["licensed"]
    assert licensed["state"] == "fully_licensed" and licensed["subscription_start"] == s0.isoformat()
    assert [(y["index"], y["allocated"]) for y in licensed["years"]] == [
        (0, {"core": 6, "universal": 2}), (1, {"core": 6, "universal": 2}), (2, {"core": 0, "universal": 2}),
        (3, {"core": 0, "universal": 2}), (4, {"core": 0, "universal": 2})]
    assert org.status(now)["license_types"]["core"]["need"] == 5
    # Replayed, or uploaded into another organization: refused.
    org.refused("system_file_replayed", lambda s: systems.upload_system_file(
        s, org_id=org.id, text=text, actor=OP, now=now, secret=world.ctx.secret))
    other = new_org(world, "Other")
    other.refused("system_registered_elsewhere", lambda s: systems.upload_system_file(
        s, org_id=other.id, text=make_system_file(key, "SYS-OFF-1", P, {"core": 1}, [], now), actor=OP, now=now,
        secret=world.ctx.secret))
    forged = make_system_file(key, "SYS-OFF-1", P, {"core": 1}, [], now).replace("SYS-OFF-1", "SYS-OFF-2")
    org.refused("system_file_bad_signature", lambda s: systems.upload_system_file(
        s, org_id=org.id, text=forged, actor=OP, now=now, secret=world.ctx.secret))
    # Its devices come from its files only.
    with world.ctx.sessions() as s:
        offline_id = s.scalars(select(System.id).where(System.uid == "SYS-OFF-1")).one()
    org.refused("system_offline", lambda s: axis.add_devices(
        s, org_id=org.id, system_id=offline_id, devices=[axis.NewDevice("CAM-X", "core")], actor=OP, now=now))
    # Devices counted from files behave like online ones: growth after the grace is next year's.
    upload(make_system_file(key, "SYS-OFF-1", P, {"core": 9, "universal": 2}, [], s0 + 40 * DAY), s0 + 40 * DAY)
    st = org.status(s0 + 40 * DAY)
    assert st["state"] == "fully_licensed" and st["license_types"]["core"]["need_now"] == 9
    assert st["years"][1]["license_types"]["core"]["missing"] == 3


# --- R-AX-12 buying guidance ---------------------------------------------------------------------

def test_buying_guidance_counts_the_wallet_for_the_earliest_years(world: World) -> None:  # R-AX-12
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=10, universal=2, redeem=[("AXIS-ACS-CORE-1Y", 15), ("AXIS-ACS-CORE-5Y", 1)])
    org.allocate(s0, ("core", 0, 10))
    # Core: need 10 in years 0..5, 10 allocated to year 0; the wallet holds 5 one-year units and
    # one five-year unit: the five-year unit licenses one device in years 1..5, the one-year
    # units five more in year 1. Universal: 2 a year, none held.
    st = org.status(s0)
    assert st["buying_guidance"] == {
        "core": {"0": 0, "1": 4, "2": 9, "3": 9, "4": 9, "5": 9},
        "universal": {"0": 2, "1": 2, "2": 2, "3": 2, "4": 2, "5": 2}}
    # Buying what it says and allocating it makes the years fully licensed.
    org.redeem("AXIS-ACS-UNIVERSAL-1Y", 2, s0)
    org.allocate(s0, ("universal", 0, 2))
    assert org.status(s0)["buying_guidance"]["universal"]["0"] == 0
    assert org.status(s0)["state"] == "fully_licensed"
    # Before a subscription there are no years to buy for.
    fresh = new_org(world, "Fresh")
    fresh.register(s0, core=3)
    assert fresh.status(s0)["buying_guidance"] == {}


def test_buying_guidance_counts_a_five_year_unit_once_in_each_of_its_years(world: World) -> None:  # R-AX-12 R-AX-4
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-5Y", 2)])
    # Need 10, two five-year units: 8 to buy for each of years 0..4, 10 for year 5.
    expected = {"0": 8, "1": 8, "2": 8, "3": 8, "4": 8, "5": 10}
    assert org.status(s0)["buying_guidance"]["core"] == expected
    # Allocating the wallet as the guidance counts it leaves exactly what it said to buy.
    org.allocate(s0, ("core", 0, 2, 5))
    st = org.status(s0)
    assert st["buying_guidance"]["core"] == expected
    assert {str(y["index"]): y["license_types"]["core"]["missing"] for y in st["years"]} == expected
    # Buying that and renewing makes every year fully licensed, with nothing left to buy.
    org.redeem("AXIS-ACS-CORE-1Y", sum(expected.values()), s0)
    _renew(org, s0, years_ahead=5)
    st = org.status(s0)
    assert all(y["fully_licensed"] for y in st["years"]) and set(st["buying_guidance"]["core"].values()) == {0}
    assert st["wallet"]["lots"] == []


# --- R-AX-13 trials and upgrades -----------------------------------------------------------------

def test_a_trial_runs_ninety_days_from_registration(world: World) -> None:  # R-AX-13
    r = utc(2026, 4, 10, 15)
    org = new_org(world)
    org.register(r, core=5)
    st = org.status(r)
    assert (st["state"], st["trial_ends_at"]) == ("trial", (r + 90 * DAY).isoformat())
    assert org.status(r + 90 * DAY - US)["state"] == "trial"
    assert _products(org, r + 89 * DAY)[0]["state"] == "trial"
    assert org.status(r + 90 * DAY)["state"] == "not_licensed"
    assert org.history("axis.product.registered")[0].after == {"trial_ends_at": (r + 90 * DAY).isoformat()}
    # Starting a subscription during the trial: its grace period applies from then.
    other = new_org(world, "Other")
    other.register(r, uid="ACS-OTHER", core=5)
    other.start(r + 20 * DAY)
    assert other.status(r + 21 * DAY)["state"] == "in_grace"
    assert other.status(r + 50 * DAY)["state"] == "not_licensed"


def test_an_upgrade_converts_allocated_units_once_through_the_ledger(world: World) -> None:  # R-AX-13
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=4, universal=2, redeem=[("AXIS-ACS-CORE-1Y", 6)])
    org.allocate(s0, ("core", 0, 6))
    assert org.status(s0)["state"] == "in_grace"  # universal: 2 needed, none allocated
    org.redeem("AXIS-ACS-UPGRADE-CORE-UNIVERSAL", 2, s0 + DAY)
    org.refused("upgrade_nothing_to_convert", lambda s: axis.upgrade(
        s, org_id=org.id, product_code=P, year=1, units=2, actor=OP, now=s0 + DAY))
    with org.tx() as s:
        out = axis.upgrade(s, org_id=org.id, product_code=P, year=0, units=2, actor=OP, now=s0 + DAY)
    assert out == {"upgrades": [{"year": 0, "units": 2, "from": "core", "to": "universal"}]}
    st = org.status(s0 + DAY)
    assert (st["license_types"]["core"]["allocated"], st["license_types"]["universal"]["allocated"]) == (4, 2)
    assert st["state"] == "fully_licensed" and st["wallet"]["lots"] == []
    # Through the ledger: the upgrade units are allocated, the old ones sit in the upgraded sink.
    assert org.balance("upgraded", "AXIS-ACS-CORE-1Y") == 2
    assert org.balance("axis_allocation", "AXIS-ACS-CORE-1Y") == 4
    assert org.balance("axis_allocation", "AXIS-ACS-UPGRADE-CORE-UNIVERSAL") == 2
    assert org.balance("wallet", "AXIS-ACS-UPGRADE-CORE-UNIVERSAL") == 0
    [h] = org.history("axis.upgraded")
    assert h.after == {"year": 0, "units": 2, "from": "core", "to": "universal",
                       "part_number": "AXIS-ACS-UPGRADE-CORE-UNIVERSAL"}
    # Once: the upgrade units are spent.
    e = org.refused("insufficient_units", lambda s: axis.upgrade(
        s, org_id=org.id, product_code=P, year=0, units=1, actor=OP, now=s0 + 2 * DAY))
    assert e.detail == {"missing": 1, "available": 0, "needed": 1}
    org.refused("year_out_of_range", lambda s: axis.upgrade(
        s, org_id=org.id, product_code=P, year=6, units=1, actor=OP, now=s0 + 2 * DAY))
    with world.ctx.sessions() as s:
        kinds = [a["kind"] for a in axis.allocations_of(s, org.id, axis.product_by_code(s, P))]
    assert kinds == ["allocation", "upgrade", "upgraded"]


def test_an_upgrade_never_leaves_a_need_uncovered(world: World) -> None:  # R-AX-13
    s0 = utc(2026, 3, 1)
    org = subscribed(world, s0, core=10, redeem=[("AXIS-ACS-CORE-1Y", 22)])
    org.allocate(s0, ("core", 0, 10), ("core", 1, 12))
    org.redeem("AXIS-ACS-UPGRADE-CORE-UNIVERSAL", 3, s0)
    # Ten core devices, ten core units: converting any would leave core devices unlicensed.
    e = org.refused("upgrade_leaves_need_uncovered", lambda s: axis.upgrade(
        s, org_id=org.id, product_code=P, year=0, units=2, actor=OP, now=s0 + DAY))
    assert e.detail == {"license_type": "core", "year": 0, "need": 10, "allocated": 10, "requested": 2,
                        "allowed": 0}
    assert "would leave 2 core devices unlicensed" in e.message and "Upgrade at most 0" in e.message
    assert org.status(s0 + DAY)["state"] == "fully_licensed"
    # Year 1 has two units beyond its need: two convert, a third would not.
    org.refused("upgrade_leaves_need_uncovered", lambda s: axis.upgrade(
        s, org_id=org.id, product_code=P, year=1, units=3, actor=OP, now=s0 + DAY))
    with org.tx() as s:
        axis.upgrade(s, org_id=org.id, product_code=P, year=1, units=2, actor=OP, now=s0 + DAY)
    year1 = org.status(s0 + DAY)["years"][1]
    assert (year1["license_types"]["core"]["allocated"], year1["license_types"]["universal"]["allocated"]) == (10, 2)
    assert year1["fully_licensed"] is True
    # Once the devices need Universal (two of them moved), the current year's units can follow.
    serials = [f"CAM-{n:04d}" for n in (1, 2)]
    with org.tx() as s:
        axis.remove_devices(s, org_id=org.id, system_id=org.system_id, serials=serials, actor=OP, now=s0 + 2 * DAY)
    org.add(s0 + 2 * DAY, universal=1)
    with org.tx() as s:
        axis.upgrade(s, org_id=org.id, product_code=P, year=0, units=1, actor=OP, now=s0 + 2 * DAY)
    st = org.status(s0 + 2 * DAY)
    assert st["state"] == "fully_licensed"
    assert (st["license_types"]["core"]["allocated"], st["license_types"]["universal"]["allocated"]) == (9, 1)
