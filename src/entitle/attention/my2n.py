"""The organization's My2N sites as their dashboards count them (SPEC §4, R-MY-3, R-MY-5, R-MY-6):
apartments, how many need a license, which lapsed or lapse within 30 days, what to order.

``my2n.board.dashboard`` answers for one site in a few statements; here the same counts are read
for every site at once: the apartments per site, the paid and billable devices of every
apartment that has paid devices, the payment plans and the credit pools. The rules' own
``covered_until``, ``is_lapsed``, ``lapse_warning_due`` and ``to_order`` then decide, so a site's
tile and its dashboard agree (tests/test_portal_home.py holds them equal).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from entitle.attention.items import Item, day, names
from entitle.ledger.models import Account, Entry
from entitle.my2n import rules
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, PaymentPlan, Site, SiteDevice
from entitle.text import plural

CUSTOM_WARNING = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class SiteTile:
    id: int
    name: str
    model: str
    region: str
    apartments: int
    needing_license: int
    lapsed: tuple[str, ...]  # licenses that ended
    not_paid: tuple[str, ...]  # never paid
    partly_paid: tuple[str, ...]  # paid per device for fewer devices than they have
    lapsing_soon: tuple[str, ...]
    order_part: str
    order_quantity: int
    recurring: bool
    # When the earliest apartment that lapses soon lapses.
    first_lapse: datetime | None
    # A card charge declined (or the renewal at the anniversary not paid yet: ``renewal_unpaid``),
    # and until when recurring payment's retry window keeps the apartments working (R-MY-5).
    charge_failed_at: datetime | None
    renewal_unpaid: bool
    works_until: datetime | None
    custom_expires_at: datetime | None

    @property
    def href(self) -> str:
        return f"/my2n/sites/{self.id}"

    @property
    def stopped(self) -> int:
        """Apartments whose paid devices (some or all) do not work now."""
        return len(self.lapsed) + len(self.not_paid) + len(self.partly_paid)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "model": self.model, "apartments": self.apartments,
                "needing_license": self.needing_license, "lapsed": list(self.lapsed),
                "not_paid": list(self.not_paid), "partly_paid": list(self.partly_paid),
                "lapsing_soon": list(self.lapsing_soon),
                "order": {"part_number": self.order_part, "quantity": self.order_quantity},
                "recurring": self.recurring, "charge_failing": self.charge_failed_at is not None or self.renewal_unpaid,
                "href": self.href}


def _recurring(plan: PaymentPlan | None) -> rules.Recurring | None:
    # ``my2n.services.recurring_of`` for a plan already read.
    if plan is None or not plan.recurring or plan.period_end is None:
        return None
    return rules.Recurring(plan.period_end, plan.charge_failed_at)


def _pools(session: Session, org_id: int) -> dict[int, rules.Credit]:
    """Site -> its credit pool (``my2n.services.credit_pool`` for every site): the running
    balance of each ``site_credit`` account, whose ref is "site/<id>/<scope>"."""
    latest = (select(Entry.account_id, func.max(Entry.id).label("entry_id"))
              .join(Account, Account.id == Entry.account_id)
              .where(Account.org_id == org_id, Account.kind == "site_credit")
              .group_by(Entry.account_id).subquery())
    pools: dict[int, dict[str, int]] = defaultdict(lambda: {"apartment": 0, "device": 0})
    for ref, units in session.execute(select(Account.ref, Entry.balance_after).select_from(Account)
                                      .join(latest, latest.c.account_id == Account.id)
                                      .join(Entry, Entry.id == latest.c.entry_id)):
        _, site_id, scope = ref.split("/", 2)
        pools[int(site_id)][scope] = pools[int(site_id)].get(scope, 0) + int(units)
    return {sid: rules.Credit(p["apartment"], p["device"]) for sid, p in pools.items()}


def sites(session: Session, org_id: int, now: datetime) -> list[SiteTile]:
    all_sites = list(session.scalars(select(Site).where(Site.org_id == org_id).order_by(Site.name, Site.id)))
    if not all_sites:
        return []
    apartments = {sid: int(n) for sid, n in session.execute(
        select(Apartment.site_id, func.count()).where(Apartment.org_id == org_id).group_by(Apartment.site_id))}
    # Every apartment with a billable device (paid, not in local mode: R-MY-3) and how many it has,
    # the counts ``my2n.board.apartment_rows`` reads for one site.
    billable = func.sum(case((SiteDevice.local_mode, 0), else_=1))
    rows: dict[int, list[tuple[rules.Apartment, str, int]]] = defaultdict(list)
    for site_id, apt_id, name, paid_through, paid_for, n_billable in session.execute(
            select(Apartment.site_id, Apartment.id, Apartment.name, Apartment.paid_through, Apartment.devices_paid_for,
                   billable)
            .join(SiteDevice, SiteDevice.apartment_id == Apartment.id)
            .where(SiteDevice.org_id == org_id, SiteDevice.kind.in_(sorted(rules.PAID_KINDS)))
            .group_by(Apartment.site_id, Apartment.id, Apartment.name, Apartment.paid_through,
                      Apartment.devices_paid_for)
            .order_by(Apartment.id)):
        if n_billable:
            rows[site_id].append((rules.Apartment(apt_id, paid_through, paid_for), name, int(n_billable)))
    plans = {p.site_id: p for p in session.scalars(select(PaymentPlan).where(PaymentPlan.org_id == org_id))}
    pools = _pools(session, org_id)
    out = []
    for site in all_sites:
        recurring = _recurring(plans.get(site.id))
        mine = rows.get(site.id, [])
        # The site dashboard's rules over stand-in devices, as many billable ones as each
        # apartment has (apartments without one need no license and change nothing here).
        stand_in = [rules.Device(-(1000 * i + k), "phone", apt.apartment_id)
                    for i, (apt, _name, n) in enumerate(mine) for k in range(1, n + 1)]
        board = rules.dashboard(my2n.rule_site(site), [apt for apt, _n, _b in mine], stand_in, now,
                                pool=pools.get(site.id, rules.Credit()), recurring=recurring)
        name_of = {apt.apartment_id: name for apt, name, _n in mine}
        lapsing = set(board.lapsing_soon)
        soon = [apt for apt, _n, _b in mine if apt.apartment_id in lapsing]
        ends = [c for c in (rules.covered_until(apt.paid_through, recurring) for apt in soon) if c is not None]
        failed = recurring.failed_at if recurring is not None else None
        unpaid = recurring is not None and failed is None and recurring.renewal_due(now)
        out.append(SiteTile(
            site.id, site.name, site.model, site.region, apartments.get(site.id, 0), board.needing_license,
            tuple(name_of[i] for i in board.lapsed), tuple(name_of[i] for i in board.not_paid),
            tuple(name_of[i] for i in board.partly_paid), tuple(name_of[i] for i in board.lapsing_soon),
            board.part, board.to_order, recurring is not None, min(ends, default=None), failed, unpaid,
            recurring.cover if recurring is not None and (failed or unpaid) else None,
            site.custom_expires_at if site.model == "custom" else None))
    return out


def items(tiles: list[SiteTile], now: datetime) -> list[Item]:
    out = []
    for t in tiles:
        board = t.href + "?tab=dashboard"
        for kind, shown, what, stops in (
                ("my2n.not_paid", t.not_paid, "not paid", "Their paid devices do not work until the license is paid"),
                ("my2n.lapsed", t.lapsed, "lapsed", "Their paid devices do not work until the license is paid again"),
                ("my2n.partly_paid", t.partly_paid, "paid for only some of their devices",
                 "The devices not paid for do not work")):
            if shown:
                verb = "is" if len(shown) == 1 else "are"
                out.append(Item(kind, "critical", "my2n", t.name,
                                f"{plural(len(shown), 'apartment')} of {t.name} {verb} {what}: {names(list(shown))}. "
                                f"{stops} (intercoms and 2N answering units keep working).",
                                board, "Pay the apartment licenses"))
        if t.lapsing_soon:
            first = f", the first on {day(t.first_lapse)}" if t.first_lapse else ""
            out.append(Item("my2n.lapsing", "warning", "my2n", t.name,
                            f"{plural(len(t.lapsing_soon), 'apartment license')} of {t.name} "
                            f"{'lapses' if len(t.lapsing_soon) == 1 else 'lapse'} within 30 days{first}: "
                            f"{names(list(t.lapsing_soon))}. " + (
                                f"Order {t.order_quantity:,} × {t.order_part}, or pay them by card."
                                if t.order_quantity else "Pay them from the credit pool or by card."),
                            board, "Pay before they lapse", t.first_lapse))
        if t.charge_failed_at is not None or t.renewal_unpaid:
            until = f" The apartments not paid keep working until {day(t.works_until)}." if t.works_until else ""
            what = (f"The card payment for {t.name} was declined on {day(t.charge_failed_at)}."
                    if t.charge_failed_at is not None else
                    f"The yearly renewal of the card payment for {t.name} is not paid yet.")
            out.append(Item("my2n.card_payment_failed", "critical", "my2n", t.name,
                            f"{what}{until} Check the card, or pay with vouchers.",
                            t.href + "?tab=payments", "Open Payments", t.works_until))
        if t.custom_expires_at is not None and t.custom_expires_at - now <= CUSTOM_WARNING:
            gone = t.custom_expires_at <= now
            out.append(Item("my2n.custom_expiring", "critical" if gone else "warning", "my2n", t.name,
                            f"{t.name} has the retired custom business model and "
                            f"{'expired' if gone else 'expires'} on {day(t.custom_expires_at)}: migrate it to the "
                            "apartment model.", t.href + "?tab=migration", "Migrate the site", t.custom_expires_at))
    return out
