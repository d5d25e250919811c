"""Per-device vouchers counted per device (issue 14 point 6, R-MY-5, R-MY-6).

An apartment paid with device-years holds as many as it had billable devices (paid, not in
local mode); one more device (added, moved in, local mode turned off) needs one more device-year
or the apartment is partly paid: the device that started counting last stops. Time moves by
passing ``now`` to the services, as tests/test_my2n_subscription.py does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conftest import World
from entitle.actors import operator
from entitle.clock import add_years
from entitle.db import transaction
from entitle.delivery import sweep as sweeping
from entitle.errors import EntitleError
from entitle.history.models import HistoryEntry
from entitle.ledger import services as ledger
from entitle.ledger.models import Account
from entitle.my2n import billing, board, rules
from entitle.my2n import services as my2n
from entitle.my2n import sweep as my2n_sweep
from entitle.my2n.models import Apartment
from entitle.my2n.payments import LocalProvider
from helpers import org_with_owner

US = timedelta(microseconds=1)
DAY = timedelta(days=1)
VENDOR = operator("2n-support")
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


class Flat:
    """A site with apartment A1 holding phone P1 (and whatever a test adds), run by its owner."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
        self.ann = world.actor(owner.user)
        with transaction(world.ctx.sessions) as s:
            site = my2n.create_site(s, org_id=self.org_id, name="Block A", actor=self.ann, now=world.now)
            self.site_id = site.id
            for name in ("A1", "A2"):
                my2n.create_apartment(s, site=site, name=name, actor=self.ann, now=world.now)
        self.add("P1")

    def run(self, fn: Any, **kwargs: Any) -> Any:
        now = kwargs.pop("now", self.world.now)
        with transaction(self.world.ctx.sessions) as s:
            return fn(s, site=my2n.get_site(s, self.org_id, self.site_id), actor=self.ann, now=now, **kwargs)

    def apt_id(self, name: str = "A1") -> int:
        with self.world.ctx.sessions() as s:
            return my2n.apartment_by_name(s, my2n.get_site(s, self.org_id, self.site_id), name).id

    def add(self, serial: str, apartment: str = "A1", *, local_mode: bool = False, kind: str = "phone",
            now: datetime | None = None) -> None:
        self.run(my2n.add_device, serial=serial, kind=kind, apartment_id=self.apt_id(apartment), local_mode=local_mode,
                 now=now or self.world.now)

    def codes(self, scope: str, n: int = 1, years: int = 1) -> list[str]:
        with transaction(self.world.ctx.sessions) as s:
            return my2n.mint_vouchers(s, part_number="9137958", name=f"{scope} {n}", years=years, subscriptions=n,
                                      scope=scope, actor=VENDOR, now=self.world.now)[1]

    def credit(self, scope: str, n: int = 1) -> None:
        for code in self.codes(scope, n):
            self.run(my2n.redeem_voucher, code=code)

    def pay(self, apartment: str = "A1", now: datetime | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.run(my2n.pay_from_credit, apartment_id=self.apt_id(apartment),
                                          now=now or self.world.now)
        return result

    def works(self, now: datetime | None = None) -> dict[str, bool]:
        with self.world.ctx.sessions() as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return {d["serial"]: d["works"] for d in my2n.devices_with_state(s, site=site, now=now or self.world.now)}

    def board(self, now: datetime | None = None) -> dict[str, Any]:
        with self.world.ctx.sessions() as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            shown = board.dashboard(s, site=site, now=now or self.world.now)
            assert shown == board.reference_dashboard(s, site=site, now=now or self.world.now)
            return shown

    def row(self, name: str = "A1", now: datetime | None = None) -> dict[str, Any]:
        return next(r for r in self.board(now)["rows"] if r["name"] == name)

    def apartment(self, name: str = "A1") -> Apartment:
        with self.world.ctx.sessions() as s:
            found = s.get(Apartment, self.apt_id(name))
            assert found is not None
            return found

    def pool(self) -> dict[str, int]:
        with self.world.ctx.sessions() as s:
            return my2n.credit_pool(s, my2n.get_site(s, self.org_id, self.site_id))

    def paid_units(self, name: str = "A1") -> int:
        """What the ledger holds as paid for the apartment (its ``apartment_paid`` account)."""
        with self.world.ctx.sessions() as s:
            return sum(ledger.balance(s, a.id) for a in s.scalars(select(Account).where(
                Account.kind == "apartment_paid", Account.ref == f"apt/{self.apt_id(name)}")))

    def history(self, action: str) -> list[dict[str, Any]]:
        with self.world.ctx.sessions() as s:
            return [h.after or {} for h in s.scalars(select(HistoryEntry).where(
                HistoryEntry.org_id == self.org_id, HistoryEntry.action == action).order_by(HistoryEntry.seq))]


def refused(code: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(EntitleError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value.detail


# --- the rules -----------------------------------------------------------------------------------

def phone(i: int, *, since: datetime | None = None, local: bool = False) -> rules.Device:
    return rules.Device(i, "phone", 1, local, since)


def test_a_per_device_payment_covers_the_devices_counting_longest_the_latest_stops() -> None:
    # R-MY-5: paid for 2 of 3, the device that started counting last stops (not the highest id);
    # a device without a date counts from before any other; local mode and free devices are out.
    a, b, c = phone(3, since=NOW - 2 * DAY), phone(1, since=NOW), phone(2, since=None)
    au, local = rules.Device(4, "answering_unit", 1), phone(5, since=NOW - 9 * DAY, local=True)
    devices = [a, b, c, au, local]
    paid = rules.Apartment(1, add_years(NOW, 1), devices_paid_for=2)
    assert [d.device_id for d in rules.billable_in_order(devices)] == [2, 3, 1]
    assert rules.unpaid_devices(paid, devices) == [b]
    assert rules.apartment_state(paid, devices, NOW) == "partly_paid"
    assert [d.device_id for d in rules.working_devices(paid, devices, NOW)] == [3, 2, 4, 5]
    # Paid for 3 (or per apartment): nothing stops; paid for 0: every billable device stops.
    assert rules.unpaid_devices(rules.Apartment(1, add_years(NOW, 1), 3), devices) == []
    assert rules.unpaid_devices(rules.Apartment(1, add_years(NOW, 1)), devices) == []
    assert rules.unpaid_devices(rules.Apartment(1, add_years(NOW, 1), 0), devices) == [c, a, b]
    # Recurring payment covers every device: paid, not partly paid.
    assert rules.apartment_state(paid, devices, NOW, rules.Recurring(add_years(NOW, 1))) == "paid"
    # Once it ended it is lapsed (every billable device stops), not partly paid.
    assert rules.apartment_state(paid, devices, add_years(NOW, 1)) == "lapsed"
    assert rules.apartment_state(paid, devices, add_years(NOW, 1) - US) == "partly_paid"


def test_a_device_year_is_needed_for_every_paid_year_left() -> None:
    # R-MY-5: a started year counts whole: up to a year left is one, a microsecond more is two.
    end = add_years(NOW, 1)
    assert rules.years_left(end, NOW) == 1
    assert rules.years_left(end, NOW - US) == 2
    assert rules.years_left(end, end - US) == 1
    assert rules.years_left(add_years(NOW, 2), NOW) == 2
    two = [phone(1, since=NOW - DAY), phone(2, since=NOW)]
    paid = rules.Apartment(1, add_years(NOW, 2), devices_paid_for=1)
    top_up = rules.pay_from_pool(paid, two, rules.Credit(5, 2), NOW)
    assert (top_up.taken, top_up.paid_through, top_up.devices_paid_for, top_up.top_up) == (
        rules.Credit(0, 2), add_years(NOW, 2), 2, True)
    with pytest.raises(rules.Refusal) as short:  # an apartment-year does not top up devices
        rules.pay_from_pool(paid, two, rules.Credit(5, 1), NOW)
    assert (short.value.code, short.value.detail["needed_device_years"], short.value.detail["device_ids"]) == (
        "credit_insufficient", 2, [2])


def test_paying_the_next_year_sets_what_it_covers() -> None:
    # R-MY-5: an apartment-year pays every device; device-years pay the billable devices there are.
    two = [phone(1), phone(2), phone(3, local=True)]
    whole = rules.pay_from_pool(rules.Apartment(1, None), two, rules.Credit(1, 9), NOW)
    assert (whole.taken, whole.devices_paid_for, whole.paid_through) == (rules.Credit(1, 0), None, add_years(NOW, 1))
    per_device = rules.pay_from_pool(rules.Apartment(1, NOW + DAY), two, rules.Credit(0, 9), NOW)
    assert (per_device.taken, per_device.devices_paid_for, per_device.paid_through) == (
        rules.Credit(0, 2), 2, add_years(NOW + DAY, 1))
    # Credit used on the day it would lapse pays the next year, even when partly paid now.
    partly = rules.Apartment(1, NOW + DAY, devices_paid_for=1)
    assert rules.pay_from_pool(partly, two, rules.Credit(0, 9), NOW, next_year=True).top_up is False


def test_what_to_order_and_a_card_count_a_partly_paid_apartment_as_short() -> None:
    # R-MY-3, R-MY-5: paid two years ahead for one of two phones: it lacks the second phone's two
    # device-years (not an apartment-year); a card counts it as not paid.
    two = [phone(1, since=NOW - DAY), phone(2, since=NOW)]
    partly = rules.Apartment(1, add_years(NOW, 2), devices_paid_for=1)
    assert rules.shortfall(partly, two, NOW) == rules.Shortfall(2, apartment_year=False)
    assert rules.to_order([partly], two, NOW) == 1
    assert rules.to_order([partly], two, NOW, pool=rules.Credit(3, 0)) == 1
    assert rules.to_order([partly], two, NOW, pool=rules.Credit(0, 2)) == 0
    assert rules.whole_paid_through(partly, two) is None
    assert rules.whole_paid_through(rules.Apartment(1, add_years(NOW, 2), 2), two) == add_years(NOW, 2)
    period_end = add_years(NOW, 1)
    [line] = rules.charge_lines([partly], two, start=NOW, period_end=period_end, price_minor=1200)
    assert (line.days, line.amount_minor) == (366, 1200)  # the year to 2028-03-01 has 29 February


# --- on the server -------------------------------------------------------------------------------

def test_one_device_year_pays_one_phone_and_a_second_phone_stops_until_paid(world: World) -> None:
    # R-MY-5, R-MY-6 (issue 14 point 6): paid with one device-year, a phone added later is not
    # paid: the apartment is partly paid and names the phone that stops; a second device-year
    # pays it through the same date, in the ledger and history.
    flat = Flat(world)
    flat.credit("device")
    paid = flat.pay()
    year = add_years(world.now, 1)
    assert (paid["paid_through"], paid["devices_paid_for"], paid["top_up"]) == (year.isoformat(), 1, False)
    assert flat.pool() == {"apartment_years": 0, "device_years": 0}
    flat.add("P2", now=world.now + DAY)
    later = world.now + DAY
    assert flat.works(later) == {"P1": True, "P2": False}
    row = flat.row(now=later)
    assert (row["state"], row["devices_paid_for"], row["devices_not_paid"]) == ("partly_paid", 1, ["P2"])
    shown = flat.board(later)
    assert (shown["partly_paid"], shown["lapsed"], shown["order"]["quantity"]) == (["A1"], [], 1)
    detail = refused("credit_insufficient", flat.pay, now=later)
    assert (detail["needed_device_years"], detail["devices_not_paid"], detail["apartment"]) == (1, ["P2"], "A1")
    flat.credit("device")
    topped = flat.pay(now=later)
    assert (topped["paid_through"], topped["devices_paid_for"], topped["top_up"]) == (year.isoformat(), 2, True)
    assert flat.works(later) == {"P1": True, "P2": True} and flat.row(now=later)["state"] == "paid"
    assert flat.paid_units() == 2  # two device-years in the ledger, for one apartment
    assert [h.get("top_up", False) for h in flat.history("my2n.apartment.paid")] == [False, True]
    # Both stop together at the paid-through moment, not a microsecond before.
    assert flat.works(year - US) == {"P1": True, "P2": True}
    assert flat.works(year) == {"P1": False, "P2": False} and flat.row(now=year)["state"] == "lapsed"


def test_turning_local_mode_off_needs_one_more_device_year_and_stops_that_device(world: World) -> None:
    # R-MY-3, R-MY-5: P0 (older, in local mode) and P1 paid with one device-year; P0 leaving local
    # mode stops P0 -- it started counting last -- not P1, which was paid for.
    flat = Flat(world)
    flat.add("P0", local_mode=True, now=world.now - DAY)
    flat.credit("device")
    assert flat.pay()["devices_paid_for"] == 1
    flat.run(my2n.set_local_mode, serial="P0", local_mode=False, now=world.now + DAY)
    assert flat.works(world.now + DAY) == {"P0": False, "P1": True}
    assert flat.row(now=world.now + DAY)["devices_not_paid"] == ["P0"]
    # Back in local mode it needs nothing more, and works (local mode never needs a license).
    flat.run(my2n.set_local_mode, serial="P0", local_mode=True, now=world.now + 2 * DAY)
    assert flat.works(world.now + 2 * DAY) == {"P0": True, "P1": True}
    assert flat.row(now=world.now + 2 * DAY)["state"] == "paid"


def test_a_device_moved_in_counts_from_then_and_one_moved_out_frees_its_device_year(world: World) -> None:
    # R-MY-5: paid for two phones; one moved to A2 and another added: the count still covers two.
    flat = Flat(world)
    flat.add("P2")
    flat.credit("device", 2)
    assert flat.pay()["devices_paid_for"] == 2
    later = world.now + DAY
    flat.run(my2n.assign_device, serial="P2", apartment_id=flat.apt_id("A2"), now=later)
    flat.add("P3", now=later)
    assert flat.works(later) == {"P1": True, "P2": False, "P3": True}  # P2: A2 was never paid
    assert flat.row("A2", now=later)["state"] == "not_paid"
    flat.run(my2n.assign_device, serial="P2", apartment_id=flat.apt_id("A1"), now=later + DAY)
    assert flat.works(later + DAY) == {"P1": True, "P2": False, "P3": True}  # moved back: the latest


def test_an_apartment_year_pays_every_device_added_later(world: World) -> None:
    # R-MY-5: paid per apartment, up to the four paid devices work, added whenever.
    flat = Flat(world)
    flat.credit("apartment")
    assert flat.pay()["devices_paid_for"] is None
    for serial in ("P2", "P3", "P4"):
        flat.add(serial, now=world.now + DAY)
    assert set(flat.works(world.now + DAY).values()) == {True} and flat.row(now=world.now + DAY)["state"] == "paid"


def test_auto_credit_tops_up_a_partly_paid_apartment_once_from_device_years(world: World) -> None:
    # R-MY-5: with auto credit on (the default) the sweep pays the new phone from the pool's
    # device-years at once; an apartment-year does not top up; with the setting off nothing moves.
    flat = Flat(world)
    flat.credit("device")
    flat.pay()
    flat.credit("apartment")
    later = world.now + DAY
    flat.add("P2", now=later)

    def sweep(at: datetime) -> dict[str, int]:
        return sweeping.sweep(world.ctx.sessions, now=at, using=[my2n_sweep.finder(LocalProvider(clock=world.ctx.clock))])

    sweep(later)
    assert flat.works(later) == {"P1": True, "P2": False}  # only an apartment-year in the pool
    assert flat.pool() == {"apartment_years": 1, "device_years": 0}
    flat.credit("device", 2)
    flat.run(my2n.set_auto_credit, on=False)
    sweep(later)
    assert flat.pool()["device_years"] == 2 and flat.works(later)["P2"] is False
    flat.run(my2n.set_auto_credit, on=True)
    assert sweep(later)["recorded"] == 1
    assert flat.pool() == {"apartment_years": 1, "device_years": 1} and flat.works(later)["P2"] is True
    assert flat.apartment().devices_paid_for == 2 and flat.apartment().paid_through == add_years(world.now, 1)
    assert sweep(later + DAY)["recorded"] == 0 and flat.pool()["device_years"] == 1  # once
    [auto] = [h for h in flat.history("my2n.apartment.paid") if h.get("automatic")]
    assert auto["top_up"] is True and auto["devices_paid_for"] == 2


def test_a_card_pays_a_partly_paid_apartment_as_a_whole_from_now(world: World) -> None:
    # R-MY-5: recurring payment covers every device at once; the card counts the partly paid
    # apartment as not paid and pays it whole through the anniversary.
    flat = Flat(world)
    flat.credit("device")
    flat.pay()
    flat.add("P2")
    local = LocalProvider(clock=world.ctx.clock)
    flat.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    preview = flat.run(billing.activation_preview, provider=local)
    assert [(line["apartment"], line["days"]) for line in preview["lines"]] == [("A1", 365)]
    flat.run(billing.activate_recurring, provider=local)
    assert flat.works() == {"P1": True, "P2": True}
    apt = flat.apartment()
    assert (apt.devices_paid_for, apt.paid_through) == (None, add_years(world.now, 1))
