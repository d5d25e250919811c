"""AXIS License Manager rules as plain code (SPEC §3), with figures worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitle.axis import rules
from entitle.axis.rules import Lot


def t(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


START = t(2026, 3, 1)


def test_subscription_years_and_leap_days() -> None:
    # R-AX-3: starting fixes the period dates; a 29 February start keeps its anniversary.
    y0 = rules.year(START, 0)
    assert (y0.start, y0.end, y0.days) == (t(2026, 3, 1), t(2027, 3, 1), 365)
    assert rules.year(START, 1).days == 366  # 2027-03-01 .. 2028-03-01 holds 29 Feb 2028
    leap = t(2028, 2, 29)
    assert rules.year(leap, 1).start == t(2029, 2, 28)
    assert rules.year(leap, 4).start == t(2032, 2, 29)
    assert rules.year_at(START, t(2026, 2, 28)) is None
    assert rules.year_at(START, t(2027, 2, 28, 23)).index == 0
    assert rules.year_at(START, t(2027, 3, 1)).index == 1
    with pytest.raises(ValueError):
        rules.year(START, -1)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       st.integers(0, 2_000_000_000))
def test_year_at_contains_now(start: datetime, seconds: int) -> None:
    # R-AX-3: every moment after the start falls in exactly one subscription year.
    now = start + timedelta(seconds=seconds)
    y = rules.year_at(start, now)
    assert y is not None and y.start <= now < y.end


def test_grace_period_at_start_and_at_every_renewal() -> None:
    # R-AX-3, R-AX-6: 30 days of grace at the start and at every renewal; then unlicensed.
    def state(now: datetime, allocated: int = 0) -> str:
        return rules.licensing_state(now=now, subscription_start=START, need=10, allocated=allocated)

    assert state(t(2026, 3, 30, 23)) == "in_grace"
    assert state(START + timedelta(days=30)) == "not_licensed"  # the grace end itself
    assert state(t(2026, 4, 1), allocated=4) == "partially_licensed"
    assert state(t(2026, 4, 1), allocated=10) == "fully_licensed"
    assert state(t(2027, 3, 5)) == "in_grace"  # renewal: a new grace period
    assert state(t(2027, 4, 1)) == "not_licensed"
    assert state(t(2026, 3, 2), allocated=10) == "fully_licensed"  # licensed inside grace


def test_trial_before_a_subscription() -> None:
    # R-AX-13: a trial (e.g. 90 days) needs no license while it runs.
    until = t(2026, 6, 1)
    assert rules.licensing_state(now=t(2026, 5, 31), subscription_start=None, need=8, allocated=0,
                                 trial_until=until) == "trial"
    assert rules.licensing_state(now=until, subscription_start=None, need=8, allocated=0,
                                 trial_until=until) == "not_licensed"
    assert rules.licensing_state(now=until, subscription_start=None, need=0, allocated=0) == "fully_licensed"


def test_compensation_in_license_days_worked_by_hand() -> None:
    # R-AX-7: 10 units allocated on 2026-05-01, after the grace end (2026-03-31), to the year
    # 2026-03-01 .. 2027-03-01 (365 days): overlap = March (31) + April (30) = 61 days;
    # compensation = 10 x 61 = 610 license-days = 1 whole unit + 245 license-days.
    y0 = rules.year(START, 0)
    days = rules.compensation_license_days(10, y0, allocated_at=t(2026, 5, 1), registered_at=t(2025, 1, 1))
    assert days == 610
    assert rules.as_units(days, y0.days) == (1, 245)


def test_compensation_for_a_product_registered_mid_period() -> None:
    # R-AX-7: registered and allocated on 2026-06-10, after the period's grace ended (2026-03-31):
    # the coverage starts 2026-06-10, 101 days (31 + 30 + 31 + 9) after the period start; x 3 units.
    y0 = rules.year(START, 0)
    assert rules.compensation_license_days(3, y0, allocated_at=t(2026, 6, 10), registered_at=t(2026, 6, 10)) == 303
    # Allocated inside the grace period by a product registered at the start: nothing.
    assert rules.compensation_license_days(3, y0, allocated_at=t(2026, 3, 20), registered_at=t(2026, 1, 1)) == 0
    # Allocated inside the grace period by a product registered after the period start: the
    # registration sets the coverage start (2026-03-11: 10 days x 3).
    assert rules.compensation_license_days(3, y0, allocated_at=t(2026, 3, 20), registered_at=t(2026, 3, 11)) == 30
    with pytest.raises(ValueError):
        rules.compensation_license_days(-1, y0, allocated_at=START, registered_at=START)
    with pytest.raises(ValueError):
        rules.as_units(10, 0)


def test_growth_allowance_is_twice_the_allocation() -> None:
    # R-AX-9: need <= 2 x allocated is within the allowance; beyond is flagged.
    assert not rules.over_growth_allowance(20, 10)
    assert rules.over_growth_allowance(21, 10)
    assert rules.over_growth_allowance(1, 0)


def test_wallet_uses_oldest_units_first_and_expires_after_five_years() -> None:
    # R-AX-4
    lots = [Lot(2, t(2025, 6, 1), 5), Lot(1, t(2024, 1, 1), 3), Lot(3, t(2026, 1, 1), 10)]
    assert rules.take_oldest(lots, 6, t(2026, 3, 1)) == [(1, 3), (2, 3)]
    # 2029-01-01 is five years after lot 1: it expired, so lot 2 is the oldest.
    assert [lot.lot_id for lot in rules.usable(lots, t(2029, 1, 1))] == [2, 3]
    assert rules.take_oldest(lots, 6, t(2029, 1, 1)) == [(2, 5), (3, 1)]
    with pytest.raises(rules.InsufficientUnits) as short:
        rules.take_oldest(lots, 16, t(2029, 1, 1))
    assert (short.value.needed, short.value.available, short.value.missing) == (16, 15, 1)
    assert Lot(9, t(2028, 2, 29), 1).expires_at() == t(2033, 2, 28)
    with pytest.raises(ValueError):
        rules.take_oldest(lots, -1, START)


def test_allocation_reaches_five_years_ahead() -> None:
    # R-AX-5
    assert list(rules.allocatable_years(START, t(2027, 6, 1))) == [1, 2, 3, 4, 5, 6]
    assert list(rules.allocatable_years(START, t(2026, 1, 1))) == [0, 1, 2, 3, 4, 5]


def test_buying_guidance_uses_the_wallet_for_the_earliest_years() -> None:
    # R-AX-12: need 10 in years 0..2, 10 allocated to year 0, 12 one-year units in the wallet
    # -> buy 0, 0, 8.
    assert rules.buying_guidance({0: 10, 1: 10, 2: 10}, {0: 10}, {1: 12}, [0, 1, 2]) == {0: 0, 1: 0, 2: 8}


YEARS = [0, 1, 2, 3, 4, 5]


def test_a_five_year_unit_licenses_one_device_in_each_of_five_years() -> None:
    # R-AX-12 R-AX-4: need 10 a year, 2 five-year units: they cover 2 devices in years 0-4, not
    # 10 unit-years of year 0 -- 8 to buy for each of years 0-4, 10 for year 5.
    need = dict.fromkeys(YEARS, 10)
    assert rules.buying_guidance(need, {}, {5: 2}, YEARS) == {0: 8, 1: 8, 2: 8, 3: 8, 4: 8, 5: 10}
    # At the edge: 10 five-year units cover years 0-4 whole; 9 leave one device a year to buy.
    assert rules.buying_guidance(need, {}, {5: 10}, YEARS) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 10}
    assert rules.buying_guidance(need, {}, {5: 9}, YEARS) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 10}
    # Five-year units first, one-year units for what the earliest years still miss.
    assert rules.buying_guidance(need, {0: 10}, {5: 1, 1: 5}, YEARS) == {0: 0, 1: 4, 2: 9, 3: 9, 4: 9, 5: 9}


def test_cover_is_what_allocating_the_wallet_does() -> None:
    # R-AX-5 R-AX-12: the allocations ``cover`` places leave exactly the guidance's missing units.
    missing = {0: 3, 1: 10, 2: 10}
    to_buy, placed = rules.cover(missing, {5: 4, 1: 2}, [0, 1, 2])
    assert placed == [(0, 5, 3), (1, 5, 1), (1, 1, 2)]
    licensed = dict.fromkeys([0, 1, 2], 0)
    for first, term, units in placed:
        for index in range(first, first + term):
            if index in licensed:
                licensed[index] += units
    assert {i: missing[i] - licensed[i] for i in licensed} == to_buy == {0: 0, 1: 4, 2: 6}
    assert rules.cover({0: 0}, {1: 5}, [0]) == ({0: 0}, [])


def test_a_renewal_licenses_the_current_year_and_the_years_ahead() -> None:
    # R-AX-6 R-AX-5: the current year first, then up to five ahead (the allocation window).
    assert list(rules.renewal_years(1, 1)) == [1, 2]
    assert list(rules.renewal_years(0, 0)) == [0]
    assert list(rules.renewal_years(0, 5)) == [0, 1, 2, 3, 4, 5] == list(rules.allocatable_years(START, START))
    for bad in (-1, 6):
        with pytest.raises(ValueError):
            rules.renewal_years(0, bad)


def test_an_upgrade_converts_only_units_beyond_the_need() -> None:
    # R-AX-13: 10 core devices, 10 core units: nothing to convert; 12 units: 2.
    assert rules.upgradable(10, 10) == 0
    assert rules.upgradable(10, 12) == 2
    assert rules.upgradable(10, 8) == 0


def test_hardware_devices_beyond_its_licenses_need_expansions() -> None:
    # R-AX-10 R-AX-12: 8 licenses, 10 devices: 2 missing; the wallet's expansion units first.
    assert rules.hardware_missing(10, 8) == 2
    assert rules.hardware_missing(8, 8) == 0 and rules.hardware_missing(7, 8) == 0
    assert rules.expansion_guidance(2, 0) == (0, 2)
    assert rules.expansion_guidance(2, 1) == (1, 1)
    assert rules.expansion_guidance(2, 5) == (2, 0)
