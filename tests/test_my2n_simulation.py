"""Issue 14, "Done when": a site run for three simulated years with card payment -- apartments
added and removed, the card changed twice, a renewal declined then paid -- and with vouchers
(per apartment and per device). At every step each apartment needing a license works exactly when
it is paid for, nothing is charged twice, and the ledger, the history and the provider's records
agree (R-MY-2, R-MY-3, R-MY-5, R-MY-6).

The test keeps its own account of the site (``Books``): which devices are in which apartment,
what it expects each charge to be (computed here, by the day, not by the rules' functions), what
each apartment is paid through and for how many devices, and what recurring payment covers. Each
step moves the clock by passing ``now`` to the services and the sweep, then ``check`` compares
the server with the books: every device's ``works``, every apartment's paid-through and state, the
card payments one by one, the provider's invoices, the history, the credit pool and the ledger."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select

from conftest import World
from entitle.actors import operator
from entitle.clock import add_years
from entitle.db import transaction
from entitle.delivery import sweep as sweeping
from entitle.delivery.models import Notification
from entitle.history.models import HistoryEntry
from entitle.ledger import services as ledger
from entitle.ledger.models import Account
from entitle.my2n import billing, board
from entitle.my2n import services as my2n
from entitle.my2n import sweep as my2n_sweep
from entitle.my2n.models import Apartment, CardPayment, PaymentPlan
from entitle.my2n.payments import LocalProvider
from entitle.platform.models import Event
from helpers import org_with_owner

US = timedelta(microseconds=1)
DAY = timedelta(days=1)
WINDOW = timedelta(days=7)  # the renewal's retry window, as documented (docs/my2n.md)
PRICE = 1200  # EUR cents an apartment-year: the local provider's and the settings' default
VENDOR = operator("2n-distributor")
T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)  # the tests' START
Y1, Y2, Y3 = (add_years(T0, n) for n in (1, 2, 3))


@dataclass
class Dev:
    apartment: str | None
    local_mode: bool = False
    since: int = 0  # the order in which billable devices started counting (the books' own clock)


@dataclass
class Apt:
    paid_through: datetime | None = None
    paid_for: int | None = None  # devices paid for with device-years; None: the whole apartment
    card_days: list[tuple[datetime, datetime]] = field(default_factory=list)  # what cards charged


@dataclass
class Books:
    """What the site should be, kept by the test."""

    devices: dict[str, Dev] = field(default_factory=dict)
    apartments: dict[str, Apt] = field(default_factory=dict)
    recurring: bool = False
    period_end: datetime | None = None
    failed_at: datetime | None = None
    pool: dict[str, int] = field(default_factory=lambda: {"apartment_years": 0, "device_years": 0})
    spent: dict[str, int] = field(default_factory=dict)  # units the ledger holds as paid, per apartment
    charged: list[tuple[str, list[str], int, datetime]] = field(default_factory=list)
    clock: int = 0

    def billable(self, apt: str) -> list[str]:
        return sorted((s for s, d in self.devices.items() if d.apartment == apt and not d.local_mode),
                      key=lambda s: self.devices[s].since)

    def partly_paid(self, apt: str) -> bool:
        a = self.apartments[apt]
        return a.paid_for is not None and len(self.billable(apt)) > a.paid_for

    def cover(self) -> datetime | None:
        if not self.recurring or self.period_end is None:
            return None
        return min(self.period_end, self.failed_at or self.period_end) + WINDOW

    def works(self, serial: str, now: datetime) -> bool:
        d = self.devices[serial]
        if d.local_mode and d.apartment is not None:
            return True
        if d.apartment is None:
            return False  # a phone outside every apartment of an apartment-model site
        a = self.apartments[d.apartment]
        covered = self.billable(d.apartment).index(serial) < a.paid_for if a.paid_for is not None else True
        ends = [end for end in (a.paid_through if covered else None, self.cover()) if end is not None]
        return bool(ends) and now < max(ends)

    def state(self, apt: str, now: datetime) -> str:
        if not self.billable(apt):
            return "no_license_needed"
        a, cover = self.apartments[apt], self.cover()
        ends = [end for end in (a.paid_through, cover) if end is not None]
        if not ends or now >= max(ends):
            return "not_paid" if a.paid_through is None else "lapsed"
        if cover is None and self.partly_paid(apt):
            return "partly_paid"
        # Warned 30 days before, unless recurring payment renews it and no charge is failing.
        renews = cover is not None and self.failed_at is None and now < (self.period_end or now)
        return "lapsing_soon" if not renews and max(ends) <= now + timedelta(days=30) else "paid"

    def lines(self, start: datetime, period_end: datetime) -> list[tuple[str, int, int]]:
        """(apartment, days, amount) a card charge from ``start`` to ``period_end`` should have:
        each apartment needing a license, from the end of what is paid for it as a whole."""
        year = (period_end - add_years(period_end, -1)).days
        out = []
        for name, a in self.apartments.items():
            if not self.billable(name):
                continue
            whole = None if self.partly_paid(name) else a.paid_through
            begin = start if whole is None else max(start, whole)
            if begin < period_end:
                days = math.ceil((period_end - begin) / DAY)
                amount = int((Decimal(PRICE * days) / year).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                out.append((name, days, amount))
        return out


class Simulation:
    def __init__(self, world: World) -> None:
        self.world = world
        self.local = LocalProvider(webhook_secret="whsec_sim", clock=world.ctx.clock)
        self.org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
        self.ann = world.actor(owner.user)
        with transaction(world.ctx.sessions) as s:
            self.site_id = my2n.create_site(s, org_id=self.org_id, name="Block A", actor=self.ann, now=T0).id
        self.books = Books()
        self.now = T0
        self.synced = True  # the subscription's quantity follows the apartments once charged or swept

    # --- acting ---------------------------------------------------------------------------------

    def run(self, fn: Any, **kwargs: Any) -> Any:
        with transaction(self.world.ctx.sessions) as s:
            return fn(s, site=my2n.get_site(s, self.org_id, self.site_id), actor=self.ann, now=self.now, **kwargs)

    def at(self, moment: datetime) -> None:
        assert moment >= self.now
        self.now = moment
        self.world.ctx.clock.set(moment)  # type: ignore[attr-defined]

    def _apt_id(self, name: str) -> int:
        with self.world.ctx.sessions() as s:
            return my2n.apartment_by_name(s, my2n.get_site(s, self.org_id, self.site_id), name).id

    def _counts(self, serial: str) -> None:
        self.books.clock += 1
        self.books.devices[serial].since = self.books.clock
        self.synced = False

    def apartment(self, name: str, *phones: str) -> None:
        self.run(my2n.create_apartment, name=name)
        self.books.apartments[name] = Apt()
        for serial in phones:
            self.phone(serial, name)

    def phone(self, serial: str, apartment: str) -> None:
        self.run(my2n.add_device, serial=serial, kind="phone", apartment_id=self._apt_id(apartment))
        self.books.devices[serial] = Dev(apartment)
        self._counts(serial)

    def move(self, serial: str, apartment: str | None) -> None:
        self.run(my2n.assign_device, serial=serial, apartment_id=self._apt_id(apartment) if apartment else None)
        self.books.devices[serial].apartment = apartment
        self._counts(serial)

    def local_mode(self, serial: str, on: bool) -> None:
        self.run(my2n.set_local_mode, serial=serial, local_mode=on)
        self.books.devices[serial].local_mode = on
        self.synced = False
        if not on:
            self._counts(serial)

    def card(self, payment_method: str) -> str:
        label: str = self.run(billing.set_card, payment_method=payment_method, provider=self.local)["card"]
        return label

    def activate(self) -> dict[str, Any]:
        period_end = self.books.period_end if self.books.period_end and self.books.period_end > self.now \
            else add_years(self.now, 1)
        expected = self.books.lines(self.now, period_end)
        preview = self.run(billing.activation_preview, provider=self.local)
        assert [(x["apartment"], x["days"], x["amount_minor"]) for x in preview["lines"]] == expected
        done: dict[str, Any] = self.run(billing.activate_recurring, provider=self.local,
                                        expected_amount_minor=preview["amount_minor"])
        self.books.recurring, self.books.period_end, self.books.failed_at = True, period_end, None
        self._charged("activation", self.now, period_end, expected)
        self.synced = True
        return done

    def deactivate(self) -> None:
        self.run(billing.deactivate_recurring, provider=self.local)
        self.books.recurring, self.books.failed_at = False, None

    def codes(self, scope: str, n: int) -> list[str]:
        with transaction(self.world.ctx.sessions) as s:
            return my2n.mint_vouchers(s, part_number="9137958", name=f"{scope} x{n}", years=1, subscriptions=n,
                                      scope=scope, actor=VENDOR, now=self.now)[1]

    def activate_code(self, code: str, scope: str) -> None:
        self.run(my2n.redeem_voucher, code=code)
        self.books.pool[f"{scope}_years"] += 1

    def pay_from_pool(self, apartment: str) -> None:
        a = self.books.apartments[apartment]
        billable = len(self.books.billable(apartment))
        self.run(my2n.pay_from_credit, apartment_id=self._apt_id(apartment))
        self._pool_paid(apartment, billable, whole=self.books.pool["apartment_years"] > 0)
        assert a.paid_through is not None

    def _pool_paid(self, apartment: str, billable: int, *, whole: bool) -> None:
        a = self.books.apartments[apartment]
        a.paid_through = add_years(max(self.now, a.paid_through or self.now), 1)
        if whole:
            self.books.pool["apartment_years"] -= 1
            a.paid_for = None
        else:
            self.books.pool["device_years"] -= billable
            a.paid_for = billable
        self.books.spent[apartment] = self.books.spent.get(apartment, 0) + (1 if whole else billable)

    def sweep(self, expect: list[tuple[str, datetime, datetime]] | None = None) -> dict[str, int]:
        """Run the sweep; ``expect``: the card charges it should make, (purpose, start, period_end),
        each checked against the books' own lines before the books take it."""
        planned = [(purpose, start, end, self.books.lines(start, end)) for purpose, start, end in expect or []]
        done = sweeping.sweep(self.world.ctx.sessions, now=self.now, using=[my2n_sweep.finder(self.local)])
        for purpose, start, end, lines in planned:
            self._charged(purpose, start, end, lines)
        self.synced = True
        return done

    def _charged(self, purpose: str, start: datetime, period_end: datetime,
                 lines: list[tuple[str, int, int]]) -> None:
        for name, _days, _amount in lines:
            a = self.books.apartments[name]
            begin = start if a.paid_through is None or self.books.partly_paid(name) else max(start, a.paid_through)
            a.card_days.append((begin, period_end))
            a.paid_through = max(a.paid_through or period_end, period_end)
            a.paid_for = None
        if purpose == "renewal":
            self.books.period_end, self.books.failed_at = period_end, None
        if sum(amount for *_, amount in lines):
            self.books.charged.append((purpose, sorted(n for n, *_ in lines), sum(x for *_, x in lines), period_end))

    # --- checking -------------------------------------------------------------------------------

    def check(self, at: datetime | None = None) -> None:
        """The server agrees with the books at ``at`` (default: now)."""
        at = at or self.now
        with self.world.ctx.sessions() as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            works = {d["serial"]: d["works"] for d in my2n.devices_with_state(s, site=site, now=at)}
            shown = board.dashboard(s, site=site, now=at)
            assert shown == board.reference_dashboard(s, site=site, now=at)
            apartments = {a.name: a for a in s.scalars(select(Apartment).where(Apartment.site_id == self.site_id))}
            payments = list(s.scalars(select(CardPayment).order_by(CardPayment.id)))
            pool = my2n.credit_pool(s, site)
            spent = {name: sum(ledger.balance(s, acct.id) for acct in s.scalars(select(Account).where(
                Account.kind == "apartment_paid", Account.ref == f"apt/{a.id}"))) for name, a in apartments.items()}
            received = [h.after or {} for h in s.scalars(select(HistoryEntry).where(
                HistoryEntry.org_id == self.org_id, HistoryEntry.action == "my2n.card_payment.received"))]
            plan = s.scalars(select(PaymentPlan)).one_or_none()
        # Each device works exactly when it is paid for (or recurring payment covers it).
        assert works == {serial: self.books.works(serial, at) for serial in self.books.devices}, at
        # Each apartment: paid through what the books say, for the devices they say, in its state.
        assert {n: (a.paid_through, a.devices_paid_for) for n, a in apartments.items()} == {
            n: (a.paid_through, a.paid_for) for n, a in self.books.apartments.items()}, at
        assert {r["name"]: r["state"] for r in shown["rows"]} == {
            n: self.books.state(n, at) for n in self.books.apartments}, at
        # The card payments are the charges the books expected, one each, in order, and no more.
        assert [(p.purpose, sorted(self._name(apartments, i) for i in p.apartments), p.amount_minor, p.period_end)
                for p in payments] == self.books.charged
        # The provider's records, the card payments and the history agree.
        assert {p.payment_id: p.amount_minor for p in payments} == {
            invoice: amount for invoice, (_, amount) in self.local.invoices.items()}
        assert sorted(h["payment"] for h in received) == sorted(p.payment_id for p in payments)
        assert len({p.payment_id for p in payments}) == len(payments)
        # The pool and the ledger's paid units are the vouchers the books spent.
        assert pool == self.books.pool
        assert {n: u for n, u in spent.items() if u} == self.books.spent
        # Recurring payment is on or off as the books say, renewing at their anniversary.
        assert bool(plan and plan.recurring) is self.books.recurring
        if self.books.recurring:
            assert plan is not None and plan.period_end == self.books.period_end
            assert plan.charge_failed_at == self.books.failed_at
        if self.books.recurring and self.synced:
            assert plan is not None
            [sub] = [x for x in self.local.subscriptions.values() if x.id == plan.subscription_id]
            assert sub.apartments == max(1, sum(1 for n in self.books.apartments if self.books.billable(n)))

    @staticmethod
    def _name(apartments: dict[str, Apartment], apt_id: int) -> str:
        return next(n for n, a in apartments.items() if a.id == apt_id)

    def never_charged_twice(self) -> None:
        """No day of an apartment was paid by card twice."""
        for name, a in self.books.apartments.items():
            spans = sorted(a.card_days)
            for (_, end), (start, _) in zip(spans, spans[1:]):
                assert end <= start, (name, spans)

    def events(self, kind: str) -> list[Event]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(Event).where(Event.type == kind, Event.org_id == self.org_id)))


