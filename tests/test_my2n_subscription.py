"""My2N card payment as a subscription (issue 14, R-MY-5, R-MY-6): re-activation charges only
what is not paid, the subscription follows the apartments, renewal at the anniversary with a
retry window, credit used before an apartment lapses, and what to order counts what is paid.
Time moves with the tests' frozen clock; every money step is checked against the card
payments, the provider's records and history."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import World
from entitle.actors import operator
from entitle.clock import add_years
from entitle.db import transaction
from entitle.delivery import sweep as sweeping
from entitle.delivery.models import Notification
from entitle.my2n import billing, board, rules
from entitle.my2n import services as my2n
from entitle.my2n import sweep as my2n_sweep
from entitle.my2n.models import Apartment, CardPayment, PaymentPlan
from entitle.my2n.payments import LocalProvider
from entitle.history.models import HistoryEntry
from helpers import history_of, org_with_owner

US = timedelta(microseconds=1)
DAY = timedelta(days=1)
VENDOR = operator("2n-support")


@pytest.fixture
def local(world: World) -> LocalProvider:
    return LocalProvider(webhook_secret="whsec_test", clock=world.ctx.clock)


def _history(world: World, org_id: int, action: str) -> list[dict[str, Any]]:
    with world.ctx.sessions() as s:
        return [h.after or {} for h in s.scalars(select(HistoryEntry).where(
            HistoryEntry.org_id == org_id, HistoryEntry.action == action).order_by(HistoryEntry.seq))]


class Site:
    """Four apartments, A1-A3 with a phone (they need a license), A4 empty."""

    def __init__(self, world: World, local: LocalProvider) -> None:
        self.world, self.local = world, local
        self.org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
        self.ann = world.actor(owner.user)
        with transaction(world.ctx.sessions) as s:
            site = my2n.create_site(s, org_id=self.org_id, name="Block A", actor=self.ann, now=world.now)
            self.site_id = site.id
            for i in range(1, 5):
                apt = my2n.create_apartment(s, site=site, name=f"A{i}", actor=self.ann, now=world.now)
                if i < 4:
                    my2n.add_device(s, site=site, serial=f"P{i}", kind="phone", apartment_id=apt.id,
                                    actor=self.ann, now=world.now)
        self.run(billing.set_card, payment_method="pm_card_visa", provider=local)

    def at(self, moment: datetime) -> None:
        self.world.ctx.clock.set(moment)  # type: ignore[attr-defined]

    def run(self, fn: Any, **kwargs: Any) -> Any:
        with transaction(self.world.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return fn(s, site=site, actor=self.ann, now=self.world.now, **kwargs)

    def read(self, fn: Any, **kwargs: Any) -> Any:
        with self.world.ctx.sessions() as s:
            return fn(s, my2n.get_site(s, self.org_id, self.site_id), **kwargs)

    def board(self) -> dict[str, Any]:
        return self.read(lambda s, site: board.dashboard(s, site=site, now=self.world.now))

    def works(self) -> dict[str, bool]:
        return {d["serial"]: d["works"] for d in
                self.read(lambda s, site: my2n.devices_with_state(s, site=site, now=self.world.now))}

    def paid_through(self) -> dict[str, datetime | None]:
        with self.world.ctx.sessions() as s:
            return {a.name: a.paid_through for a in s.scalars(
                select(Apartment).where(Apartment.site_id == self.site_id).order_by(Apartment.id))}

    def payments(self) -> list[CardPayment]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(CardPayment).order_by(CardPayment.id)))

    def plan(self) -> PaymentPlan:
        with self.world.ctx.sessions() as s:
            return s.scalars(select(PaymentPlan)).one()

    def sweep(self) -> dict[str, int]:
        return sweeping.sweep(self.world.ctx.sessions, now=self.world.now, using=[my2n_sweep.finder(self.local)])

    def add_phone(self, serial: str, apartment: str) -> None:
        with transaction(self.world.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            apt = my2n.apartment_by_name(s, site, apartment)
            my2n.add_device(s, site=site, serial=serial, kind="phone", apartment_id=apt.id, actor=self.ann,
                            now=self.world.now)

    def agree(self) -> None:
        """Every card payment recorded is one the provider made, for the same amount, and in history."""
        payments = self.payments()
        assert {p.payment_id: p.amount_minor for p in payments} == {
            invoice: amount for invoice, (_, amount) in self.local.invoices.items()}
        received = _history(self.world, self.org_id, "my2n.card_payment.received")
        assert sorted(a["payment"] for a in received) == sorted(p.payment_id for p in payments)


# --- 1. re-activation charges only what is not paid ----------------------------------------------

def test_turning_recurring_payment_off_and_on_charges_nothing_for_what_is_paid(world: World, local) -> None:
    # R-MY-5: activate, deactivate, change the card, activate -- four times: one year, charged once.
    site = Site(world, local)
    start = world.now
    preview = site.run(billing.activation_preview, provider=local)
    assert (preview["amount_minor"], [line["days"] for line in preview["lines"]]) == (3600, [365, 365, 365])
    assert site.run(billing.activate_recurring, provider=local)["charged_minor"] == 3600
    for i, card in enumerate(["pm_card_mastercard", "pm_card_amex", "pm_card_visa"], start=1):
        site.at(start + i * 30 * DAY)
        site.run(billing.deactivate_recurring, provider=local)
        site.run(billing.set_card, payment_method=card, provider=local)
        assert site.run(billing.activation_preview, provider=local)["amount_minor"] == 0
        done = site.run(billing.activate_recurring, provider=local)
        assert (done["charged_minor"], done["paid"], done["renews_at"]) == (0, [], add_years(start, 1).isoformat())
    year = add_years(start, 1)
    assert site.paid_through() == {"A1": year, "A2": year, "A3": year, "A4": None}
    assert len(site.payments()) == 1
    site.agree()


def test_re_activation_charges_an_unpaid_apartment_by_the_day_to_the_anniversary(world: World, local) -> None:
    # R-MY-5: turned on again 100 days before the anniversary, a new apartment pays 100 days:
    # 1200 × 100 / 365 = 328.77 → 329; the amount shown first is the amount charged.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    site.at(year - 100 * DAY)
    site.run(billing.deactivate_recurring, provider=local)
    site.add_phone("P4", "A4")
    preview = site.run(billing.activation_preview, provider=local)
    assert preview["lines"] == [{"apartment": "A4", "days": 100, "amount_minor": 329}]
    # A stale confirmation charges nothing (R-MY-5: the amount is said before it is charged).
    with pytest.raises(Exception) as stale:
        site.run(billing.activate_recurring, provider=local, expected_amount_minor=328)
    assert getattr(stale.value, "code", None) == "charge_changed" and len(site.payments()) == 1
    done = site.run(billing.activate_recurring, provider=local, expected_amount_minor=329)
    assert (done["charged_minor"], done["paid"]) == (329, ["A4"])
    assert site.paid_through()["A4"] == year
    # A started day counts whole: 100 days less a microsecond is still 100 days.
    assert rules.unpaid_days(None, year - 100 * DAY + US, year) == 100
    assert rules.unpaid_days(None, year - 100 * DAY, year) == 100
    assert rules.unpaid_days(None, year - 100 * DAY - US, year) == 101
    site.agree()


# --- 2. the subscription follows the apartments --------------------------------------------------

def test_an_apartment_that_starts_needing_a_license_works_at_once_and_pays_the_rest_of_the_year(
        world: World, local) -> None:
    # R-MY-5, R-MY-6: with recurring payment on, a phone added works at once (whether the sweep
    # ran or not); the sweep updates the quantity and charges the 300 days to the anniversary.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    site.at(year - 300 * DAY)
    site.add_phone("P4", "A4")
    assert site.works()["P4"] is True and site.board()["lapsed"] == []
    assert site.paid_through()["A4"] is None
    site.sweep()
    [sub] = local.subscriptions.values()
    assert sub.apartments == 4
    first, added = site.payments()
    assert (added.purpose, added.amount_minor, added.period_end) == ("added", 986, year)  # 1200 × 300 / 365
    assert site.paid_through()["A4"] == year
    assert site.sweep()["recorded"] == 0 and len(site.payments()) == 2  # nothing twice
    site.agree()


def test_a_declined_mid_year_charge_keeps_the_new_apartment_working_seven_days(world: World, local) -> None:
    # R-MY-5: the card declines the proration; the admins are told, the sweep retries daily, and
    # the new apartment stops 7 days after the first decline (the paid ones keep working).
    site = Site(world, local)
    site.run(billing.activate_recurring, provider=local)
    site.at(world.now + 10 * DAY)
    declined_at = world.now
    site.add_phone("P4", "A4")
    local.declining = True
    site.sweep()
    assert site.plan().charge_failed_at == declined_at
    site.sweep()  # tried once a day: no second attempt, no second notice today
    assert len(_events(world, "my2n.card_payment.failed")) == 1 and len(local.invoices) == 1
    site.at(declined_at + 7 * DAY - US)
    assert site.works()["P4"] is True
    site.at(declined_at + 7 * DAY)
    assert site.works() == {"P1": True, "P2": True, "P3": True, "P4": False}
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Notification)) >= 1
    local.declining = False
    site.sweep()
    assert site.works()["P4"] is True and site.plan().charge_failed_at is None
    site.agree()


# --- 3. renewal at the anniversary ---------------------------------------------------------------

def test_the_sweep_renews_at_the_anniversary_not_a_moment_before(world: World, local) -> None:
    # R-MY-5: the local provider renews: the next year for the apartments needing a license.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    site.at(year - US)
    site.sweep()
    assert len(site.payments()) == 1
    site.at(year)
    assert site.works()["P1"] is True
    site.sweep()
    renewal = site.payments()[-1]
    assert (renewal.purpose, renewal.amount_minor) == ("renewal", 3600)
    assert site.paid_through()["A1"] == add_years(year, 1) and site.plan().period_end == add_years(year, 1)
    site.sweep()
    assert len(site.payments()) == 2
    site.agree()


def test_a_declined_renewal_is_retried_through_seven_days_then_the_apartments_lapse(world: World, local) -> None:
    # R-MY-5, R-MY-6: declined at the anniversary: admins notified, apartments keep working
    # through the 7-day retry window, recurring payment stops and they lapse only after it.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    local.declining = True
    site.at(year)
    site.sweep()
    assert site.plan().charge_failed_at == year and len(site.payments()) == 1
    assert "my2n.card_payment.failed" in [a for _, a, _ in history_of(world.ctx.engine, site.org_id)]
    site.at(year + 7 * DAY - US)
    assert site.works()["P1"] is True and site.board()["lapsed"] == []
    site.at(year + 7 * DAY)
    assert site.works()["P1"] is False and site.board()["lapsed"] == ["A1", "A2", "A3"]
    site.sweep()
    assert site.plan().recurring is False
    lapsed = [e for e in _events(world, "my2n.apartment.lapsed")]
    site.at(year + 8 * DAY)
    site.sweep()
    assert len(_events(world, "my2n.apartment.lapsed")) == len(lapsed) == 3  # announced once


def test_a_renewal_declined_then_paid_within_the_window_charges_once(world: World, local) -> None:
    # R-MY-5: day 0 declined, day 1 declined, day 2 paid: one renewal, from the anniversary.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    local.declining = True
    for day in (0, 1):
        site.at(year + day * DAY)
        site.sweep()
    local.declining = False
    site.at(year + 2 * DAY)
    site.sweep()
    site.sweep()
    assert [p.purpose for p in site.payments()] == ["activation", "renewal"]
    assert site.paid_through()["A1"] == add_years(year, 1) and site.plan().charge_failed_at is None
    site.agree()


def test_a_local_provider_timing_out_renews_later_with_the_same_key(world: World, local) -> None:
    # R-MY-5: a time-out records nothing; the next sweep retries and pays once.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    local.timing_out = True
    site.at(year)
    site.sweep()
    assert len(site.payments()) == 1 and site.plan().charge_failed_at is None
    local.timing_out = False
    site.sweep()
    assert len(site.payments()) == 2
    site.agree()


def _events(world: World, kind: str) -> list[Any]:
    from entitle.platform.models import Event

    with world.ctx.sessions() as s:
        return list(s.scalars(select(Event).where(Event.type == kind)))


# --- 4. credit used before an apartment lapses ---------------------------------------------------

def _pool_of_one(site: Site) -> None:
    with transaction(site.world.ctx.sessions) as s:
        _, codes = my2n.mint_vouchers(s, part_number="9137958", name="X", years=1, subscriptions=2,
                                      scope="apartment", actor=VENDOR, now=site.world.now)
    site.run(my2n.redeem_voucher, code=codes[0])


def test_credit_in_the_pool_pays_the_day_an_apartment_would_lapse(world: World, local) -> None:
    # R-MY-5: auto credit (on by default): from a day before the lapse a year is paid from the pool,
    # in the ledger and history; the apartment never shows lapsed.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    site.run(billing.deactivate_recurring, provider=local)
    _pool_of_one(site)
    assert site.board()["pool"] == {"apartment_years": 1, "device_years": 0}
    site.at(year - DAY - US)
    site.sweep()
    assert site.paid_through()["A1"] == year
    site.at(year - DAY)
    site.sweep()
    assert site.paid_through()["A1"] == add_years(year, 1)  # from its paid-through: no day lost
    assert site.board()["pool"] == {"apartment_years": 0, "device_years": 0}
    paid = _history(world, site.org_id, "my2n.apartment.paid")
    assert paid and paid[-1]["automatic"] is True
    site.at(year)
    site.sweep()
    lapsed = {e.payload["apartment"] for e in _events(world, "my2n.apartment.lapsed")}
    assert lapsed == {"A2", "A3"}  # only one apartment-year in the pool


def test_auto_credit_turned_off_leaves_the_pool_alone(world: World, local) -> None:
    # R-MY-5: the site setting off: paying from the pool stays manual.
    site = Site(world, local)
    year = add_years(world.now, 1)
    site.run(billing.activate_recurring, provider=local)
    site.run(billing.deactivate_recurring, provider=local)
    _pool_of_one(site)
    site.run(my2n.set_auto_credit, on=False)
    site.at(year)
    site.sweep()
    assert site.paid_through()["A1"] == year and site.board()["pool"]["apartment_years"] == 1


# --- 5. what to order counts what is paid -------------------------------------------------------

def test_what_to_order_is_what_is_not_paid_for_the_next_twelve_months_less_the_pool(world: World, local) -> None:
    # R-MY-3, R-MY-5: one of three paid to exactly a year from now counts as paid; at a
    # microsecond less it does not; the pool's apartment-year is taken off; recurring: nothing.
    site = Site(world, local)
    now = world.now
    apartments = [rules.Apartment(1, add_years(now, 1)), rules.Apartment(2, None), rules.Apartment(3, None)]
    devices = [rules.Device(i, "phone", i) for i in (1, 2, 3)]
    assert rules.to_order(apartments, devices, now) == 2
    short = [rules.Apartment(1, add_years(now, 1) - US)] + apartments[1:]
    assert rules.to_order(short, devices, now) == 3
    assert rules.to_order(apartments, devices, now, pool=rules.Credit(1, 0)) == 1
    assert rules.to_order(apartments, devices, now, pool=rules.Credit(0, 1)) == 1  # one phone: one device-year
    assert rules.to_order(apartments, devices, now, recurring=rules.Recurring(add_years(now, 1))) == 0
    assert site.board()["order"]["quantity"] == 3 and site.board()["order_basis"] == "unpaid_less_pool"
    site.run(billing.activate_recurring, provider=local)
    shown = site.board()
    assert shown["order"]["quantity"] == 0 and shown["order_basis"] == "recurring"
    site.run(billing.deactivate_recurring, provider=local)
    assert site.board()["order"]["quantity"] == 0  # paid through exactly twelve months from now
    site.at(now + US)
    assert site.board()["order"]["quantity"] == 3
