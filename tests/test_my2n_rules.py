"""My2N apartment license rules as plain code (SPEC §4, seed 002), with figures worked by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitle.my2n import rules
from entitle.my2n.rules import Apartment, Credit, Device, Refusal, Site, VoucherBatch


def t(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


NOW = t(2026, 3, 10, 12)
SECOND = timedelta(seconds=1)


def phone(device_id: int, apartment_id: int | None = None, *, local: bool = False) -> Device:
    return Device(device_id, "phone", apartment_id, local_mode=local)


# --- R-MY-1 -------------------------------------------------------------------------------------

def test_custom_model_cannot_be_chosen() -> None:
    # R-MY-1
    assert rules.check_model_choice("apartment") == "apartment"
    with pytest.raises(Refusal) as retired:
        rules.check_model_choice("custom")
    assert (retired.value.code, retired.value.status) == ("model_retired", 409)
    assert "apartment model" in retired.value.message
    with pytest.raises(Refusal) as unknown:
        rules.check_model_choice("gold")
    assert (unknown.value.code, unknown.value.status) == ("model_unknown", 400)


def test_custom_site_cannot_be_prolonged_and_shows_its_expiry() -> None:
    # R-MY-1: a custom site expiring 2026-04-09 12:00, seen on 2026-03-10 12:00: 30 days left.
    custom = Site(1, "custom", "EU", custom_expires_at=t(2026, 4, 9, 12))
    with pytest.raises(Refusal) as refused:
        rules.check_prolongation(custom)
    assert refused.value.code == "model_retired"
    assert "before 2026-04-09" in refused.value.message
    rules.check_prolongation(Site(2, "apartment", "EU"))

    assert rules.custom_expiry(custom, NOW) == rules.CustomExpiry(t(2026, 4, 9, 12), expired=False, days_left=30)
    assert rules.custom_expiry(custom, t(2026, 4, 9, 11)) == rules.CustomExpiry(t(2026, 4, 9, 12), False, 0)
    assert rules.custom_expiry(custom, t(2026, 4, 9, 12)) == rules.CustomExpiry(t(2026, 4, 9, 12), True, 0)
    assert rules.custom_expiry(Site(2, "apartment", "EU"), NOW) is None
    with pytest.raises(ValueError):
        rules.custom_expiry(Site(3, "custom", "EU"), NOW)


# --- R-MY-2 -------------------------------------------------------------------------------------

def test_fifth_paid_device_is_refused_with_a_way_out() -> None:
    # R-MY-2: phone, tablet, third-party device, local-mode phone = 4 paid; the answering unit is free.
    full = [phone(1, 7), Device(2, "tablet", 7), Device(3, "third_party", 7), phone(4, 7, local=True),
            Device(5, "answering_unit", 7)]
    with pytest.raises(Refusal) as refused:
        rules.check_assignment(phone(6), full)
    assert refused.value.code == "apartment_paid_device_limit"
    assert "create another apartment" in refused.value.message
    assert (refused.value.detail["paid_devices"], refused.value.detail["limit"]) == (4, 4)
    rules.check_assignment(Device(6, "answering_unit"), full)  # free devices are not limited
    rules.check_assignment(Device(2, "tablet", 7), full)  # one of the four, assigned again
    rules.check_assignment(phone(6), full[1:])  # three paid: a fourth fits


def test_intercom_never_joins_an_apartment() -> None:
    # R-MY-2
    with pytest.raises(Refusal) as refused:
        rules.check_assignment(Device(9, "intercom"), [])
    assert refused.value.code == "intercom_not_in_apartment"


@given(st.lists(st.tuples(st.sampled_from(["intercom", "answering_unit", "phone", "tablet", "third_party"]),
                          st.integers(0, 2), st.booleans())))
def test_paid_device_limit_holds_for_any_sequence_of_adds(adds: list[tuple[rules.DeviceKind, int, bool]]) -> None:
    # R-MY-2: whatever is added in whatever order (the check takes no actor: the same for site
    # and apartment admins), no apartment ends with more than 4 paid devices, and a paid device
    # is refused exactly when its apartment already holds 4.
    devices: list[Device] = []
    for device_id, (kind, apartment_id, local) in enumerate(adds):
        device = Device(device_id, kind, apartment_id, local)
        inside = rules.devices_of(apartment_id, devices)
        paid_before = sum(map(rules.is_paid_device, inside))
        try:
            rules.check_assignment(device, inside)
        except Refusal as refusal:
            assert kind == "intercom" or (kind in rules.PAID_KINDS and paid_before == 4), refusal.code
        else:
            assert kind != "intercom" and (kind not in rules.PAID_KINDS or paid_before < 4)
            devices.append(device)
    for apartment_id in range(3):
        assert sum(map(rules.is_paid_device, rules.devices_of(apartment_id, devices))) <= rules.MAX_PAID_DEVICES


# --- R-MY-3 -------------------------------------------------------------------------------------

def test_who_needs_a_license() -> None:
    # R-MY-3
    assert not rules.needs_license([])
    assert not rules.needs_license([Device(1, "answering_unit", 1)])
    assert not rules.needs_license([phone(1, 1, local=True), Device(2, "tablet", 1, local_mode=True)])
    assert rules.needs_license([phone(1, 1, local=True), Device(2, "third_party", 1)])


SEED_APARTMENTS = [Apartment(n) for n in (1, 2, 3, 4, 5)]
SEED_DEVICES = [
    Device(100, "intercom"),
    phone(1, 1),
    Device(2, "tablet", 2), Device(3, "answering_unit", 2),
    Device(4, "third_party", 3),
    phone(5, 4), phone(6, 4, local=True),
    # apartment 5 is empty
]


def test_dashboard_of_the_seed_five_apartments_four_licenses() -> None:
    # R-MY-3: 5 apartments, the fifth empty -> 4 need a license -> order 4 x 9137958 (EU).
    board = rules.dashboard(Site(1, "apartment", "EU"), SEED_APARTMENTS, SEED_DEVICES, NOW)
    assert (board.apartments, board.needing_license, board.part, board.to_order) == (5, 4, "9137958", 4)
    # The fifth with only a local-mode device instead of empty: still 4; a US site orders 02683-001.
    local_only = [*SEED_DEVICES, Device(7, "tablet", 5, local_mode=True)]
    board = rules.dashboard(Site(2, "apartment", "US"), SEED_APARTMENTS, local_only, NOW)
    assert (board.apartments, board.needing_license, board.part, board.to_order) == (5, 4, "02683-001", 4)


@pytest.mark.parametrize(("region", "part"), [("EU", "9137958"), ("LATAM", "9137958"), ("MEA", "9137958"),
                                              ("US", "02683-001"), ("APAC", "02683-001")])
def test_part_to_order_by_region(region: rules.Region, part: str) -> None:
    # R-MY-3
    assert rules.part_number(region) == part


def test_unknown_region_has_no_part() -> None:
    # R-MY-3
    with pytest.raises(ValueError):
        rules.part_number("MARS")  # type: ignore[arg-type]


# --- paid-through (R-MY-5) and lapsing (R-MY-6) -------------------------------------------------

def test_apartment_year_extends_from_the_later_of_now_and_paid_through() -> None:
    # R-MY-5: one calendar year per apartment-year credit.
    assert rules.extend_paid_through(None, NOW) == t(2027, 3, 10, 12)  # never paid: from now
    assert rules.extend_paid_through(t(2026, 6, 1), NOW) == t(2027, 6, 1)  # early: nothing lost
    assert rules.extend_paid_through(t(2025, 12, 1), NOW) == t(2027, 3, 10, 12)  # lapsed: no past bought
    assert rules.extend_paid_through(t(2026, 6, 1), NOW, credits=3) == t(2029, 6, 1)
    # 29 Feb 2028 -> 28 Feb 2029; the next year counts from 28 Feb: 28 Feb 2030.
    assert rules.extend_paid_through(t(2028, 2, 29), t(2028, 1, 1)) == t(2029, 2, 28)
    assert rules.extend_paid_through(t(2028, 2, 29), t(2028, 1, 1), credits=2) == t(2030, 2, 28)
    with pytest.raises(ValueError):
        rules.extend_paid_through(None, NOW, credits=0)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       st.one_of(st.none(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                                         timezones=st.just(UTC))),
       st.integers(1, 5))
def test_credits_extend_by_calendar_years_one_at_a_time(now: datetime, paid_through: datetime | None,
                                                        credits: int) -> None:
    # R-MY-5: n credits at once = n single credits; each adds 365 or 366 days (365 when a
    # 29 February is cut to the 28th), never less, to the later of now and paid-through.
    once = rules.extend_paid_through(paid_through, now, credits)
    step = paid_through
    for _ in range(credits):
        step = rules.extend_paid_through(step, now)
    assert once == step
    base = now if paid_through is None else max(now, paid_through)
    assert 365 * credits <= (once - base).days <= 366 * credits


def test_lapsed_and_lapses_soon() -> None:
    # R-MY-6: lapsed at the paid-through moment; warned 30 days ahead.
    end = t(2026, 6, 1)
    assert rules.is_lapsed(end, end) and rules.is_lapsed(None, NOW)
    assert not rules.is_lapsed(end, end - SECOND)
    assert rules.lapses_soon(end, end - SECOND)
    assert rules.lapses_soon(end, end - timedelta(days=30))
    assert not rules.lapses_soon(end, end - timedelta(days=30) - SECOND)
    assert not rules.lapses_soon(end, end) and not rules.lapses_soon(None, NOW)
    assert rules.lapses_soon(end, end - timedelta(days=40), warning=timedelta(days=45))


def test_a_lapsed_apartment_stops_its_paid_devices_only() -> None:
    # R-MY-6
    devices = [Device(100, "intercom"), phone(1, 1), phone(2, 1, local=True), Device(3, "answering_unit", 1),
               Device(4, "tablet", 1)]
    lapsed = Apartment(1, paid_through=t(2026, 3, 1))
    assert [d.device_id for d in rules.working_devices(lapsed, devices, NOW)] == [2, 3]
    paid = Apartment(1, paid_through=t(2026, 4, 1))
    assert [d.device_id for d in rules.working_devices(paid, devices, NOW)] == [1, 2, 3, 4]
    assert [d.device_id for d in rules.working_devices(Apartment(1), devices, NOW)] == [2, 3]  # never paid
    assert rules.device_works(devices[0], paid_through=None, now=NOW)  # intercoms always


def test_dashboard_warns_before_a_license_lapses() -> None:
    # R-MY-6: on 2026-03-10 12:00 apartment 1 lapsed, 2 lapses on 2026-04-01 (within 30 days),
    # 3 is paid to 2027, 4 was never paid (not paid, not lapsed: issue 14 point 10); 5 needs no
    # license, so its past date warns nothing.
    apartments = [Apartment(1, t(2026, 3, 1)), Apartment(2, t(2026, 4, 1)), Apartment(3, t(2027, 1, 1)),
                  Apartment(4), Apartment(5, t(2026, 3, 20))]
    board = rules.dashboard(Site(1, "apartment", "APAC"), apartments, SEED_DEVICES, NOW)
    assert (board.lapsed, board.not_paid, board.lapsing_soon) == ((1,), (4,), (2,))


# --- R-MY-4 -------------------------------------------------------------------------------------

def test_migration_lists_unassigned_non_intercom_devices() -> None:
    # R-MY-4: the intercom needs no apartment; the answering unit and the tablet do.
    devices = [Device(100, "intercom"), phone(1, 1), Device(2, "answering_unit"), Device(3, "tablet")]
    assert [d.device_id for d in rules.unassigned_devices(devices)] == [2, 3]
    with pytest.raises(Refusal) as refused:
        rules.check_model_change(current="custom", chosen="apartment", devices=devices)
    assert refused.value.code == "migration_devices_unassigned"
    assert (refused.value.detail["count"], refused.value.detail["device_ids"]) == (2, [2, 3])
    assert refused.value.message.startswith("2 devices are not in an apartment yet")

    assigned = [Device(100, "intercom"), phone(1, 1), Device(2, "answering_unit", 1), Device(3, "tablet", 2)]
    assert rules.unassigned_devices(assigned) == []
    assert rules.check_model_change(current="custom", chosen="apartment", devices=assigned) == "apartment"
    with pytest.raises(Refusal) as back:
        rules.check_model_change(current="apartment", chosen="custom", devices=assigned)
    assert back.value.code == "model_retired"


# --- R-MY-5 vouchers ----------------------------------------------------------------------------

def test_voucher_batch_is_valid_three_years_from_purchase() -> None:
    # R-MY-5: bought 2026-03-10 12:00 -> valid until 2029-03-10 12:00, that moment excluded.
    batch = VoucherBatch("Spring", years=1, subscriptions=10, scope="apartment", purchased_at=NOW)
    assert batch.valid_until == t(2029, 3, 10, 12)
    assert batch.is_valid(NOW) and batch.is_valid(batch.valid_until - SECOND)
    assert not batch.is_valid(batch.valid_until) and not batch.is_valid(NOW - SECOND)
    leap = VoucherBatch("Leap", 1, 1, "apartment", purchased_at=t(2028, 2, 29))
    assert leap.valid_until == t(2031, 2, 28)


ALLOWED = {("active", "used"), ("active", "cancelled")}
STATES: list[rules.CodeState] = ["active", "used", "cancelled"]


@pytest.mark.parametrize("current", STATES)
@pytest.mark.parametrize("target", STATES)
def test_voucher_code_transitions(current: rules.CodeState, target: rules.CodeState) -> None:
    # R-MY-5: only Active -> Used and Active -> Cancelled.
    if (current, target) in ALLOWED:
        assert rules.check_code_transition(current, target, by_issuer=True) == target
    else:
        with pytest.raises(Refusal) as refused:
            rules.check_code_transition(current, target, by_issuer=True)
        assert refused.value.code == f"voucher_code_{current}"


def test_only_the_issuer_cancels_a_code() -> None:
    # R-MY-5
    with pytest.raises(Refusal) as refused:
        rules.check_code_transition("active", "cancelled")
    assert (refused.value.code, refused.value.status) == ("voucher_cancel_not_issuer", 403)


def test_redeeming_needs_an_active_code_of_a_valid_batch() -> None:
    # R-MY-5
    batch = VoucherBatch("Spring", 1, 10, "apartment", purchased_at=t(2023, 3, 10, 12))
    rules.check_redeem(batch, "active", t(2026, 3, 10, 11))
    with pytest.raises(Refusal) as expired:
        rules.check_redeem(batch, "active", NOW)
    assert expired.value.code == "voucher_expired" and "2026-03-10" in expired.value.message
    with pytest.raises(Refusal) as used:
        rules.check_redeem(batch, "used", t(2025, 1, 1))
    assert used.value.code == "voucher_code_used"


def test_what_a_code_adds_to_the_credit_pool() -> None:
    # R-MY-5: a 2-year per-apartment code adds 2 apartment-years; a 3-year per-device code 3 device-years.
    assert rules.code_credit(VoucherBatch("A", 2, 5, "apartment", NOW)) == Credit(apartment_years=2)
    assert rules.code_credit(VoucherBatch("D", 3, 5, "device", NOW)) == Credit(device_years=3)
    assert Credit(1, 2) + Credit(3, 4) == Credit(4, 6)


def test_an_apartment_year_costs_one_apartment_year_or_a_device_year_per_billable_device() -> None:
    # R-MY-5: 3 billable devices (the local-mode phone and the answering unit are not);
    # pool 1 apartment-year + 5 device-years -> (0, 5) -> (0, 2) -> 2 < 3 refused.
    apartment = [phone(1, 1), Device(2, "tablet", 1), Device(3, "third_party", 1), phone(4, 1, local=True),
                 Device(5, "answering_unit", 1)]
    pool = rules.charge_apartment_year(Credit(1, 5), apartment)
    assert pool == Credit(0, 5)
    pool = rules.charge_apartment_year(pool, apartment)
    assert pool == Credit(0, 2)
    with pytest.raises(Refusal) as short:
        rules.charge_apartment_year(pool, apartment)
    assert short.value.code == "credit_insufficient"
    assert (short.value.detail["needed_device_years"], short.value.detail["device_years"]) == (3, 2)
    with pytest.raises(ValueError):
        rules.charge_apartment_year(Credit(1, 0), [phone(4, 1, local=True)])


def test_refusal_details_are_json_ready() -> None:
    # R-MY-1, R-MY-5: refusals reach the API as they are.
    for call in (lambda: rules.check_prolongation(Site(1, "custom", "EU", custom_expires_at=NOW)),
                 lambda: rules.check_redeem(VoucherBatch("S", 1, 1, "device", t(2020, 1, 1)), "active", NOW)):
        with pytest.raises(Refusal) as refused:
            call()
        json.dumps(refused.value.to_dict())