def test_three_years_of_a_site_paid_by_card_and_vouchers(world: World) -> None:
    # R-MY-2, R-MY-3, R-MY-5, R-MY-6: the whole model, end to end, checked at every step.
    sim = Simulation(world)
    books = sim.books

    # --- year 1: recurring payment on, an apartment added, the card changed, one removed ---------
    for name, phone in (("A1", "P1"), ("A2", "P2"), ("A3", "P3")):
        sim.apartment(name, phone)
    sim.apartment("A4")  # empty: needs no license (R-MY-3)
    sim.check()
    assert books.state("A1", T0) == "not_paid"
    assert sim.card("pm_card_visa") == "Visa •••• 4242"
    sim.activate()  # three apartment-years, a year each
    assert books.charged == [("activation", ["A1", "A2", "A3"], 3 * PRICE, Y1)]
    sim.check()

    sim.at(T0 + 40 * DAY)
    sim.apartment("A5", "P5")  # covered at once by recurring payment (R-MY-5) ...
    sim.check()
    sim.sweep(expect=[("added", sim.now, Y1)])  # ... and charged for the 325 days left
    assert books.charged[-1] == ("added", ["A5"], round(PRICE * 325 / 365), Y1)
    sim.check()
    assert sim.sweep()["recorded"] == 0  # nothing twice
    sim.check()

    sim.at(T0 + 60 * DAY)  # card change 1: off, new card, on again -- charges nothing
    sim.deactivate()
    sim.check()
    assert sim.card("pm_card_mastercard") == "Mastercard •••• 4444"
    assert sim.activate()["charged_minor"] == 0
    sim.check()

    sim.at(T0 + 100 * DAY)  # A2 removed: its phone leaves every apartment; not renewed, no refund
    sim.move("P2", None)
    sim.sweep()
    sim.check()

    sim.at(T0 + 200 * DAY)  # vouchers into the pool; recurring payment pays, the pool waits
    apartment_codes, device_codes = sim.codes("apartment", 2), sim.codes("device", 3)
    sim.activate_code(apartment_codes[0], "apartment")
    sim.sweep()
    sim.check()

    # --- the first renewal, at the anniversary and not a moment before -----------------------------
    sim.at(Y1 - US)
    sim.sweep()
    sim.check()
    sim.at(Y1)
    sim.check()  # paid-through reached, recurring payment's cover keeps them working
    sim.sweep(expect=[("renewal", Y1, Y2)])
    assert books.charged[-1] == ("renewal", ["A1", "A3", "A5"], 3 * PRICE, Y2)
    sim.check()

    # --- year 2: card change 2 with recurring payment off for a while; vouchers pay ---------------
    sim.at(Y1 + 100 * DAY)
    sim.deactivate()
    assert sim.card("pm_card_amex") == "American Express •••• 8431"
    sim.apartment("A6", "P6")  # not paid: its phone stops (recurring payment is off)
    sim.check()
    assert books.state("A6", sim.now) == "not_paid"
    sim.pay_from_pool("A6")  # an apartment-year: the whole apartment, a year from now
    sim.check()

    sim.at(Y1 + 101 * DAY)
    sim.apartment("A7", "P7a", "P7b")
    for code in device_codes[:2]:
        sim.activate_code(code, "device")
    sim.pay_from_pool("A7")  # two device-years: two phones (issue 14 point 6)
    sim.check()
    sim.at(Y1 + 102 * DAY)
    sim.phone("P7c", "A7")  # the third phone is not paid for: partly paid, it stops
    sim.check()
    assert (books.state("A7", sim.now), books.works("P7c", sim.now)) == ("partly_paid", False)
    sim.activate_code(device_codes[2], "device")
    sim.sweep()  # auto credit tops it up from the pool at once: one device-year, same paid-through
    books.pool["device_years"] -= 1
    books.spent["A7"] += 1
    books.apartments["A7"].paid_for = 3
    sim.check()

    sim.at(Y1 + 120 * DAY)
    assert sim.activate()["charged_minor"] == 0  # everything is paid through the anniversary or beyond
    sim.check()

    # --- the second renewal: declined, retried within the window, then paid -------------------------
    sim.local.declining = True
    sim.at(Y2)
    sim.sweep()
    books.failed_at = Y2
    sim.check()
    sim.check(Y2 + WINDOW - US)  # the apartments keep working through the retry window
    sim.at(Y2 + DAY)
    sim.sweep()
    sim.check()
    assert len(sim.events("my2n.card_payment.failed")) == 2  # one a day, the admins notified
    with world.ctx.sessions() as s:
        assert s.scalars(select(Notification).where(Notification.org_id == sim.org_id)).first() is not None
    sim.local.declining = False
    sim.at(Y2 + 2 * DAY)
    sim.sweep(expect=[("renewal", Y2, Y3)])  # from the anniversary: the same amount as on time
    purpose, paid, amount, _ = books.charged[-1]
    # A6 and A7 are paid by vouchers into April 2028: charged only from then (by the day).
    assert (purpose, paid) == ("renewal", ["A1", "A3", "A5", "A6", "A7"]) and 3 * PRICE < amount < 5 * PRICE
    sim.check()
    assert sim.sweep()["recorded"] == 0
    sim.check()

    # --- year 3: A2 back, A5 removed (local mode), the third renewal ----------------------------------
    sim.at(Y2 + 50 * DAY)
    sim.move("P2", "A2")
    sim.check()  # works at once
    sim.local_mode("P5", True)
    sim.sweep(expect=[("added", sim.now, Y3)])
    sim.check()
    sim.at(Y3)
    sim.sweep(expect=[("renewal", Y3, add_years(Y3, 1))])
    assert books.charged[-1][1] == ["A1", "A2", "A3", "A6", "A7"]
    sim.check()
    sim.at(Y3 + 10 * DAY)
    sim.sweep()
    sim.check()

    # Three years: every apartment-day paid by card once, and nothing lapsed or announced lapsed.
    sim.never_charged_twice()
    assert sim.events("my2n.apartment.lapsed") == []
    assert [p for p, *_ in books.charged] == ["activation", "added", "renewal", "renewal", "added", "renewal"]


def test_a_site_left_unpaid_lapses_at_the_end_of_the_retry_window(world: World) -> None:
    # R-MY-5, R-MY-6: the same books when the card never pays: a declined renewal, recurring
    # payment stopped after the 7 days, the apartments lapsed (they were paid: "lapsed", not "not
    # paid"), then one paid again from a voucher a year from then.
    sim = Simulation(world)
    for name, phone in (("A1", "P1"), ("A2", "P2")):
        sim.apartment(name, phone)
    sim.card("pm_card_visa")
    sim.activate()
    sim.check()
    sim.local.declining = True
    sim.at(Y1)
    sim.sweep()
    sim.books.failed_at = Y1
    sim.check()
    sim.check(Y1 + WINDOW - US)
    sim.at(Y1 + WINDOW)
    sim.sweep()  # recurring payment stopped: the apartments lapse (they were paid: "lapsed")
    sim.books.recurring = False
    sim.check()
    assert {e.payload["apartment"] for e in sim.events("my2n.apartment.lapsed")} == {"A1", "A2"}
    [code] = sim.codes("apartment", 1)
    sim.activate_code(code, "apartment")
    sim.pay_from_pool("A1")
    sim.check()
    sim.never_charged_twice()
