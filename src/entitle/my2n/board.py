"""The site dashboard (R-MY-3, R-MY-6): apartments, how many need a license, which lapsed or lapse
soon, what to order, one row per apartment -- from one grouped query.

The database counts, per apartment, its paid devices and its billable ones (paid, not in local
mode), in one statement joined to the apartments; Python then applies the rules' own
``apartment_state`` (not paid, lapsed, partly paid, lapsing soon, paid), ``lapse_warning_due``
and ``shortfall`` to each apartment, with stand-in devices as many as it has billable ones;
the devices of the partly paid apartments alone are read, to name the ones that stop.

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

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, case, func, select
from sqlalchemy.orm import Session

from entitle.my2n import rules
from entitle.my2n.models import Apartment, Site, SiteDevice
from entitle.my2n.services import (apartments_of, credit_pool, devices_of, recurring_of, rule_apartment, rule_device,
                                   rule_site, site_to_dict)

_PAID = SiteDevice.kind.in_(sorted(rules.PAID_KINDS))  # R-MY-2: phones, tablets, third-party devices
_BILLABLE = case((SiteDevice.local_mode, 0), else_=1)  # R-MY-3: among the paid ones, not in local mode
# An apartment's billable devices as the rules read them from the counts: as many stand-ins.
_TICK = timedelta(microseconds=1)
_STAND_INS = [[rules.Device(-k, "phone") for k in range(1, n + 1)] for n in range(rules.MAX_PAID_DEVICES + 1)]


def apartment_rows(session: Session, site: Site) -> list[Row[tuple[int, str, datetime | None, int, int, int | None]]]:
    """Every apartment of the site, by id: (id, name, paid_through, paid devices, billable
    devices, devices paid for). One statement: the site's paid devices counted per apartment,
    joined to the apartments (an apartment with none has 0 and 0)."""
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
               func.coalesce(per_apartment.c.billable, 0).label("billable"),
               Apartment.devices_paid_for)
        .outerjoin(per_apartment, per_apartment.c.apartment_id == Apartment.id)
        .where(Apartment.site_id == site.id)
        .order_by(Apartment.id)
    )
    return list(session.execute(stmt))  # type: ignore[arg-type]


def dashboard(session: Session, *, site: Site, now: datetime, edges: list[datetime] | None = None) -> dict[str, Any]:
    """Apartments, how many need a license, which are not paid, lapsed, partly paid or lapse
    soon, what to order, and one row per apartment: exactly ``reference_dashboard``'s answer.
    The rules decide from the counts: each apartment is handed to them with as many stand-in
    billable devices as it has (``rules.apartment_state``, ``rules.shortfall``); only the
    partly paid apartments' devices are read, to name the ones that stop. ``edges`` gets the
    moments at which the answer can change with no write (``changes_at``)."""
    rows: list[dict[str, Any]] = []
    short: list[rules.Shortfall] = []  # what each apartment lacks for the next 12 months
    recurring = recurring_of(session, site)
    partly: dict[int, rules.Apartment] = {}
    horizon = rules.add_years(now, 1)
    for apartment_id, name, paid_through, paid, n_billable, devices_paid_for in apartment_rows(session, site):
        billable = int(n_billable)
        apt = rules.Apartment(apartment_id, paid_through, devices_paid_for)
        stand_in = _STAND_INS[billable] if billable < len(_STAND_INS) else [rules.Device(-k, "phone")
                                                                             for k in range(1, billable + 1)]
        state = rules.apartment_state(apt, stand_in, now, recurring)  # R-MY-3, R-MY-5, R-MY-6
        if (lack := rules.shortfall(apt, stand_in, now, horizon=horizon)) is not None:
            short.append(lack)
        if state == "partly_paid":
            partly[apartment_id] = apt
        rows.append(_row(apartment_id, name, paid_through, int(paid), state, devices_paid_for,
                         lapsing=billable > 0 and rules.lapse_warning_due(paid_through, recurring, now)))
        if edges is not None and billable:
            edges += _apartment_edges(paid_through, recurring, now)
    stopping = _unpaid_serials(session, partly)
    for r in rows:
        r["devices_not_paid"] = stopping.get(r["id"], [])
    pool = credit_pool(session, site)
    # R-MY-5: what the pool does not pay (none while recurring payment is on).
    quantity = 0 if recurring is not None else rules.order_quantity(
        short, rules.Credit(pool["apartment_years"], pool["device_years"]))
    if edges is not None:
        edges += [at for at in (site.custom_expires_at, recurring.period_end if recurring else None) if at is not None]
    return _answer(site, now, rows, quantity, pool, recurring)


def changes_at(edges: list[datetime], now: datetime) -> datetime | None:
    """The first of ``dashboard``'s ``edges`` after ``now`` (None: no time rule changes it)."""
    return min((at for at in edges if at > now), default=None)


