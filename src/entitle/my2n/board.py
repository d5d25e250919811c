"""The site dashboard (R-MY-3, R-MY-6): apartments, how many need a license, which lapsed or lapse
soon, what to order, one row per apartment -- from one grouped query.

The database counts, per apartment, its paid devices and its billable ones (paid, not in local
mode), in one statement joined to the apartments; Python then applies the rules' own
``is_lapsed`` and ``lapses_soon`` to each apartment that needs a license.

The one rule written twice is "needs a license" (R-MY-3: at least one paid device not in local
mode): ``rules.billable_devices`` in Python, ``_BILLABLE`` below in SQL, both from
``rules.PAID_KINDS``. ``reference_dashboard`` is the definition it is checked against: every
apartment and device row handed to ``rules.dashboard``. tests/test_my2n_board.py holds the two
equal on generated sites; bench/my2n.py times both.

Migration 0008 adds the two indexes the statement reads: ``ix_my2n_devices_dashboard`` (site,
apartment, kind, local mode), a covering range scan of the site's devices already in apartment
order, and ``ix_my2n_apartments_site`` (site, id), the site's apartments without scanning every
site's. At 50,000 apartments and 150,000 devices a call takes about 0.26 s on SQLite and on
PostgreSQL (docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, select
from sqlalchemy.orm import Session

from entitle.my2n import rules
from entitle.my2n.models import Apartment, Site, SiteDevice
from entitle.my2n.services import (apartments_of, credit_pool, devices_of, recurring_of, rule_device, rule_site,
                                   site_to_dict)

_PAID = SiteDevice.kind.in_(sorted(rules.PAID_KINDS))  # R-MY-2: phones, tablets, third-party devices
_BILLABLE = case((SiteDevice.local_mode, 0), else_=1)  # R-MY-3: among the paid ones, not in local mode


def apartment_rows(session: Session, site: Site) -> list[Row[tuple[int, str, datetime | None, int, int]]]:
    """Every apartment of the site, by id: (id, name, paid_through, paid devices, billable
    devices). One statement: the site's paid devices counted per apartment, joined to the
    apartments (an apartment with none has 0 and 0)."""
    per_apartment = (
        select(SiteDevice.apartment_id,
               func.count().label("paid"),
               func.sum(_BILLABLE).label("billable"))
        .where(SiteDevice.site_id == site.id, SiteDevice.apartment_id.is_not(None), _PAID)
        .group_by(SiteDevice.apartment_id)
        .subquery("per_apartment")
    )
    stmt = (
        select(Apartment.id, Apartment.name, Apartment.paid_through,
               func.coalesce(per_apartment.c.paid, 0).label("paid"),
               func.coalesce(per_apartment.c.billable, 0).label("billable"))
        .outerjoin(per_apartment, per_apartment.c.apartment_id == Apartment.id)
        .where(Apartment.site_id == site.id)
        .order_by(Apartment.id)
    )
    return list(session.execute(stmt))  # type: ignore[arg-type]


def dashboard(session: Session, *, site: Site, now: datetime) -> dict[str, Any]:
    """Apartments, how many need a license, which lapsed or lapse soon, what to order, and one
    row per apartment: exactly ``reference_dashboard``'s answer."""
    rows: list[dict[str, Any]] = []
    lapsed: list[str] = []
    lapsing_soon: list[str] = []
    short: list[int] = []  # billable devices of each apartment not paid through the next 12 months
    recurring = recurring_of(session, site)
    horizon = rules.add_years(now, 1)
    for apartment_id, name, paid_through, paid, billable in apartment_rows(session, site):
        needs = billable > 0  # R-MY-3
        if needs:
            if rules.is_lapsed(rules.covered_until(paid_through, recurring), now):  # R-MY-6
                lapsed.append(name)
            if rules.lapse_warning_due(paid_through, recurring, now):  # R-MY-6: warned before it happens
                lapsing_soon.append(name)
            if paid_through is None or paid_through < horizon:
                short.append(int(billable))
        rows.append({"id": apartment_id, "name": name, "needs_license": needs, "paid_devices": int(paid),
                     "paid_through": paid_through.isoformat() if paid_through else None})
    pool = credit_pool(session, site)
    # R-MY-5: the rules' own count, from the counts above (one row per apartment short).
    quantity = rules.to_order([rules.Apartment(i, None) for i in range(len(short))],
                              [rules.Device(0, "phone", i) for i, n in enumerate(short) for _ in range(n)], now,
                              pool=rules.Credit(pool["apartment_years"], pool["device_years"]), recurring=recurring)
    return _answer(site, now, rows, lapsed, lapsing_soon, quantity, pool, recurring)


def _answer(site: Site, now: datetime, rows: list[dict[str, Any]], lapsed: list[str], lapsing_soon: list[str],
            quantity: int, pool: dict[str, int], recurring: rules.Recurring | None) -> dict[str, Any]:
    return {
        "site": site_to_dict(site, now),
        "apartments": len(rows), "needing_license": sum(1 for r in rows if r["needs_license"]),
        "lapsed": lapsed, "lapsing_soon": lapsing_soon,
        # What the site lacks to keep every apartment needing a license working for the next
        # twelve months (rules.to_order); ``order_basis`` says how it is counted, beside the figure.
        "order": {"part_number": rules.part_number(site.region), "quantity": quantity},  # type: ignore[arg-type]
        "order_basis": "recurring" if recurring is not None else "unpaid_less_pool",
        "pool": pool,
        "recurring": {"renews_at": recurring.period_end.isoformat(), "covered_until": recurring.cover.isoformat(),
                      "charge_failing": recurring.failed_at is not None or recurring.renewal_due(now)}
        if recurring is not None else None,
        "rows": rows,
    }


def reference_dashboard(session: Session, *, site: Site, now: datetime) -> dict[str, Any]:
    """The same answer from the rules alone: every apartment and device row loaded and handed to
    ``rules.dashboard``. The definition ``dashboard`` is tested against; too slow to serve a
    large site (it loads every row as an object)."""
    apartments = apartments_of(session, site)
    devices = [rule_device(d) for d in devices_of(session, site)]
    pool, recurring = credit_pool(session, site), recurring_of(session, site)
    board = rules.dashboard(rule_site(site), [rules.Apartment(a.id, a.paid_through) for a in apartments],
                            devices, now, pool=rules.Credit(pool["apartment_years"], pool["device_years"]),
                            recurring=recurring)
    by_id = {a.id: a for a in apartments}
    per_apartment = rules.group_by_apartment(devices)
    rows = [{"id": a.id, "name": a.name, "needs_license": rules.needs_license(per_apartment.get(a.id, [])),
             "paid_devices": sum(1 for d in per_apartment.get(a.id, []) if rules.is_paid_device(d)),
             "paid_through": a.paid_through.isoformat() if a.paid_through else None} for a in apartments]
    return _answer(site, now, rows, [by_id[i].name for i in board.lapsed],
                   [by_id[i].name for i in board.lapsing_soon], board.to_order, pool, recurring)
