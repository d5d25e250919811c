"""AXIS License Manager's time-driven transitions for the sweep (R-AX-3, R-AX-4, R-AX-6, R-CORE-8).

- ``axis.grace.started``: a renewal's grace period opens at a subscription-year anniversary
  (year 1 on) for a product not fully licensed for the new year. The grace period that opens
  with the subscription itself is announced by ``services.start_subscription``; the sweep takes
  only the anniversaries after that moment, so each year's grace is announced once.
- ``axis.grace.ending``: 7 days before a grace period ends, the product is still not fully
  licensed. A warning is only sent while the grace runs: a sweep that comes after the end
  announces the end instead.
- ``axis.grace.ended``: a grace period ended and the product was not fully licensed at its end.
- ``axis.units.expired``: a wallet lot's units expired unused, five years after they entered the
  wallet. The sweep records the expiry whole -- the ledger transfer to the ``expired`` account,
  the history entry and the event (``services.record_swept_expiry``) -- so that a quiet wallet's
  ledger and history show it too. The next write that takes units from the wallet records it the
  same way if it comes first; both take the organization's lock and read the lot again, and
  name the event by the lot (``services.expiry_transition``), so it is recorded once.

The grace transitions of one year share a subject, the product in the organization and the year
(``axis/product/<id>/year/<index>``): each year's grace starts, warns and ends once. Whether the
product was fully licensed at a moment is decided by ``rules.licensing_state`` from what held
*at that moment*: the devices present then and the units allocated by then, so a late sweep
announces what happened, not what is true now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from entitle.axis import rules, services
from entitle.axis.models import Allocation, OrgProduct
from entitle.catalog.models import Product, Sku
from entitle.clock import add_years
from entitle.db import chunks
from entitle.delivery.models import SweepMark
from entitle.delivery.sweep import Transition
from entitle.history.models import HistoryEntry
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry

LOOK_BACK = timedelta(days=90)  # older transitions are not announced any more (a sweep off for months)
ENDING_NOTICE = timedelta(days=7)  # axis.grace.ending: "ends in 7 days"
_DAY = timedelta(days=1)


def find(session: Session, now: datetime) -> Iterator[Transition]:
    yield from _grace(session, now)
    yield from _expired_lots(session, now)


# --- grace periods ------------------------------------------------------------------------------

def grace_subject(op: OrgProduct, index: int) -> str:
    return f"axis/product/{op.id}/year/{index}"


@dataclass(frozen=True)
class _Due:
    kind: str
    period: rules.Year
    grace_end: datetime
    at: datetime

    def after_start(self, started_at: datetime) -> bool:
        """Whether the sweep announces it, given when the subscription was started: the grace
        period the start opened was announced by ``start_subscription`` (with its end), and a
        grace that ended before the start was none."""
        if self.kind == "axis.grace.started":
            return self.at > started_at
        if self.kind == "axis.grace.ending":
            return self.at >= started_at
        return self.grace_end > started_at


def _moments(op: OrgProduct, now: datetime) -> list[_Due]:
    """The grace transitions of the product's subscription years that fall in the look-back
    window, whatever the licensing then (read later, for these only)."""
    start = op.subscription_start
    assert start is not None
    since = now - LOOK_BACK
    current = rules.year_at(start, now)
    if current is None:
        return []
    found = []
    # A year's grace ends 30 days after its start, or after the product's registration in it
    # (R-AX-3): only the last two years can have a transition in a window shorter than a year.
    for index in range(max(0, current.index - 1), current.index + 1):
        period = rules.year(start, index)
        end = rules.grace_end(period, op.registered_at)
        candidates = [("axis.grace.ended", end)]
        if now < end:  # a warning comes while the grace runs, not after it ended
            candidates.append(("axis.grace.ending", end - ENDING_NOTICE))
        if index > 0:
            candidates.append(("axis.grace.started", period.start))
        found.extend(_Due(kind, period, end, at) for kind, at in candidates if since < at <= now)
    return found


def _started_at(session: Session, org_ids: list[int]) -> dict[tuple[int, str], datetime]:
    """When each product's subscription was started (its history entry)."""
    out: dict[tuple[int, str], datetime] = {}
    for chunk in chunks(sorted(set(org_ids)), 500):
        for org_id, code, at in session.execute(
                select(HistoryEntry.org_id, HistoryEntry.object_id, func.min(HistoryEntry.at))
                .where(HistoryEntry.org_id.in_(chunk), HistoryEntry.action == "axis.subscription.started",
                       HistoryEntry.object_type == "axis_product")
                .group_by(HistoryEntry.org_id, HistoryEntry.object_id)):
            out[(org_id, code)] = at
    return out