def _apartment_edges(paid_through: datetime | None, recurring: rules.Recurring | None,
                     now: datetime) -> list[datetime]:
    """When an apartment with billable devices changes by itself (R-MY-3, R-MY-5, R-MY-6): its
    license ends, enters its 30-day warning, comes within the year an order looks ahead, or its
    paid time left drops a year. Where the rules' own moment is hard to name (the year ahead of a
    29 February), an earlier one: the answer is then made again, never kept too long; the next
    microsecond when ``now`` is within that uncertainty (not remembered)."""
    out: list[datetime] = []
    covered = rules.covered_until(paid_through, recurring)
    if covered is not None:
        out += [covered, covered - rules.LAPSE_WARNING]
    if paid_through is not None:
        # shortfall: paid through < now + 1 year, which first holds between P - 366 and P - 365 days.
        earliest, latest = paid_through - timedelta(days=366), paid_through - timedelta(days=365)
        if now < earliest:
            out.append(earliest)
        elif now <= latest:
            out.append(now + _TICK)
        left = rules.years_left(paid_through, now)
        if left > 1:
            out.append(rules.add_years(paid_through, -(left - 1)))
    return out


def _row(apartment_id: int, name: str, paid_through: datetime | None, paid: int, state: rules.ApartmentState,
         devices_paid_for: int | None, *, lapsing: bool) -> dict[str, Any]:
    return {"id": apartment_id, "name": name, "needs_license": state != "no_license_needed", "paid_devices": paid,
            "paid_through": paid_through.isoformat() if paid_through else None, "state": state,
            "devices_paid_for": devices_paid_for, "lapsing_soon": lapsing}


def _unpaid_serials(session: Session, apartments: dict[int, rules.Apartment]) -> dict[int, list[str]]:
    """The serials of the billable devices each of these apartments' per-device payment does not
    cover (``rules.unpaid_devices``), in the order they stop: one query."""
    if not apartments:
        return {}
    rows = list(session.scalars(select(SiteDevice).where(SiteDevice.apartment_id.in_(sorted(apartments)))))
    serial_of = {d.id: d.serial for d in rows}
    grouped = rules.group_by_apartment(rule_device(d) for d in rows)
    return {i: [serial_of[d.device_id] for d in rules.unpaid_devices(a, grouped.get(i, []))]
            for i, a in apartments.items()}


def _answer(site: Site, now: datetime, rows: list[dict[str, Any]], quantity: int, pool: dict[str, int],
            recurring: rules.Recurring | None) -> dict[str, Any]:
    def named(state: str) -> list[str]:
        return [r["name"] for r in rows if r["state"] == state]

    lapsing = [r["name"] for r in rows if r.pop("lapsing_soon")]
    return {
        "site": site_to_dict(site, now),
        "apartments": len(rows), "needing_license": sum(1 for r in rows if r["needs_license"]),
        # Point 10: "lapsed" are licenses that ended; an apartment never paid is "not paid".
        "lapsed": named("lapsed"), "not_paid": named("not_paid"), "partly_paid": named("partly_paid"),
        "lapsing_soon": lapsing,
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
    loaded = devices_of(session, site)
    devices = [rule_device(d) for d in loaded]
    serial_of = {d.id: d.serial for d in loaded}
    pool, recurring = credit_pool(session, site), recurring_of(session, site)
    board = rules.dashboard(rule_site(site), [rule_apartment(a) for a in apartments],
                            devices, now, pool=rules.Credit(pool["apartment_years"], pool["device_years"]),
                            recurring=recurring)
    per_apartment = rules.group_by_apartment(devices)
    soon = set(board.lapsing_soon)
    rows = []
    for a in apartments:
        mine = per_apartment.get(a.id, [])
        state = rules.apartment_state(rule_apartment(a), mine, now, recurring)
        row = _row(a.id, a.name, a.paid_through, sum(1 for d in mine if rules.is_paid_device(d)), state,
                   a.devices_paid_for, lapsing=a.id in soon)
        row["devices_not_paid"] = ([serial_of[d.device_id] for d in rules.unpaid_devices(rule_apartment(a), mine)]
                                   if state == "partly_paid" else [])
        rows.append(row)
    answer = _answer(site, now, rows, board.to_order, pool, recurring)
    by_id = {a.id: a.name for a in apartments}
    # The lists are the rules' own (``rules.dashboard``), not read back from the rows.
    answer.update(lapsed=[by_id[i] for i in board.lapsed], not_paid=[by_id[i] for i in board.not_paid],
                  partly_paid=[by_id[i] for i in board.partly_paid],
                  lapsing_soon=[by_id[i] for i in board.lapsing_soon])
    return answer
