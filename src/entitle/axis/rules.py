"""AXIS License Manager rules as plain code (SPEC §3): subscription years, grace periods, the
licensing state, compensation in license-days, the growth allowance, the wallet's oldest-first
use and five-year storage limit, and buying guidance.

No I/O, no clock: every function takes ``now`` (timezone-aware UTC) and data. The services of
this area (a later step of the AXIS issue) load the data and store what these return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from entitle.clock import add_years  # one calendar-year rule for every licensing model

GRACE = timedelta(days=30)  # R-AX-3, R-AX-6
STORAGE_YEARS = 5  # R-AX-4: unallocated units stay in the wallet at most five years
AHEAD_YEARS = 5  # R-AX-5: years up to five ahead can be allocated
GROWTH_FACTOR = 2  # R-AX-9: need may grow to 2 x allocated within a year

State = Literal["trial", "in_grace", "fully_licensed", "partially_licensed", "not_licensed"]


@dataclass(frozen=True, slots=True)
class Year:
    """Subscription year ``index`` (0 = the first) of a subscription: [start, end)."""

    index: int
    start: datetime
    end: datetime

    @property
    def grace_end(self) -> datetime:
        return self.start + GRACE

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def year(subscription_start: datetime, index: int) -> Year:
    """Years are counted from the start, so a start on 29 February keeps its anniversary
    (28 February in common years, 29 again in leap years)."""
    if index < 0:
        raise ValueError("subscription years are counted from 0")
    return Year(index, add_years(subscription_start, index), add_years(subscription_start, index + 1))


def year_at(subscription_start: datetime, now: datetime) -> Year | None:
    """The subscription year ``now`` falls in; None before the subscription starts."""
    if now < subscription_start:
        return None
    index = now.year - subscription_start.year
    while index > 0 and add_years(subscription_start, index) > now:
        index -= 1
    while add_years(subscription_start, index + 1) <= now:
        index += 1
    return year(subscription_start, index)


def grace_end(period: Year, registered_at: datetime | None = None) -> datetime:
    """The end of the grace period of ``period`` for a product: 30 days from the year's start,
    or, for a product registered during the year, 30 days from its registration (a new product
    gets its own 30 days to be licensed; R-AX-3, R-AX-7)."""
    if registered_at is not None and period.start < registered_at < period.end:
        return max(period.grace_end, registered_at + GRACE)
    return period.grace_end


def licensing_state(*, now: datetime, subscription_start: datetime | None, need: int, allocated: int,
                    trial_until: datetime | None = None, registered_at: datetime | None = None) -> State:
    """The product's state for the year ``now`` falls in (R-AX-3, R-AX-5, R-AX-6, R-AX-13), right
    whenever it is read: fully licensed when the allocation covers the need; else in grace within
    30 days of the year's start (the first year or a renewal); else partially or not licensed. A
    running trial (and no subscription, or one not started yet) is "trial"."""
    current = year_at(subscription_start, now) if subscription_start is not None else None
    if current is None:
        if trial_until is not None and now < trial_until:
            return "trial"
        return "not_licensed" if need > 0 else "fully_licensed"
    if allocated >= need:
        return "fully_licensed"
    if now < grace_end(current, registered_at):
        return "in_grace"
    return "partially_licensed" if allocated > 0 else "not_licensed"


def over_growth_allowance(need: int, allocated: int) -> bool:
    """R-AX-9: within a year the need may grow to twice the allocated units; beyond, flagged."""
    return need > GROWTH_FACTOR * allocated


def coverage_start(period: Year, *, allocated_at: datetime, registered_at: datetime) -> datetime:
    """R-AX-7: from when allocated units really cover the year: the allocation moment when it
    is after the grace end (the product's own, when it was registered during the year); else the registration moment when the product was registered after
    the period started; else the period start (no overlap)."""
    if allocated_at >= grace_end(period, registered_at):
        return min(allocated_at, period.end)
    if registered_at > period.start:
        return min(registered_at, period.end)
    return period.start


def compensation_license_days(units: int, period: Year, *, allocated_at: datetime,
                              registered_at: datetime) -> int:
    """R-AX-7: license-days given back for ``units`` allocated to ``period``: units x whole days
    from the period start to the coverage start. Allocation inside the grace period by a product
    registered at the period start gets none."""
    if units < 0:
        raise ValueError("units are 0 or more")
    start = coverage_start(period, allocated_at=allocated_at, registered_at=registered_at)
    return units * (start - period.start).days


def as_units(license_days: int, days_per_unit: int) -> tuple[int, int]:
    """License-days as whole units and the remainder in license-days (the wallet shows both);
    one unit is one device for one subscription year of ``days_per_unit`` days."""
    if days_per_unit <= 0 or license_days < 0:
        raise ValueError("days_per_unit is positive and license_days 0 or more")
    return divmod(license_days, days_per_unit)


# --- the wallet (R-AX-4) -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Lot:
    """Units that entered the wallet together (a redeemed key, a compensation credit)."""

    lot_id: int
    received_at: datetime
    units: int

    def expires_at(self) -> datetime:
        return add_years(self.received_at, STORAGE_YEARS)


def usable(lots: Iterable[Lot], now: datetime) -> list[Lot]:
    """The lots still in the wallet at ``now``, oldest first (expired ones are gone)."""
    return sorted((lot for lot in lots if lot.units > 0 and now < lot.expires_at()),
                  key=lambda lot: (lot.received_at, lot.lot_id))


def take_oldest(lots: Iterable[Lot], units: int, now: datetime) -> list[tuple[int, int]]:
    """(lot id, units) to take for an allocation of ``units``, oldest first. Raises
    InsufficientUnits with how many are missing when the wallet holds too few."""
    if units < 0:
        raise ValueError("units are 0 or more")
    taken: list[tuple[int, int]] = []
    left = units
    available = usable(lots, now)
    for lot in available:
        if left == 0:
            break
        n = min(lot.units, left)
        taken.append((lot.lot_id, n))
        left -= n
    if left:
        raise InsufficientUnits(needed=units, available=units - left)
    return taken


class InsufficientUnits(ValueError):
    def __init__(self, *, needed: int, available: int) -> None:
        super().__init__(f"{needed} units needed, {available} in the wallet, {needed - available} missing")
        self.needed, self.available, self.missing = needed, available, needed - available


def allocatable_years(subscription_start: datetime, now: datetime) -> range:
    """R-AX-5: the current year and up to five ahead (indexes)."""
    current = year_at(subscription_start, now)
    first = current.index if current is not None else 0
    return range(first, first + AHEAD_YEARS + 1)


def cover(missing_by_year: Mapping[int, int], wallet_by_term: Mapping[int, int], years: Sequence[int]
          ) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """R-AX-5, R-AX-12: how the wallet's units license the ``years`` that miss units, the way the
    renewal allocates them: for each year from the earliest, what it still misses is taken from
    the longest term first. A unit of ``term`` years allocated to year ``y`` licenses one device
    in each of the years ``y`` to ``y + term - 1`` (a five-year unit counts once in each of five
    consecutive years, never as five devices in one year).

    Returns (units still missing per year after the wallet, the allocations that use the wallet
    as (year, term, units), earliest year first)."""
    left = {term: units for term, units in wallet_by_term.items() if units > 0}
    if any(term < 1 for term in left):
        raise ValueError("a unit lasts one year or more")
    covered: dict[int, int] = {}
    to_buy: dict[int, int] = {}
    placed: list[tuple[int, int, int]] = []
    for index in sorted(years):
        missing = max(0, missing_by_year.get(index, 0) - covered.get(index, 0))
        for term in sorted(left, reverse=True):
            take = min(missing, left[term])
            if take:
                placed.append((index, term, take))
                left[term] -= take
                missing -= take
                for licensed in range(index, index + term):
                    covered[licensed] = covered.get(licensed, 0) + take
        to_buy[index] = missing
    return to_buy, placed


def buying_guidance(need_by_year: Mapping[int, int], allocated_by_year: Mapping[int, int],
                    wallet_by_term: Mapping[int, int], years: Sequence[int]) -> dict[int, int]:
    """R-AX-12: units to buy, per coming year, to be fully licensed after the wallet's units are
    allocated as the renewal allocates them (``cover``): what allocating the wallet would leave
    missing, so that guidance and allocation agree."""
    missing = {index: max(0, need_by_year.get(index, 0) - allocated_by_year.get(index, 0)) for index in years}
    return cover(missing, wallet_by_term, years)[0]


def renewal_years(current: int, years_ahead: int) -> range:
    """R-AX-5, R-AX-6: the years a renewal makes fully licensed: the current year (whose grace
    period is for allocating to it) and the ``years_ahead`` after it, at most five ahead."""
    if not 0 <= years_ahead <= AHEAD_YEARS:
        raise ValueError(f"a renewal reaches 0 to {AHEAD_YEARS} years ahead")
    return range(current, current + years_ahead + 1)


def upgradable(need: int, allocated: int) -> int:
    """R-AX-13: how many of a year's allocated units of one license type an upgrade may convert
    without leaving a device of that type unlicensed: the units beyond the year's need."""
    return max(0, allocated - need)


# --- tied to hardware (R-AX-10) ------------------------------------------------------------------

def hardware_missing(devices: int, licenses: int) -> int:
    """R-AX-10: a piece of hardware licenses at most as many devices as it has licenses; the
    devices beyond are its need for expansion licenses."""
    return max(0, devices - licenses)


def expansion_guidance(missing: int, wallet_units: int) -> tuple[int, int]:
    """R-AX-12: (expansion units the wallet holds for it, expansion units to buy) for hardware
    that misses ``missing`` licenses."""
    from_wallet = min(missing, max(0, wallet_units))
    return from_wallet, missing - from_wallet