def _grace(session: Session, now: datetime) -> Iterator[Transition]:
    rows = session.execute(select(OrgProduct, Product.code).join(Product, Product.id == OrgProduct.product_id)
                           .where(OrgProduct.subscription_start.is_not(None),
                                  OrgProduct.subscription_start <= now)
                           .order_by(OrgProduct.id)).all()
    due = [(op, code, d) for op, code in rows for d in _moments(op, now)]
    if not due:
        return
    started = _started_at(session, [op.org_id for op, _, _ in due])
    due = [(op, code, d) for op, code, d in due
           if d.after_start(started.get((op.org_id, code), op.subscription_start or now))]
    # What a sweep recorded already is listed as found (the sweep leaves it out) without
    # reading the licensing again; that is read only for the transitions still open.
    recorded = _marked(session, [(d.kind, grace_subject(op, d.period.index)) for op, _, d in due])
    by_product: dict[int, list[tuple[OrgProduct, str, _Due]]] = defaultdict(list)
    for op, code, d in due:
        subject = grace_subject(op, d.period.index)
        if (d.kind, subject) in recorded:
            yield Transition(d.kind, subject, op.org_id, d.at, {"product": code, "year": d.period.index})
        else:
            by_product[op.id].append((op, code, d))
    for items in by_product.values():
        op = items[0][0]
        allocations = _allocations(session, op)
        for _, code, d in items:
            short = _short_at(session, op, allocations, d.at)
            if short:
                yield Transition(d.kind, grace_subject(op, d.period.index), op.org_id, d.at,
                                 {"product": code, "year": d.period.index, "grace_end": d.grace_end.isoformat(),
                                  "license_types": short})


def _allocations(session: Session, op: OrgProduct) -> list[tuple[str, int, int, int, datetime]]:
    return [(t, first, years, units, at) for t, first, years, units, at in session.execute(
        select(Allocation.license_type, Allocation.first_year, Allocation.years, Allocation.units,
               Allocation.allocated_at)
        .where(Allocation.org_id == op.org_id, Allocation.product_id == op.product_id))]


def _short_at(session: Session, op: OrgProduct, allocations: Iterable[tuple[str, int, int, int, datetime]],
              at: datetime) -> dict[str, dict[str, int]]:
    """The license types the product was not fully licensed for at ``at`` (need and allocated
    then), by the rules' licensing state; empty when it was fully licensed."""
    assert op.subscription_start is not None
    current = rules.year_at(op.subscription_start, at)
    if current is None:
        return {}
    allocated: dict[str, int] = defaultdict(int)
    for license_type, first, years, units, allocated_at in allocations:
        if allocated_at <= at and first <= current.index < first + years:
            allocated[license_type] += units
    need = {t: then for t, (_now, then) in services.need(session, op.org_id, op.product_id, now=at, at=at).items()}
    short = {}
    for license_type in sorted(set(need) | set(allocated)):
        n, a = need.get(license_type, 0), allocated.get(license_type, 0)
        state = rules.licensing_state(now=at, subscription_start=op.subscription_start, need=n, allocated=a,
                                      registered_at=op.registered_at)
        if state != "fully_licensed":
            short[license_type] = {"need": n, "allocated": a}
    return short


# --- units expired in the wallet (R-AX-4) -------------------------------------------------------

def _expired_lots(session: Session, now: datetime) -> Iterator[Transition]:
    """Lots whose five years ran out in the window and that still hold units (a lot whose expiry
    was recorded holds none). By organization, then oldest first (the order
    ``services.expire_lots`` takes them in): recording takes each organization's lock, and two
    sweeps, or a sweep and a write, then never wait for each other in opposite orders."""
    since = now - LOOK_BACK
    # Received between these (a day of slack either side for 29 February); checked exactly below.
    received_after = add_years(since, -rules.STORAGE_YEARS) - _DAY
    received_by = add_years(now, -rules.STORAGE_YEARS) + _DAY
    latest = (select(Entry.account_id, func.max(Entry.id).label("entry_id"))
              .join(Account, Account.id == Entry.account_id)
              .where(Account.kind == "wallet", Account.ref.startswith(ledger.LOT_PREFIX),
                     Account.created_at > received_after, Account.created_at <= received_by)
              .group_by(Entry.account_id).subquery())
    rows = session.execute(
        select(Account, Sku, Product.code, Entry.balance_after)
        .join(Sku, Sku.id == Account.sku_id)
        .join(Product, Product.id == Sku.product_id)
        .join(latest, latest.c.account_id == Account.id)
        .join(Entry, Entry.id == latest.c.entry_id)
        .where(Product.model == services.MODEL, Entry.balance_after > 0)
        .order_by(Account.org_id, Account.created_at, Account.id)).all()
    for account, sku, code, units in rows:
        lot = services.LotView(account, sku, int(units))
        if since < lot.expires_at <= now:
            yield services.expiry_transition(account.org_id, code, lot)


# --- shared -------------------------------------------------------------------------------------

def _marked(session: Session, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (kind, subject) are recorded already."""
    seen: set[tuple[str, str]] = set()
    for chunk in chunks(sorted(set(keys)), 500):
        seen.update((k, s) for k, s in session.execute(
            select(SweepMark.kind, SweepMark.subject).where(tuple_(SweepMark.kind, SweepMark.subject).in_(chunk))))
    return seen

