"""The AXIS product list of the organization (SPEC §3): every registered product's state, grace
end, and need against what is allocated to the current subscription year; and the wallet's lots.

``axis.services.status`` answers the same for one product with a handful of queries of its own;
here the same data is read for every product at once -- the need per (product, license type)
in one statement, the allocations, the lots, the hardware -- and the same rules decide:
``rules.year_at``, ``rules.grace_end``, ``rules.licensing_state``, ``rules.over_growth_allowance``,
``rules.hardware_missing`` and the product page's own way of combining license types. The
product's page and its tile therefore always agree (tests/test_portal_home.py holds them equal).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from entitle.attention.items import Item, day, moment
from entitle.axis import rules
from entitle.axis import services as axis
from entitle.axis.models import Allocation, AxisDevice, Hardware, OrgProduct
from entitle.catalog.models import Product, Sku
from entitle.db import UTCDateTime
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.systems.models import System
from entitle.text import plural

EXPIRY_WARNING = timedelta(days=90)  # wallet units shown before their five years run out (R-AX-4)
TRIAL_WARNING = timedelta(days=30)
RENEWAL_WARNING = timedelta(days=30)  # the next subscription year's need, shown before it starts


@dataclass(frozen=True, slots=True)
class TypeLine:
    license_type: str
    need_now: int  # devices needing a license now
    need: int  # the current need: at the end of the grace period (now, while it runs)
    allocated: int  # to the current subscription year
    state: str


@dataclass(frozen=True, slots=True)
class WalletLot:
    product: str  # code
    product_name: str
    part_number: str
    grant_kind: str
    license_type: str
    term_years: int
    units: int
    received_at: datetime

    @property
    def expires_at(self) -> datetime:
        return ledger.lot_expires_at(self.received_at)


@dataclass(frozen=True, slots=True)
class ProductTile:
    code: str
    name: str
    state: str
    systems: int
    registered_at: datetime
    subscription_start: datetime | None
    current_year: rules.Year | None
    grace_end: datetime | None
    trial_ends_at: datetime | None
    types: tuple[TypeLine, ...]
    # License type -> (need now, allocated, limit) where the need is beyond the allowance (R-AX-9).
    growth: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # What the next subscription year misses (its need is the need now, R-AX-8).
    next_year_missing: int = 0
    hardware_missing: int = 0

    @property
    def need(self) -> int:
        return sum(t.need for t in self.types)

    @property
    def allocated(self) -> int:
        return sum(t.allocated for t in self.types)

    @property
    def missing(self) -> int:
        return sum(max(0, t.need - t.allocated) for t in self.types)

    @property
    def href(self) -> str:
        return f"/axis/products/{self.code}"

    def to_dict(self) -> dict[str, Any]:
        y = self.current_year
        return {"product": self.code, "name": self.name, "state": self.state, "systems": self.systems,
                "subscription_start": self.subscription_start.isoformat() if self.subscription_start else None,
                "current_year": None if y is None else {"index": y.index, "start": y.start.isoformat(),
                                                        "end": y.end.isoformat()},
                "grace_end": self.grace_end.isoformat() if self.grace_end else None,
                "trial_ends_at": self.trial_ends_at.isoformat() if self.trial_ends_at else None,
                "need": self.need, "allocated": self.allocated, "missing": self.missing,
                "license_types": {t.license_type: {"need_now": t.need_now, "need": t.need, "allocated": t.allocated,
                                                   "state": t.state} for t in self.types},
                "growth_allowance_exceeded": {t: {"need": n, "allocated": a, "limit": lim}
                                              for t, (n, a, lim) in self.growth.items()},
                "href": self.href}


@dataclass(frozen=True)
class Axis:
    products: list[ProductTile]
    lots: list[WalletLot]


def _need(session: Session, org_id: int, now: datetime, locks: dict[int, datetime]
          ) -> dict[int, dict[str, tuple[int, int]]]:
    """Product -> license type -> (devices needing a license now, devices that did at the
    product's lock moment: the end of its grace period, or now while it runs; now for a product
    whose subscription has not started), in one statement (``axis.services.need`` for every
    product)."""
    # Usually every product locks at one moment (the grace end of the organization's year, or
    # now): that is the ELSE; only the products registered during the year get a WHEN each.
    usual = Counter(locks.values()).most_common(1)[0][0] if locks else now
    others = {pid: at for pid, at in locks.items() if at != usual}
    lock: Any = literal(usual, UTCDateTime())
    if others:
        lock = case({pid: literal(at, UTCDateTime()) for pid, at in others.items()},
                    value=AxisDevice.product_id, else_=lock)
    present_now = and_(AxisDevice.added_at <= now, or_(AxisDevice.removed_at.is_(None), AxisDevice.removed_at > now))
    present_at = and_(AxisDevice.added_at <= lock, or_(AxisDevice.removed_at.is_(None), AxisDevice.removed_at > lock))
    out: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for pid, license_type, n_now, n_at in session.execute(
            select(AxisDevice.product_id, AxisDevice.license_type, func.count().filter(present_now),
                   func.count().filter(present_at))
            .where(AxisDevice.org_id == org_id, AxisDevice.hardware_id.is_(None))
            .group_by(AxisDevice.product_id, AxisDevice.license_type)):
        out[pid][license_type] = (int(n_now), int(n_at))
    return out


def _allocated(session: Session, org_id: int) -> dict[int, dict[str, dict[int, int]]]:
    """Product -> license type -> {year index: units} (``axis.services.allocated``)."""
    out: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for pid, license_type, first, years, units in session.execute(
            select(Allocation.product_id, Allocation.license_type, Allocation.first_year, Allocation.years,
                   func.sum(Allocation.units))
            .where(Allocation.org_id == org_id)
            .group_by(Allocation.product_id, Allocation.license_type, Allocation.first_year, Allocation.years)):
        for index in range(first, first + years):
            out[pid][license_type][index] += int(units)
    return out


def _latest_balances(org_id: int, kind: str) -> Any:
    return (select(Entry.account_id, func.max(Entry.id).label("entry_id"))
            .join(Account, Account.id == Entry.account_id)
            .where(Account.org_id == org_id, Account.kind == kind)
            .group_by(Entry.account_id).subquery())


def wallet_lots(session: Session, org_id: int, now: datetime) -> list[WalletLot]:
    """Every product's wallet lots still usable at ``now``, oldest first (``axis.services.lots``
    for all products): a lot past its five years holds nothing, recorded or not (R-AX-4)."""
    latest = _latest_balances(org_id, "wallet")
    rows = session.execute(
        select(Product.code, Product.name, Sku.part_number, Sku.grant_kind, Sku.grants, Sku.term_years,
               Account.created_at, Entry.balance_after)
        .select_from(Account)
        .join(latest, latest.c.account_id == Account.id)
        .join(Entry, Entry.id == latest.c.entry_id)
        .join(Sku, Sku.id == Account.sku_id)
        .join(Product, Product.id == Sku.product_id)
        .where(Account.ref.startswith(ledger.LOT_PREFIX), Entry.balance_after > 0, Product.model == axis.MODEL)
        .order_by(Account.created_at, Account.id)).all()
    lots = [WalletLot(code, name, part, kind, str((grants or {}).get("license_type", "")), term or 1, int(units), at)
            for code, name, part, kind, grants, term, at, units in rows]
    return [lot for lot in lots if now < lot.expires_at]


def _hardware(session: Session, org_id: int) -> dict[int, list[dict[str, int]]]:
    """Product -> its hardware as the state rule reads it: devices, licenses, missing (R-AX-10)."""
    hardware = session.execute(select(Hardware.id, Hardware.product_id).where(Hardware.org_id == org_id)).all()
    if not hardware:
        return {}
    devices = {hid: int(n) for hid, n in session.execute(
        select(AxisDevice.hardware_id, func.count())
        .where(AxisDevice.org_id == org_id, AxisDevice.hardware_id.is_not(None), AxisDevice.removed_at.is_(None))
        .group_by(AxisDevice.hardware_id))}
    latest = _latest_balances(org_id, "hardware_license")
    licenses: dict[str, int] = defaultdict(int)
    for ref, units in session.execute(select(Account.ref, Entry.balance_after).select_from(Account)
                                      .join(latest, latest.c.account_id == Account.id)
                                      .join(Entry, Entry.id == latest.c.entry_id)):
        licenses[ref] += int(units)
    out: dict[int, list[dict[str, int]]] = defaultdict(list)
    for hid, pid in hardware:
        n, held = devices.get(hid, 0), licenses.get(f"hw/{hid}", 0)
        out[pid].append({"devices": n, "licenses": held, "missing": rules.hardware_missing(n, held)})
    return out


def products(session: Session, org_id: int, now: datetime) -> Axis:
    rows = session.execute(select(OrgProduct, Product).join(Product, Product.id == OrgProduct.product_id)
                           .where(OrgProduct.org_id == org_id).order_by(Product.name)).all()
    if not rows:
        return Axis([], [])
    current = {op.product_id: rules.year_at(op.subscription_start, now) if op.subscription_start else None
               for op, _ in rows}
    grace = {op.product_id: rules.grace_end(current[op.product_id], op.registered_at)
             for op, _ in rows if current[op.product_id] is not None}
    need = _need(session, org_id, now, {op.product_id: min(now, grace[op.product_id]) if op.product_id in grace
                                        else now for op, _ in rows})
    alloc = _allocated(session, org_id)
    hardware = _hardware(session, org_id)
    systems = {code: int(n) for code, n in session.execute(
        select(System.product, func.count()).where(System.org_id == org_id).group_by(System.product))}
    tiles = []
    for op, product in rows:
        pid, year, grace_end = product.id, current[product.id], grace.get(product.id)
        start, trial_until = op.subscription_start, op.trial_ends_at
        need_rows, alloc_rows = need.get(pid, {}), alloc.get(pid, {})
        types = sorted(set(axis.license_types(product)) | set(need_rows) | set(alloc_rows))
        per_type: dict[str, dict[str, Any]] = {}
        for t in types:
            need_now, need_lock = need_rows.get(t, (0, 0))
            units = alloc_rows.get(t, {}).get(year.index, 0) if year else 0
            per_type[t] = {"need_now": need_now, "need": need_lock, "allocated": units,
                           "state": rules.licensing_state(now=now, subscription_start=start, need=need_lock,
                                                          allocated=units, trial_until=trial_until,
                                                          registered_at=op.registered_at)}
        hw = hardware.get(pid, [])
        # The product page's own rule for one state out of its license types' and its hardware's.
        state = axis.combine_state(per_type, now=now, grace_end=grace_end,
                                   trial=bool(trial_until and now < trial_until), started=year is not None,
                                   hardware=hw)
        growth = {t: (v["need_now"], v["allocated"], rules.GROWTH_FACTOR * v["allocated"])
                  for t, v in per_type.items() if year is not None and v["allocated"] > 0
                  and rules.over_growth_allowance(v["need_now"], v["allocated"])}
        next_missing = 0
        if year is not None:
            next_missing = sum(max(0, v["need_now"] - alloc_rows.get(t, {}).get(year.index + 1, 0))
                               for t, v in per_type.items())
        tiles.append(ProductTile(
            product.code, product.name, state, systems.get(product.code, 0), op.registered_at, start, year,
            grace_end, trial_until,
            tuple(TypeLine(t, v["need_now"], v["need"], v["allocated"], v["state"]) for t, v in per_type.items()),
            growth, next_missing, sum(h["missing"] for h in hw)))
    return Axis(tiles, wallet_lots(session, org_id, now))


def items(found: Axis, now: datetime) -> list[Item]:
    out = []
    for p in found.products:
        licensing, overview = p.href + "?tab=licensing", p.href + "?tab=overview"
        missing = plural(p.missing, "license")
        if p.state == "in_grace" and p.grace_end is not None:
            out.append(Item("axis.grace_ending", "warning", "axis", p.name,
                            f"{p.name}: the grace period ends on {moment(p.grace_end)}; {missing} still to allocate "
                            "to the current subscription year, or the product is not licensed.",
                            licensing, "Allocate licenses", p.grace_end))
        elif p.state in ("not_licensed", "partially_licensed") and p.current_year is not None:
            words = "is not licensed" if p.state == "not_licensed" else "is partially licensed"
            what = (f"{missing} missing for the current subscription year" if p.missing
                    else f"devices on hardware need {plural(p.hardware_missing, 'expansion license')}")
            out.append(Item(f"axis.{p.state}", "critical", "axis", p.name,
                            f"{p.name} {words}: {what} ({day(p.current_year.start)} – "
                            f"{day(p.current_year.end - timedelta(days=1))}).",
                            licensing if p.missing else p.href + "?tab=setup",
                            "Allocate licenses" if p.missing else "Open System setup", p.grace_end))
        elif p.state == "not_licensed" and p.current_year is None and p.need:
            ended = f" ended on {day(p.trial_ends_at)}" if p.trial_ends_at else " has ended"
            out.append(Item("axis.not_licensed", "critical", "axis", p.name,
                            f"{p.name} is not licensed: its trial{ended}. Start your subscription to license it.",
                            overview, "Start your subscription", p.trial_ends_at))
        elif p.state == "trial" and p.trial_ends_at is not None and p.trial_ends_at - now <= TRIAL_WARNING:
            out.append(Item("axis.trial_ending", "warning", "axis", p.name,
                            f"{p.name}: the trial ends on {day(p.trial_ends_at)}. Start your subscription to keep "
                            "the product licensed.", overview, "Start your subscription", p.trial_ends_at))
        for t, (n, allocated, limit) in p.growth.items():
            out.append(Item("axis.growth_allowance", "warning", "axis", p.name,
                            f"{p.name} is over the growth allowance: {t.replace('_', ' ').capitalize()} needs "
                            f"{plural(n, 'license')}, more than {limit:,} (twice the {allocated:,} allocated). "
                            "Allocate more licenses to the current subscription year.",
                            licensing, "Allocate licenses"))
        year = p.current_year
        if (year is not None and p.state == "fully_licensed" and p.next_year_missing
                and year.end - now <= RENEWAL_WARNING):
            out.append(Item("axis.renewal_due", "info", "axis", p.name,
                            f"{p.name}: the next subscription year starts on {day(year.end)} with its own 30-day "
                            f"grace period; {plural(p.next_year_missing, 'license')} to allocate to it.",
                            licensing, "Renew", year.end))
    expiring: dict[str, list[WalletLot]] = defaultdict(list)
    for lot in found.lots:
        if lot.expires_at - now <= EXPIRY_WARNING:
            expiring[lot.product].append(lot)
    for code, lots in expiring.items():
        first = min(lot.expires_at for lot in lots)
        units = sum(lot.units for lot in lots)
        name = lots[0].product_name
        out.append(Item("axis.wallet_expiring", "warning", "axis", name,
                        f"{plural(units, 'license')} of {name} in the wallet expire unless allocated, the first on "
                        f"{day(first)}: unallocated licenses stay in the wallet at most five years.",
                        f"/axis/products/{code}?tab=wallet", "Open the product wallet", first))
    return out
