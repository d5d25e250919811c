"""Access Commander licensing rules (SPEC §2, R-AC-1 to R-AC-8) in the device library."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import KID
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from entitle_device import KeyRing, License, sign_license, verify
from entitle_device import access_commander as ac
from entitle_device.access_commander import (
    TRIAL,
    AccessCommanderError,
    Capacity,
    ConnectionRecord,
    InstallationLicense,
    LicenseStatus,
    Period,
    add_months,
    capacity_from_grants,
    cheapest_tier_for,
    check_activation,
    check_attendance,
    check_integration,
    connected_time,
    license_state,
    on_disconnect,
    on_recovered,
    on_seen,
    packages_for,
    protective_period,
    protective_period_end,
)
from entitle_device.access_commander import errors

UTC = timezone.utc
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=5)
HOUR, DAY, SECOND = timedelta(hours=1), timedelta(days=1), timedelta(seconds=1)

# The default catalog's Access Commander SKUs (src/entitle/catalog/default_catalog.yaml): data.
DEVICES_5: dict[str, Any] = {"devices": 5}
USERS_25: dict[str, Any] = {"attendance_users": 25}
INTEGRATION: dict[str, Any] = {"features": ["integration"]}
BASIC: dict[str, Any] = {"tier": "basic", "devices": 5, "attendance_users": 50, "admins": 1,
                         "features": []}
ADVANCED: dict[str, Any] = {"tier": "advanced", "devices": 30, "attendance_users": 300,
                            "admins": 5, "features": []}
PRO: dict[str, Any] = {"tier": "pro", "devices": 100, "attendance_users": 1000, "admins": None,
                       "features": ["integration"]}
PRO_UNLIMITED: dict[str, Any] = {"tier": "pro_unlimited", "devices": None,
                                 "attendance_users": None, "admins": None,
                                 "features": ["integration"]}
PACKAGES: list[tuple[str, Mapping[str, object]]] = [
    ("91379040", DEVICES_5), ("91379041", USERS_25), ("91379042", INTEGRATION)]
TIERS: list[tuple[str, Mapping[str, object]]] = [
    ("AC-TIER-BASIC", BASIC), ("AC-TIER-ADVANCED", ADVANCED), ("AC-TIER-PRO", PRO),
    ("AC-TIER-PRO-UNLIMITED", PRO_UNLIMITED)]
CATALOG = PACKAGES + TIERS


# --- capacity (R-AC-1, R-AC-2) ------------------------------------------------------------------

def test_the_trial_is_one_device_one_attendance_user_unlimited_system_users_no_integration() -> None:
    # R-AC-2
    assert TRIAL == Capacity(devices=1, attendance_users=1, admins=None, integration=False, tier=None)
    assert capacity_from_grants([]) == TRIAL


def test_packages_add_up_within_one_license() -> None:
    # R-AC-1: 5 devices per 91379040, 25 users per 91379041, integration with 91379042
    lines = [(DEVICES_5, 4), (USERS_25, 3), (INTEGRATION, 1)]
    assert capacity_from_grants(lines) == Capacity(20, 75, None, True, None)
    assert capacity_from_grants([(DEVICES_5, 2), (DEVICES_5, 1)]).devices == 15


def test_a_tier_sets_the_capacity_and_packages_add_on_top() -> None:
    # R-AC-1: tiers are catalog data; null is unlimited
    assert capacity_from_grants([(PRO, 1)]) == Capacity(100, 1000, None, True, "pro")
    assert capacity_from_grants([(BASIC, 1)]) == Capacity(5, 50, 1, False, "basic")
    on_top = capacity_from_grants([(ADVANCED, 1), (DEVICES_5, 2), (INTEGRATION, 1), ({"admins": 2}, 1)])
    assert on_top == Capacity(40, 300, 7, True, "advanced")
    assert capacity_from_grants([(PRO_UNLIMITED, 1), (DEVICES_5, 3)]) == Capacity(
        None, None, None, True, "pro_unlimited")


def test_a_package_may_grant_an_unlimited_count() -> None:
    # R-AC-1
    assert capacity_from_grants([({"devices": None}, 1), (DEVICES_5, 2)]).devices is None


def test_a_license_never_grants_less_than_the_trial() -> None:
    # R-AC-1, R-AC-2: decision; an integration-only license still lets its license device in
    assert capacity_from_grants([(INTEGRATION, 1)]) == Capacity(1, 1, None, True, None)
    assert capacity_from_grants([(DEVICES_5, 1)]) == Capacity(5, 1, None, False, None)


def test_lines_of_quantity_zero_count_for_nothing_and_unknown_grants_are_ignored() -> None:
    # R-AC-1: a newer catalog's members do not break an older reader
    assert capacity_from_grants([(PRO, 0), (DEVICES_5, 0)]) == TRIAL
    assert capacity_from_grants([({"devices": 5, "colour": "red", "features": ["x"]}, 2)]).devices == 10


@pytest.mark.parametrize("lines, message", [
    ([(PRO, 1), (BASIC, 1)], "at most one tier"),
    ([(PRO, 2)], "at most one tier"),
    ([(DEVICES_5, -1)], "quantity"),
    ([(DEVICES_5, True)], "quantity"),
    ([(DEVICES_5, None)], "quantity"),
    ([({"devices": -5}, 1)], "devices"),
    ([({"devices": 2.5}, 1)], "devices"),
    ([({"attendance_users": False}, 1)], "attendance_users"),
    ([({"tier": "pro", "devices": 100, "attendance_users": 1000}, 1)], "must name"),
    ([({"tier": "", "devices": 1, "attendance_users": 1, "admins": 1}, 1)], "tier's name"),
    ([({"tier": 7, "devices": 1, "attendance_users": 1, "admins": 1}, 1)], "tier's name"),
    ([({"features": "integration"}, 1)], "features"),
    ([({"features": [1]}, 1)], "features"),
    ([(["devices", 5], 1)], "JSON object"),
])
def test_grants_that_make_no_sense_are_refused(lines: Any, message: str) -> None:
    # R-AC-1
    with pytest.raises(ValueError, match=message):
        capacity_from_grants(lines)


def test_capacity_covers_a_need() -> None:
    # R-AC-1
    capacity = Capacity(20, 75, 5, False, None)
    assert capacity.covers(devices=20, attendance_users=75, admins=5)
    assert not capacity.covers(devices=21)
    assert not capacity.covers(attendance_users=76)
    assert not capacity.covers(admins=6)
    assert not capacity.covers(integration=True)
    assert Capacity(None, None, None, True, "x").covers(devices=10**9, attendance_users=10**9,
                                                         admins=10**9, integration=True)


def test_capacity_json_round_trip_and_refusals() -> None:
    # R-AC-1: the capacity travels in the signed payload
    for capacity in (TRIAL, Capacity(20, 75, 3, True, "pro")):
        assert Capacity.from_dict(json.loads(json.dumps(capacity.as_dict()))) == capacity
    good = Capacity(20, 75, 3, True, "pro").as_dict()
    for bad in ({**good, "extra": 1}, {**good, "integration": 1}, {**good, "tier": 5},
                {**good, "devices": -1}, [1, 2]):
        with pytest.raises(ValueError):
            Capacity.from_dict(bad)  # type: ignore[arg-type]


# --- calculator (R-AC-1) ------------------------------------------------------------------------

def test_the_calculator_orders_the_seed_examples() -> None:
    # R-AC-1: 17 devices -> 4 x 91379040 (20); 69 users -> 3 x 91379041 (75)
    assert packages_for(17, 0, False, CATALOG) == [("91379040", 4)]
    assert packages_for(0, 69, False, CATALOG) == [("91379041", 3)]
    assert packages_for(0, 0, True, CATALOG) == [("91379042", 1)]
    assert packages_for(0, 0, False, CATALOG) == []
    assert packages_for(20, 75, True, CATALOG) == [("91379040", 4), ("91379041", 3), ("91379042", 1)]


def test_the_calculator_orders_nothing_the_trial_covers() -> None:
    # R-AC-1, R-AC-2
    assert packages_for(1, 1, False, CATALOG) == []
    assert packages_for(2, 2, False, CATALOG) == [("91379040", 1), ("91379041", 1)]


def test_package_sizes_come_from_the_catalog() -> None:
    # R-AC-1: data, not code
    catalog = [("D10", {"devices": 10}), ("U100", {"attendance_users": 100}), ("I", INTEGRATION)]
    assert packages_for(17, 69, True, catalog) == [("D10", 2), ("U100", 1), ("I", 1)]


def test_with_several_package_sizes_the_least_spare_then_fewest_units_wins() -> None:
    # R-AC-1
    catalog = PACKAGES + [("D20", {"devices": 20}), ("D3", {"devices": 3})]
    assert packages_for(17, 0, False, catalog) == [("D3", 6)]  # 18: one spare
    assert packages_for(20, 0, False, catalog) == [("D20", 1)]  # none spare, 1 unit
    assert packages_for(7, 0, False, [("DU", {"devices": None}), ("D5", DEVICES_5)]) == [("D5", 2)]
    assert packages_for(7, 0, False, [("DU", {"devices": None})]) == [("DU", 1)]


def test_bundles_and_tiers_are_not_packages() -> None:
    # R-AC-1: a package grants one thing
    bundle = ("BUNDLE", {"devices": 5, "attendance_users": 25})
    with pytest.raises(errors.NoPackageAvailable) as refused:
        packages_for(17, 0, False, TIERS + [bundle])
    assert (refused.value.code, refused.value.detail) == ("no_package_available", {"need": "devices"})
    with pytest.raises(errors.NoPackageAvailable):
        packages_for(0, 30, False, [("91379040", DEVICES_5)])
    with pytest.raises(errors.NoPackageAvailable) as refused:
        packages_for(0, 0, True, TIERS + [("DI", {"devices": 5, "features": ["integration"]})])
    assert refused.value.detail == {"need": "integration"}


def test_the_calculator_adds_to_what_a_license_holds() -> None:
    # R-AC-1, R-AC-3: the packages to add to a license that keeps its lines, for the need.
    two = [(DEVICES_5, 2)]  # 10 devices
    assert packages_for(10, 0, False, PACKAGES, held=two) == []
    assert packages_for(11, 0, False, PACKAGES, held=two) == [("91379040", 1)]  # 1 more device: 1 package
    assert packages_for(17, 0, False, PACKAGES, held=two) == [("91379040", 2)]
    assert packages_for(1, 2, False, PACKAGES, held=two) == [("91379041", 1)]
    # Integration is added once; a license that has it needs none.
    assert packages_for(0, 0, True, PACKAGES, held=two) == [("91379042", 1)]
    assert packages_for(0, 0, True, PACKAGES, held=[(INTEGRATION, 1)]) == []
    # A license of integration only still owns the trial's device (never less than the trial).
    assert packages_for(1, 1, False, PACKAGES, held=[(INTEGRATION, 1)]) == []
    assert packages_for(2, 0, False, PACKAGES, held=[(INTEGRATION, 1)]) == [("91379040", 1)]
    # A tier's counts count; an unlimited count needs nothing more.
    assert packages_for(7, 50, False, PACKAGES, held=[(BASIC, 1)]) == [("91379040", 1)]
    assert packages_for(10**6, 10**6, True, PACKAGES, held=[(PRO_UNLIMITED, 1)]) == []
    # Without held lines: the calculator as before.
    assert packages_for(17, 69, False, PACKAGES, held=[]) == packages_for(17, 69, False, PACKAGES)


@given(st.integers(0, 60), st.integers(0, 200), st.integers(0, 6), st.integers(0, 4))
def test_what_is_added_covers_the_need_and_no_unit_less_does(devices: int, users: int, held_devices: int,
                                                              held_users: int) -> None:
    # R-AC-1: the license of the held lines and the added ones covers the need, minimally.
    held = [(DEVICES_5, held_devices), (USERS_25, held_users)]
    added = packages_for(devices, users, False, PACKAGES, held=held)
    grants = dict(PACKAGES)
    lines = held + [(grants[part], quantity) for part, quantity in added]
    assert capacity_from_grants(lines).covers(devices=devices, attendance_users=users)
    for index, (part, quantity) in enumerate(added):
        fewer = held + [(grants[p], q - (i == index)) for i, (p, q) in enumerate(added)]
        assert not capacity_from_grants(fewer).covers(devices=devices, attendance_users=users), part


def test_the_calculator_refuses_a_negative_need() -> None:
    # R-AC-1
    with pytest.raises(ValueError):
        packages_for(-1, 0, False, CATALOG)
    with pytest.raises(ValueError):
        packages_for(0, -1, False, CATALOG)


@given(st.integers(0, 5000), st.integers(0, 5000), st.booleans())
def test_the_order_covers_the_need_and_no_unit_less_does(devices: int, users: int,
                                                         integration: bool) -> None:
    # R-AC-1
    grants = dict(PACKAGES)
    order = packages_for(devices, users, integration, CATALOG)
    assert capacity_from_grants((grants[part], quantity) for part, quantity in order).covers(
        devices=devices, attendance_users=users, integration=integration)
    for index, (part, quantity) in enumerate(order):
        fewer = [*order[:index], (part, quantity - 1), *order[index + 1:]]
        assert not capacity_from_grants((grants[p], q) for p, q in fewer).covers(
            devices=devices, attendance_users=users, integration=integration)


def test_the_cheapest_tier_is_the_smallest_that_covers_the_need() -> None:
    # R-AC-1
    assert cheapest_tier_for(0, 0, False, CATALOG) == "AC-TIER-BASIC"
    assert cheapest_tier_for(17, 69, False, CATALOG) == "AC-TIER-ADVANCED"
    assert cheapest_tier_for(17, 69, True, CATALOG) == "AC-TIER-PRO"
    assert cheapest_tier_for(5, 50, False, CATALOG, need_admins=6) == "AC-TIER-PRO"
    assert cheapest_tier_for(101, 0, False, CATALOG) == "AC-TIER-PRO-UNLIMITED"
    assert cheapest_tier_for(17, 69, False, PACKAGES) is None
    assert cheapest_tier_for(101, 0, False, TIERS[:3]) is None


# --- protective period (R-AC-5) -----------------------------------------------------------------

@pytest.mark.parametrize("connected, period", [
    (timedelta(0), Period(days=1)),
    (24 * HOUR - SECOND, Period(days=1)),
    (24 * HOUR, Period(days=10)),
    (24 * HOUR + SECOND, Period(days=10)),
    (30 * DAY - SECOND, Period(days=10)),
    (30 * DAY, Period(days=10)),
    (30 * DAY + SECOND, Period(months=1)),
    (180 * DAY - SECOND, Period(months=1)),
    (180 * DAY, Period(months=1)),
    (180 * DAY + SECOND, Period(months=3)),
    (3650 * DAY, Period(months=3)),
])
def test_the_protective_period_follows_the_table(connected: timedelta, period: Period) -> None:
    # R-AC-5: under 24 h -> 1 day; 24 h..30 d -> 10 days; ..180 d -> 1 month; over -> 3 months
    assert protective_period(connected) == period


def test_a_negative_connected_time_is_refused() -> None:
    # R-AC-5
    with pytest.raises(ValueError):
        protective_period(-SECOND)


def test_the_protective_period_ends_calendar_months_after_the_disconnect() -> None:
    # R-AC-5: the license detail shows the date and time
    jan31 = datetime(2027, 1, 31, 13, 45, 10, tzinfo=UTC)
    assert protective_period_end(jan31, 31 * DAY) == datetime(2027, 2, 28, 13, 45, 10, tzinfo=UTC)
    assert protective_period_end(jan31, 181 * DAY) == datetime(2027, 4, 30, 13, 45, 10, tzinfo=UTC)
    assert protective_period_end(jan31, 2 * DAY) == datetime(2027, 2, 10, 13, 45, 10, tzinfo=UTC)
    assert protective_period_end(jan31, HOUR) == datetime(2027, 2, 1, 13, 45, 10, tzinfo=UTC)
    cet = timezone(timedelta(hours=1))
    assert protective_period_end(datetime(2027, 1, 31, 0, 30, tzinfo=cet), 31 * DAY) == datetime(
        2027, 2, 28, 23, 30, tzinfo=UTC)  # months are counted in UTC


def test_the_protective_period_end_needs_an_aware_time() -> None:
    # R-AC-5, R-CORE-7
    with pytest.raises(ValueError):
        protective_period_end(datetime(2027, 1, 1), DAY)


@pytest.mark.parametrize("start, months, end", [
    (datetime(2027, 1, 31, 9, tzinfo=UTC), 1, datetime(2027, 2, 28, 9, tzinfo=UTC)),
    (datetime(2028, 1, 31, 9, tzinfo=UTC), 1, datetime(2028, 2, 29, 9, tzinfo=UTC)),  # leap
    (datetime(2027, 11, 30, 9, tzinfo=UTC), 3, datetime(2028, 2, 29, 9, tzinfo=UTC)),
    (datetime(2027, 12, 15, 9, tzinfo=UTC), 1, datetime(2028, 1, 15, 9, tzinfo=UTC)),
    (datetime(2027, 3, 31, 9, tzinfo=UTC), 1, datetime(2027, 4, 30, 9, tzinfo=UTC)),
    (datetime(2027, 3, 31, 9, tzinfo=UTC), -1, datetime(2027, 2, 28, 9, tzinfo=UTC)),
    (datetime(2027, 5, 17, 9, tzinfo=UTC), 0, datetime(2027, 5, 17, 9, tzinfo=UTC)),
])
def test_add_months_keeps_the_day_clamped_to_the_months_last(start: datetime, months: int,
                                                              end: datetime) -> None:
    # R-AC-5
    assert add_months(start, months) == end


# --- the connection record (R-AC-4, R-AC-5) -----------------------------------------------------

def fresh() -> ConnectionRecord:
    return ConnectionRecord(license_added_at=T0)


def heartbeats(record: ConnectionRecord, start: datetime, end: datetime) -> ConnectionRecord:
    """Heartbeats from start to end inclusive, one per timeout (the longest gap that connects)."""
    at = start
    while at < end:
        record = on_seen(record, at, TIMEOUT)
        at += TIMEOUT
    return on_seen(record, end, TIMEOUT)


def test_heartbeats_extend_the_interval_and_time_counts_only_up_to_the_last_evidence() -> None:
    # R-AC-4, R-AC-5: connected time is never over-counted
    record = on_seen(fresh(), T0, TIMEOUT)
    record = on_seen(record, T0 + 4 * timedelta(minutes=1), TIMEOUT)
    record = on_seen(record, T0 + 9 * timedelta(minutes=1), TIMEOUT)  # gap 5 min = timeout: same interval
    assert record == ConnectionRecord(T0, timedelta(0), T0, T0 + timedelta(minutes=9))
    assert connected_time(record, T0 + timedelta(minutes=9)) == timedelta(minutes=9)
    assert connected_time(record, T0 + 30 * DAY) == timedelta(minutes=9)
    assert connected_time(record, T0 + timedelta(minutes=2)) == timedelta(minutes=2)


def test_a_gap_longer_than_the_timeout_closes_the_interval_at_the_last_evidence() -> None:
    # R-AC-4, R-AC-5
    record = heartbeats(fresh(), T0, T0 + HOUR)
    later = T0 + HOUR + TIMEOUT + SECOND
    record = on_seen(record, later, TIMEOUT)
    assert record == ConnectionRecord(T0, HOUR, later, later)
    record = heartbeats(record, later, later + HOUR)
    assert connected_time(record, later + DAY) == 2 * HOUR


def test_an_explicit_disconnect_closes_the_interval_and_the_next_report_opens_one() -> None:
    # R-AC-4, R-AC-5
    record = heartbeats(fresh(), T0, T0 + HOUR)
    record = on_disconnect(record, T0 + HOUR + timedelta(minutes=1))
    assert record == ConnectionRecord(T0, HOUR, None, T0 + HOUR)
    assert on_disconnect(record, T0 + 2 * HOUR) == record  # already disconnected
    back = T0 + HOUR + timedelta(minutes=2)  # within the timeout, but explicitly disconnected
    record = on_seen(record, back, TIMEOUT)
    assert record == ConnectionRecord(T0, HOUR, back, back)


def test_stale_or_foreign_evidence_is_ignored() -> None:
    # R-AC-4: events out of order, or from before this license, never add time
    record = heartbeats(fresh(), T0, T0 + HOUR)
    assert on_seen(record, T0 + HOUR, TIMEOUT) == record
    assert on_seen(record, T0 + timedelta(minutes=30), TIMEOUT) == record
    assert on_disconnect(record, T0 + timedelta(minutes=30)) == record
    assert on_seen(fresh(), T0 - SECOND, TIMEOUT) == fresh()


def test_events_need_aware_times() -> None:
    # R-CORE-7
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError):
        on_seen(fresh(), naive, TIMEOUT)
    with pytest.raises(ValueError):
        on_disconnect(fresh(), naive)
    with pytest.raises(ValueError):
        on_recovered(fresh(), naive, TIMEOUT)
    with pytest.raises(ValueError):
        license_state(fresh(), naive, TIMEOUT)
    with pytest.raises(TypeError):
        ConnectionRecord(license_added_at="2026-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize("fields, message", [
    (dict(license_added_at=datetime(2026, 1, 1)), "aware"),
    (dict(license_added_at=T0, last_seen=datetime(2026, 1, 2)), "aware"),
    (dict(license_added_at=T0, last_seen=T0 - SECOND), "earlier than license_added_at"),
    (dict(license_added_at=T0, connected_since=T0), "open interval"),
    (dict(license_added_at=T0, connected_since=T0 + HOUR, last_seen=T0), "open interval"),
    (dict(license_added_at=T0, accumulated=-SECOND), "accumulated"),
    (dict(license_added_at=T0, accumulated=SECOND), "accumulated"),
    (dict(license_added_at=T0, accumulated=HOUR, connected_since=T0 + HOUR - SECOND,
          last_seen=T0 + 2 * HOUR), "accumulated"),
    (dict(license_added_at=T0, accumulated=HOUR + SECOND, last_seen=T0 + HOUR), "accumulated"),
])
def test_a_record_that_cannot_be_true_is_refused(fields: dict[str, Any], message: str) -> None:
    # R-AC-5: connection time cannot exceed the time since the license was added
    with pytest.raises(ValueError, match=message):
        ConnectionRecord(**fields)


def test_a_record_round_trips_through_json() -> None:
    # R-AC-5: the server and the installation persist it
    record = ConnectionRecord(T0, timedelta(hours=5, microseconds=7), T0 + 6 * HOUR, T0 + 7 * HOUR,
                              T0 + HOUR)
    assert ConnectionRecord.from_dict(json.loads(json.dumps(record.as_dict()))) == record
    assert ConnectionRecord.from_dict(fresh().as_dict()) == fresh()


@pytest.mark.parametrize("change", [
    {"extra": 1},
    {"accumulated_microseconds": 1.5},
    {"accumulated_microseconds": True},
    {"license_added_at": None},
    {"last_seen": 5},
    {"last_seen": "yesterday"},
    {"last_seen": "2026-01-01T09:00:00"},
])
def test_a_damaged_record_is_refused(change: dict[str, Any]) -> None:
    # R-AC-5
    with pytest.raises(ValueError):
        ConnectionRecord.from_dict({**fresh().as_dict(), **change})
    with pytest.raises(ValueError):
        ConnectionRecord.from_dict([])  # type: ignore[arg-type]


# --- the license state (R-AC-4, R-AC-5, R-AC-6) -------------------------------------------------

def test_without_a_license_the_state_is_trial() -> None:
    # R-AC-2
    assert license_state(None, T0, TIMEOUT) == LicenseStatus("trial", timedelta(0), None, None, None)
    assert not license_state(None, T0, TIMEOUT).license_device_connected


def test_the_license_is_active_while_the_license_device_is_connected() -> None:
    # R-AC-4
    record = heartbeats(fresh(), T0, T0 + 2 * DAY)
    status = license_state(record, T0 + 2 * DAY + TIMEOUT, TIMEOUT)
    assert status == LicenseStatus("active", 2 * DAY, None, None, None)
    assert status.license_device_connected


def test_a_disconnect_starts_the_protective_period_from_the_last_evidence() -> None:
    # R-AC-5: 2 days connected -> 10 days, from the last heartbeat
    last = T0 + 2 * DAY
    record = heartbeats(fresh(), T0, last)
    status = license_state(record, last + TIMEOUT + SECOND, TIMEOUT)
    assert status == LicenseStatus("protective", 2 * DAY, last, last + 10 * DAY, None)
    assert not status.license_device_connected
    explicit = license_state(on_disconnect(record, last), last, TIMEOUT)
    assert explicit == status


def test_the_period_runs_out_at_its_end_whenever_the_state_is_computed() -> None:
    # R-AC-5, R-AC-6, R-CORE-7: no background job; suspended_at is the period's end
    last = T0 + 2 * DAY
    record = heartbeats(fresh(), T0, last)
    end = last + 10 * DAY
    assert license_state(record, end - SECOND, TIMEOUT).state == "protective"
    for now in (end, end + DAY, end + 3650 * DAY):
        assert license_state(record, now, TIMEOUT) == LicenseStatus(
            "suspended", 2 * DAY, last, end, end)


def test_reconnecting_before_the_end_ends_the_protective_period() -> None:
    # R-AC-5
    last = T0 + 2 * DAY
    record = heartbeats(fresh(), T0, last)
    back = last + 10 * DAY - SECOND
    record = on_seen(record, back, TIMEOUT)
    assert license_state(record, back, TIMEOUT) == LicenseStatus("active", 2 * DAY, None, None, None)
    assert record.suspended_at is None


def test_a_short_outage_does_not_reset_a_long_running_system() -> None:
    # R-AC-5: cumulative connected time since the license was added
    record = heartbeats(fresh(), T0, T0 + 40 * DAY)
    record = on_disconnect(record, T0 + 40 * DAY)
    record = heartbeats(record, T0 + 40 * DAY + HOUR, T0 + 40 * DAY + 2 * HOUR)
    status = license_state(record, T0 + 41 * DAY, TIMEOUT)
    assert status.connected_time == 40 * DAY + HOUR
    assert status.protective_until == add_months(T0 + 40 * DAY + 2 * HOUR, 1)


def test_a_license_whose_device_is_never_seen_gets_one_day_from_when_it_was_added() -> None:
    # R-AC-4, R-AC-5: decision
    assert license_state(fresh(), T0, TIMEOUT) == LicenseStatus(
        "protective", timedelta(0), T0, T0 + DAY, None)
    late = on_seen(fresh(), T0 + DAY, TIMEOUT)
    assert license_state(late, T0 + DAY, TIMEOUT).state == "suspended"
    in_time = on_seen(fresh(), T0 + DAY - SECOND, TIMEOUT)
    assert license_state(in_time, T0 + DAY, TIMEOUT).state == "active"


def test_after_suspension_reconnecting_alone_does_not_recover() -> None:
    # R-AC-6
    last = T0 + 2 * DAY
    end = last + 10 * DAY
    record = on_seen(heartbeats(fresh(), T0, last), end + HOUR, TIMEOUT)
    assert record.suspended_at == end
    status = license_state(record, end + HOUR, TIMEOUT)
    assert status == LicenseStatus("suspended", 2 * DAY, None, end, end)
    assert status.license_device_connected  # connected, still suspended
    record = heartbeats(record, end + HOUR, end + 5 * HOUR)
    assert license_state(record, end + 5 * HOUR, TIMEOUT).state == "suspended"


def test_activating_the_connected_license_device_recovers() -> None:
    # R-AC-6: the admin reconnects and activates the license device
    last = T0 + 2 * DAY
    end = last + 10 * DAY
    record = on_seen(heartbeats(fresh(), T0, last), end + HOUR, TIMEOUT)
    with pytest.raises(errors.LicenseDeviceNotConnected):
        on_recovered(record, end + HOUR + TIMEOUT + SECOND, TIMEOUT)  # gone again
    with pytest.raises(errors.LicenseDeviceNotConnected):
        on_recovered(record, end, TIMEOUT)  # before it came back
    recovered = on_recovered(record, end + HOUR + timedelta(minutes=1), TIMEOUT)
    assert recovered.suspended_at is None
    status = license_state(recovered, end + HOUR + timedelta(minutes=1), TIMEOUT)
    assert status == LicenseStatus("active", 2 * DAY, None, None, None)
    assert on_recovered(recovered, end + 2 * HOUR, TIMEOUT) == recovered  # nothing to recover


def test_a_suspension_lasts_until_recovery_and_keeps_its_moment() -> None:
    # R-AC-6: the server tells which devices were active before the suspension from suspended_at
    last = T0 + 2 * DAY
    first_end = last + 10 * DAY
    record = on_seen(heartbeats(fresh(), T0, last), first_end + HOUR, TIMEOUT)
    record = on_disconnect(record, first_end + 2 * HOUR)
    record = on_seen(record, first_end + 400 * DAY, TIMEOUT)  # a second run-out, not recovered
    assert record.suspended_at == first_end
    status = license_state(record, first_end + 400 * DAY + TIMEOUT + SECOND, TIMEOUT)
    assert (status.state, status.suspended_at) == ("suspended", first_end)
    assert status.disconnected_at == first_end + 400 * DAY


def test_after_recovery_a_new_run_out_is_a_new_suspension() -> None:
    # R-AC-6
    last = T0 + 2 * DAY
    first_end = last + 10 * DAY
    record = on_seen(heartbeats(fresh(), T0, last), first_end + HOUR, TIMEOUT)
    record = on_recovered(record, first_end + HOUR, TIMEOUT)
    record = on_disconnect(record, first_end + HOUR)
    assert license_state(record, first_end + 2 * HOUR, TIMEOUT).state == "protective"
    second_end = first_end + HOUR + 10 * DAY
    record = on_seen(record, second_end, TIMEOUT)
    assert record.suspended_at == second_end
    assert license_state(record, second_end, TIMEOUT).suspended_at == second_end


# Events: (gap since the previous event in seconds, "seen" or "disconnect").
EVENTS = st.lists(st.tuples(st.integers(1, 3 * 86400), st.sampled_from(["seen", "disconnect"])),
                  max_size=40)


def true_connected_time(events: list[tuple[datetime, str]]) -> timedelta:
    """The union of the evidence intervals: consecutive reports of the device no further apart than
    the timeout and without a disconnect between them."""
    total = timedelta(0)
    for (at, kind), (next_at, next_kind) in zip(events, events[1:]):
        if kind == next_kind == "seen" and next_at - at <= TIMEOUT:
            total += next_at - at
    return total


@given(EVENTS, st.integers(0, 400 * 86400), st.integers(0, 400 * 86400))
def test_connected_time_is_the_evidence_never_more_and_monotone(
    gaps: list[tuple[int, str]], later_a: int, later_b: int
) -> None:
    # R-AC-5: connection time that decides a protective period is never over-counted
    timeout_gaps = [(seconds % 600 + 1 if index % 3 else seconds, kind)
                    for index, (seconds, kind) in enumerate(gaps)]  # many gaps near the timeout
    record, at, events = fresh(), T0, []
    for seconds, kind in timeout_gaps:
        at += timedelta(seconds=seconds)
        events.append((at, kind))
        record = on_seen(record, at, TIMEOUT) if kind == "seen" else on_disconnect(record, at)
        assert connected_time(record, at) == true_connected_time(events)
        assert connected_time(record, at) <= at - T0
    first, second = sorted((later_a, later_b))
    early, late = at + timedelta(seconds=first), at + timedelta(seconds=second)
    assert connected_time(record, early) <= connected_time(record, late) == true_connected_time(events)
    for moment in (T0, T0 + (at - T0) / 2):
        assert connected_time(record, moment) <= connected_time(record, at)
    status = license_state(record, late, TIMEOUT)
    assert status.connected_time == true_connected_time(events)
    if record.suspended_at is None and status.disconnected_at is not None:
        # R-AC-5: the period follows from the connected time at the disconnect, at any now
        end = protective_period_end(status.disconnected_at, status.connected_time)
        assert status.protective_until == end
        assert status.state == ("protective" if late < end else "suspended")


# --- activation and enforcement (R-AC-6, R-AC-7, R-AC-8) ----------------------------------------

LICENSE_DEVICE = "54-0000-0001"
OTHER = "54-0000-0002"
ACTIVE = LicenseStatus("active", DAY, None, None, None)
PROTECTIVE = LicenseStatus("protective", DAY, T0, T0 + 10 * DAY, None)
SUSPENDED_CONNECTED = LicenseStatus("suspended", DAY, None, T0 + 10 * DAY, T0 + 10 * DAY)
SUSPENDED_GONE = LicenseStatus("suspended", DAY, T0, T0 + 10 * DAY, T0 + 10 * DAY)
TWENTY = Capacity(20, 75, None, False, None)


def activate(serial: str, *, active: bool = True, count: int = 1, capacity: Capacity = TWENTY,
             status: LicenseStatus = ACTIVE, license_device: str | None = LICENSE_DEVICE) -> None:
    check_activation(serial, license_device_serial=license_device, license_device_active=active,
                     active_count=count, capacity=capacity, status=status)


def test_after_a_new_license_the_license_device_is_activated_first() -> None:
    # R-AC-7
    with pytest.raises(errors.LicenseDeviceFirst) as refused:
        activate(OTHER, active=False, count=0)
    assert refused.value.code == "license_device_first"
    assert LICENSE_DEVICE in refused.value.message and "first" in refused.value.message
    assert refused.value.detail == {"serial": OTHER, "license_device": LICENSE_DEVICE}
    activate(LICENSE_DEVICE, active=False, count=0)
    activate(OTHER, active=True, count=1)


def test_activating_beyond_the_owned_devices_is_refused_with_the_numbers() -> None:
    # R-AC-8
    activate(OTHER, count=19)
    with pytest.raises(errors.DeviceLimitReached) as refused:
        activate(OTHER, count=20)
    assert refused.value.code == "device_limit_reached"
    assert refused.value.detail == {"serial": OTHER, "owned": 20, "active": 20}
    activate(OTHER, count=10**6, capacity=Capacity(None, None, None, True, "pro_unlimited"))


def test_refusals_read_one_device_one_attendance_user_one_administrator() -> None:
    # R-AC-8: the numbers in the right grammatical number, at 1 and around it.
    trial = license_state(None, T0, TIMEOUT)
    with pytest.raises(errors.DeviceLimitReached) as one:
        activate(OTHER, active=False, count=1, capacity=TRIAL, status=trial, license_device=None)
    assert one.value.message.startswith("The license owns 1 device and 1 is active.")
    with pytest.raises(errors.DeviceLimitReached) as many:
        activate(OTHER, count=20)
    assert many.value.message.startswith("The license owns 20 devices and 20 are active.")
    with pytest.raises(errors.AttendanceLimitReached) as user:
        check_attendance(1, TRIAL)
    assert user.value.message.startswith("The license owns 1 Attendance user and 1 is monitored.")
    with pytest.raises(errors.AttendanceLimitReached) as users:
        check_attendance(75, TWENTY)
    assert users.value.message.startswith("The license owns 75 Attendance users and 75 are monitored.")
    with pytest.raises(errors.AdminLimitReached) as admin:
        ac.check_admin(1, capacity_from_grants([(BASIC, 1)]))
    assert admin.value.message.startswith("The license allows 1 administrator and 1 is an administrator.")
    with pytest.raises(errors.AdminLimitReached) as admins:
        ac.check_admin(6, capacity_from_grants([(ADVANCED, 1)]))
    assert admins.value.message.startswith("The license allows 5 administrators and 6 are administrators.")


def test_the_trial_activates_one_device() -> None:
    # R-AC-2, R-AC-8
    trial = license_state(None, T0, TIMEOUT)
    activate(OTHER, active=False, count=0, capacity=TRIAL, status=trial, license_device=None)
    with pytest.raises(errors.DeviceLimitReached):
        activate(OTHER, active=False, count=1, capacity=TRIAL, status=trial, license_device=None)


def test_devices_can_be_activated_during_the_protective_period() -> None:
    # R-AC-5: the installation keeps working
    activate(OTHER, count=5, status=PROTECTIVE)


def test_a_suspended_license_activates_only_the_connected_license_device() -> None:
    # R-AC-6
    with pytest.raises(errors.LicenseSuspended) as refused:
        activate(OTHER, active=False, count=0, status=SUSPENDED_CONNECTED)
    assert refused.value.detail == {"serial": OTHER, "license_device": LICENSE_DEVICE,
                                    "suspended_at": (T0 + 10 * DAY).isoformat()}
    with pytest.raises(errors.LicenseDeviceNotConnected) as gone:
        activate(LICENSE_DEVICE, active=False, count=0, status=SUSPENDED_GONE)
    assert gone.value.detail == {"serial": LICENSE_DEVICE, "disconnected_at": T0.isoformat()}
    zero = Capacity(0, 0, None, False, None)  # what a suspended installation owns
    activate(LICENSE_DEVICE, active=False, count=0, capacity=zero, status=SUSPENDED_CONNECTED)


def test_monitoring_beyond_the_owned_attendance_users_is_refused() -> None:
    # R-AC-8
    check_attendance(74, TWENTY)
    with pytest.raises(errors.AttendanceLimitReached) as refused:
        check_attendance(75, TWENTY)
    assert (refused.value.code, refused.value.detail) == (
        "attendance_limit_reached", {"owned": 75, "monitored": 75})
    check_attendance(10**6, Capacity(None, None, None, False, None))


def test_administrators_beyond_a_tiers_limit_are_refused() -> None:
    # R-AC-1, R-AC-8: Basic allows 1 administrator, packages leave them unlimited
    basic = capacity_from_grants([(BASIC, 1)])
    ac.check_admin(0, basic)
    with pytest.raises(errors.AdminLimitReached) as refused:
        ac.check_admin(1, basic)
    assert (refused.value.code, refused.value.detail) == ("admin_limit_reached", {"owned": 1, "admins": 1})
    ac.check_admin(10**6, TWENTY)


def test_synchronisation_without_the_integration_feature_is_refused() -> None:
    # R-AC-8
    check_integration(capacity_from_grants([(INTEGRATION, 1)]))
    with pytest.raises(errors.IntegrationNotLicensed) as refused:
        check_integration(capacity_from_grants([(ADVANCED, 1)]))
    assert refused.value.detail == {"tier": "advanced"}


def test_a_smaller_capacity_refuses_only_new_activations() -> None:
    # R-AC-8: nothing already active is lost; the checks report the excess, they take nothing away
    smaller = Capacity(5, 25, None, False, None)
    with pytest.raises(errors.DeviceLimitReached) as refused:
        activate(OTHER, count=12, capacity=smaller)
    assert refused.value.detail["active"] == 12 and refused.value.detail["owned"] == 5
    with pytest.raises(errors.AttendanceLimitReached) as over:
        check_attendance(40, smaller)
    assert over.value.detail == {"owned": 25, "monitored": 40}


def test_every_access_commander_error_has_its_own_documented_code() -> None:
    # R-AC-7, R-AC-8: codes are part of the API
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(error, AccessCommanderError) for error in classes)
    assert {error.__name__: error.code for error in classes} == {
        "AccessCommanderError": "access_commander_error",
        "AdminLimitReached": "admin_limit_reached",
        "AttendanceLimitReached": "attendance_limit_reached",
        "DeviceLimitReached": "device_limit_reached",
        "IntegrationNotLicensed": "integration_not_licensed",
        "LicenseDeviceFirst": "license_device_first",
        "LicenseDeviceNotConnected": "license_device_not_connected",
        "LicenseDeviceUnknown": "license_device_unknown",
        "LicenseOlder": "license_older",
        "LicenseSuspended": "license_suspended",
        "NoPackageAvailable": "no_package_available",
        "NotAnAccessCommanderLicense": "not_access_commander_license",
    }
    error = errors.DeviceLimitReached("full")
    assert (str(error), error.message, error.detail) == ("full", "full", {})
    assert set(ac.__all__) >= set(errors.__all__)


# --- the offline tracker (R-AC-3 to R-AC-6) -----------------------------------------------------

INSTALLATION = "SYS-AC-000042"
ISSUED = datetime(2025, 12, 31, 12, 0, tzinfo=UTC)


def payload(**changes: Any) -> dict[str, Any]:
    built = ac.license_payload(
        organization="org_7f3a2c", installation=INSTALLATION, license_device=LICENSE_DEVICE,
        packages=[("91379040", DEVICES_5, 4), ("91379041", USERS_25, 3),
                  ("91379042", INTEGRATION, 1)])
    built.update(changes)
    return built


def signed(issuer: Ed25519PrivateKey, ring: KeyRing, data: dict[str, Any],
           subject: list[str] | None = None) -> License:
    text = sign_license(issuer, KID, data, ISSUED, None, 0, subject or [INSTALLATION, LICENSE_DEVICE])
    return verify(text, ring, T0, INSTALLATION)


def test_the_license_payload_carries_the_capacity_from_the_catalog(
    issuer: Ed25519PrivateKey, ring: KeyRing
) -> None:
    # R-AC-1, R-AC-4
    assert payload() == {
        "model": "access_commander", "organization": "org_7f3a2c", "installation": INSTALLATION,
        "license_device": LICENSE_DEVICE,
        "capacity": {"devices": 20, "attendance_users": 75, "admins": None, "integration": True,
                     "tier": None},
        "packages": [{"part_number": "91379040", "quantity": 4},
                     {"part_number": "91379041", "quantity": 3},
                     {"part_number": "91379042", "quantity": 1}],
    }
    terms = InstallationLicense.added(signed(issuer, ring, payload()), T0).terms
    assert terms == ac.LicenseTerms("org_7f3a2c", INSTALLATION, LICENSE_DEVICE,
                                    Capacity(20, 75, None, True, None),
                                    (("91379040", 4), ("91379041", 3), ("91379042", 1)))


@pytest.mark.parametrize("data", [
    payload(model="axis"),
    {**payload(), "extra": 1},
    payload(organization=7),
    payload(capacity={"devices": 20}),
    payload(packages={"91379040": 4}),
    payload(packages=[["91379040", 4]]),
    payload(packages=[{"part_number": "91379040", "quantity": "4"}]),
])
def test_a_payload_that_is_not_an_access_commander_license_is_refused(
    issuer: Ed25519PrivateKey, ring: KeyRing, data: dict[str, Any]
) -> None:
    # R-AC-4
    with pytest.raises(errors.NotAnAccessCommanderLicense) as refused:
        InstallationLicense.added(signed(issuer, ring, data), T0)
    assert refused.value.message.startswith("The license file is not an Access Commander license")


def test_the_license_file_names_its_license_device(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-AC-4: a license is generated for one device's serial
    license = signed(issuer, ring, payload(), subject=[INSTALLATION])
    with pytest.raises(errors.NotAnAccessCommanderLicense) as refused:
        InstallationLicense.added(license, T0)
    assert refused.value.detail == {"installation": INSTALLATION, "license_device": LICENSE_DEVICE}


def test_the_installation_tracks_its_license_offline(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-AC-4, R-AC-5, R-AC-6
    tracker = InstallationLicense.added(signed(issuer, ring, payload()), T0)
    assert tracker.license_device == LICENSE_DEVICE
    assert tracker.status(T0).state == "protective"
    at = T0
    while at <= T0 + 2 * DAY:
        tracker.seen(at)
        at += TIMEOUT
    assert tracker.status(T0 + 2 * DAY).state == "active"
    assert tracker.capacity(T0 + 2 * DAY) == Capacity(20, 75, None, True, None)
    tracker.check_activation(OTHER, T0 + 2 * DAY, license_device_active=True, active_count=3)
    with pytest.raises(errors.LicenseDeviceFirst):
        tracker.check_activation(OTHER, T0 + 2 * DAY, license_device_active=False, active_count=0)
    tracker.disconnected(T0 + 2 * DAY + HOUR)
    end = T0 + 12 * DAY
    assert tracker.status(end - SECOND).protective_until == end
    assert tracker.capacity(end - SECOND).devices == 20  # protective: still the license's
    assert tracker.capacity(end) == Capacity(0, 0, None, False, None)  # suspended: nothing
    with pytest.raises(errors.LicenseSuspended):
        tracker.check_activation(OTHER, end, license_device_active=False, active_count=0)
    with pytest.raises(errors.LicenseDeviceNotConnected):
        tracker.check_activation(LICENSE_DEVICE, end, license_device_active=False, active_count=0)
    tracker.seen(end + DAY)
    tracker.check_activation(LICENSE_DEVICE, end + DAY, license_device_active=False, active_count=0)
    tracker.recovered(end + DAY)
    assert tracker.status(end + DAY).state == "active"
    assert tracker.record.suspended_at is None


def test_the_installation_persists_its_record(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-AC-5: the cumulative connected time survives a restart
    license = signed(issuer, ring, payload())
    tracker = InstallationLicense.added(license, T0, heartbeat_timeout=TIMEOUT)
    tracker.seen(T0)
    tracker.seen(T0 + HOUR)
    restored = InstallationLicense.from_json(tracker.to_json(), license, heartbeat_timeout=TIMEOUT)
    assert restored.record == tracker.record
    assert restored.status(T0 + DAY) == tracker.status(T0 + DAY)
    other = signed(issuer, ring, payload(organization="org_other"))
    with pytest.raises(ValueError, match="another license"):
        InstallationLicense.from_json(tracker.to_json(), other)
    for text in ("[]", '{"format": "x", "license": "", "record": {}}', "not json"):
        with pytest.raises(ValueError):
            InstallationLicense.from_json(text, license)


# --- License adding, offline (R-AC-3, R-AC-4, R-AC-7) ---------------------------------------------

def _file(issuer: Ed25519PrivateKey, data: dict[str, Any], issued: datetime = ISSUED,
          subject: list[str] | None = None) -> str:
    return sign_license(issuer, KID, data, issued, None, 0, subject or [INSTALLATION, data["license_device"]])


def test_license_adding_reads_a_file_for_this_installation(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-AC-3, R-AC-4: the file becomes the license with a new record; a newer one replaces it.
    devices = {LICENSE_DEVICE, OTHER}
    first = _file(issuer, payload())
    tracker = ac.add_license_file(first, ring, T0, installation=INSTALLATION, devices=devices,
                                  heartbeat_timeout=TIMEOUT)
    assert tracker.license_device == LICENSE_DEVICE and tracker.record == ConnectionRecord(T0)
    assert tracker.heartbeat_timeout == TIMEOUT
    tracker.seen(T0)
    # The current license's own file changes nothing (its record is kept).
    same = ac.add_license_file(first, ring, T0 + HOUR, installation=INSTALLATION, devices=devices,
                               current=tracker)
    assert same is tracker
    newer = _file(issuer, payload(license_device=OTHER), issued=ISSUED + SECOND)
    replaced = ac.add_license_file(newer, ring, T0 + HOUR, installation=INSTALLATION, devices=devices,
                                   current=tracker)
    assert replaced.license_device == OTHER and replaced.record == ConnectionRecord(T0 + HOUR)
    # After it, the license device comes first (R-AC-7).
    with pytest.raises(errors.LicenseDeviceFirst):
        replaced.check_activation(LICENSE_DEVICE, T0 + HOUR, license_device_active=False, active_count=0)


def test_license_adding_refuses_older_foreign_and_changed_files(issuer: Ed25519PrivateKey,
                                                                  ring: KeyRing) -> None:
    # R-AC-4, R-CORE-9: each refusal has its typed error.
    from entitle_device import BadSignature, NotForThisSystem

    devices = {LICENSE_DEVICE}
    current = ac.add_license_file(_file(issuer, payload()), ring, T0, installation=INSTALLATION,
                                  devices=devices)
    older = _file(issuer, payload(organization="org_old"), issued=ISSUED - SECOND)
    with pytest.raises(errors.LicenseOlder) as refused:
        ac.add_license_file(older, ring, T0, installation=INSTALLATION, devices=devices, current=current)
    assert refused.value.detail == {"issued": "2025-12-31T11:59:59Z", "current_issued": "2025-12-31T12:00:00Z"}
    same_moment = _file(issuer, payload(organization="org_same"))  # issued with the current one: not newer
    with pytest.raises(errors.LicenseOlder):
        ac.add_license_file(same_moment, ring, T0, installation=INSTALLATION, devices=devices,
                            current=current)
    foreign = _file(issuer, payload(installation="SYS-AC-OTHER"), subject=["SYS-AC-OTHER", LICENSE_DEVICE])
    with pytest.raises(NotForThisSystem):
        ac.add_license_file(foreign, ring, T0, installation=INSTALLATION, devices=devices)
    unknown = _file(issuer, payload(license_device="54-9999-9999"))
    with pytest.raises(errors.LicenseDeviceUnknown) as gone:
        ac.add_license_file(unknown, ring, T0, installation=INSTALLATION, devices=devices)
    assert gone.value.detail == {"license_device": "54-9999-9999"}
    text = _file(issuer, payload())
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("Subject: "))
    lines[at] = f"Subject: {INSTALLATION},{OTHER}\n"  # the same file made out for another device
    with pytest.raises(BadSignature):
        ac.add_license_file("".join(lines), ring, T0, installation=INSTALLATION, devices={OTHER})
