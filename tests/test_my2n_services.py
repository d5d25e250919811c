"""My2N sites, apartments and devices through the services (SPEC §4), first step: the paid-device
limit, the site dashboard, the migration check and the model change."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from conftest import World
from entitle.actors import operator
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.my2n import board
from entitle.my2n import services as my2n
from entitle.my2n.models import SiteDevice
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import ApiToken, Role
from helpers import join, org_with_owner

VENDOR = operator("2n-support")


def refused(error: str, fn, *args, **kwargs) -> EntitleError:  # type: ignore[no-untyped-def]
    with pytest.raises(EntitleError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == error and exc.value.message
    return exc.value


def test_the_seed_dashboard_five_apartments_one_empty_four_to_order(world: World) -> None:  # R-MY-3
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Block A", actor=ann, now=now)
        apts = [my2n.create_apartment(s, site=site, name=f"A{i}", actor=ann, now=now) for i in range(1, 6)]
        my2n.add_device(s, site=site, serial="IC-1", kind="intercom", actor=ann, now=now)
        for i, apt in enumerate(apts[:4]):
            my2n.add_device(s, site=site, serial=f"PHONE-{i}", kind="phone", apartment_id=apt.id, actor=ann, now=now)
        shown = board.dashboard(s, site=site, now=now)
    assert (shown["apartments"], shown["needing_license"]) == (5, 4)
    assert shown["order"] == {"part_number": "9137958", "quantity": 4}  # an EU organization
    assert (shown["not_paid"], shown["lapsed"]) == (["A1", "A2", "A3", "A4"], [])  # never paid: not lapsed


def test_local_mode_and_free_answering_units_need_no_license_and_us_sites_order_02683(world: World) -> None:  # R-MY-3
    org_id, owner = org_with_owner(world, "Tower", "bob@example.com", region="US")
    bob = world.actor(owner.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Tower", actor=bob, now=now)
        a, b = (my2n.create_apartment(s, site=site, name=n, actor=bob, now=now) for n in ("1A", "1B"))
        my2n.add_device(s, site=site, serial="TAB-1", kind="tablet", apartment_id=a.id, local_mode=True,
                        actor=bob, now=now)
        my2n.add_device(s, site=site, serial="AU-1", kind="answering_unit", apartment_id=b.id, actor=bob, now=now)
        shown = board.dashboard(s, site=site, now=now)
        assert shown["needing_license"] == 0 and shown["order"] == {"part_number": "02683-001", "quantity": 0}
        my2n.set_local_mode(s, site=site, serial="TAB-1", local_mode=False, actor=bob, now=now)
        assert board.dashboard(s, site=site, now=now)["needing_license"] == 1


def test_a_fifth_paid_device_is_refused_whoever_adds_it(world: World) -> None:  # R-MY-2
    org_id, owner = org_with_owner(world, "Flats", "ann@example.com")
    admin = join(world, org_id, "apt-admin@example.com", Role.admin)
    ann, apt_admin = world.actor(owner.user), world.actor(admin.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Flats", actor=ann, now=now)
        apt = my2n.create_apartment(s, site=site, name="2B", actor=ann, now=now)
        for i, kind in enumerate(("phone", "tablet", "third_party", "phone")):
            my2n.add_device(s, site=site, serial=f"D{i}", kind=kind, apartment_id=apt.id, actor=ann, now=now)
        my2n.add_device(s, site=site, serial="AU", kind="answering_unit", apartment_id=apt.id, actor=ann, now=now)
        my2n.add_device(s, site=site, serial="LOOSE", kind="phone", actor=ann, now=now)
        my2n.add_device(s, site=site, serial="IC", kind="intercom", actor=ann, now=now)
        site_id, apt_id = site.id, apt.id
    for actor in (ann, apt_admin):
        with transaction(world.ctx.sessions) as s:
            site = my2n.get_site(s, org_id, site_id)
            err = refused("apartment_paid_device_limit", my2n.add_device, s, site=site, serial="D5", kind="tablet",
                          apartment_id=apt_id, actor=actor, now=now)
            assert "create another apartment" in err.message and err.detail["limit"] == 4
            refused("apartment_paid_device_limit", my2n.assign_device, s, site=site, serial="LOOSE",
                    apartment_id=apt_id, actor=actor, now=now)
            refused("intercom_not_in_apartment", my2n.assign_device, s, site=site, serial="IC",
                    apartment_id=apt_id, actor=actor, now=now)
    with world.ctx.sessions() as s:
        assert s.scalar(select(SiteDevice.apartment_id).where(SiteDevice.serial == "LOOSE")) is None
        assert my2n.paid_devices(s, my2n.get_apartment(s, my2n.get_site(s, org_id, site_id), apt_id)) == 4


def test_parallel_adds_never_put_a_fifth_paid_device_in_an_apartment(world: World) -> None:  # R-MY-2
    org_id, owner = org_with_owner(world, "Race", "ann@example.com")
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Race", actor=ann, now=world.now)
        apt = my2n.create_apartment(s, site=site, name="1", actor=ann, now=world.now)
        site_id, apt_id = site.id, apt.id
    results: list[str] = []
    barrier = threading.Barrier(8)

    def add(i: int) -> None:
        barrier.wait()
        try:
            with transaction(world.ctx.sessions) as s:
                my2n.add_device(s, site=my2n.get_site(s, org_id, site_id), serial=f"P{i}", kind="phone",
                                apartment_id=apt_id, actor=ann, now=world.now)
            results.append("ok")
        except EntitleError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["apartment_paid_device_limit"] * 4 + ["ok"] * 4


def test_migration_is_refused_while_devices_are_unassigned_then_logs_everyone_out(world: World) -> None:  # R-MY-4 R-MY-1
    org_id, owner = org_with_owner(world, "Legacy", "ann@example.com")
    ann = world.actor(owner.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        refused("model_retired", my2n.create_site, s, org_id=org_id, name="New custom", model="custom",
                custom_expires_at=now + timedelta(days=60), actor=ann, now=now)
        site = my2n.create_site(s, org_id=org_id, name="Old", model="custom", custom_expires_at=now + timedelta(days=60),
                                actor=VENDOR, now=now)
        apt = my2n.create_apartment(s, site=site, name="1", actor=ann, now=now)
        my2n.add_device(s, site=site, serial="IC", kind="intercom", actor=ann, now=now)
        my2n.add_device(s, site=site, serial="PH", kind="phone", actor=ann, now=now)
        my2n.add_device(s, site=site, serial="AU", kind="answering_unit", actor=ann, now=now)
        site_id, apt_id = site.id, apt.id
    with world.ctx.sessions() as s:
        site = my2n.get_site(s, org_id, site_id)
        assert {d["serial"] for d in my2n.migration_check(s, site=site)} == {"PH", "AU"}  # not the intercom
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        refused("vendor_support_only", my2n.change_model, s, site=site, model="apartment", actor=ann, now=now)
        err = refused("migration_devices_unassigned", my2n.change_model, s, site=site, model="apartment",
                      actor=VENDOR, now=now)
        assert err.detail["count"] == 2
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        for serial in ("PH", "AU"):
            my2n.assign_device(s, site=site, serial=serial, apartment_id=apt_id, actor=ann, now=now)
        assert my2n.migration_check(s, site=site) == []
        out = my2n.change_model(s, site=site, model="apartment", actor=VENDOR, now=now)
        assert out["site"]["model"] == "apartment" and out["users_logged_out"] == 1
    with world.ctx.sessions() as s:
        assert tenancy.user_for_token(s, owner.token) is None  # logged out: the app token is revoked
        assert s.scalar(select(ApiToken.revoked_at).where(ApiToken.user_id == owner.user.id)) is not None


def _site_with_apartments(world: World, region: str = "EU"):  # type: ignore[no-untyped-def]
    org_id, owner = org_with_owner(world, f"Vouchers {region}", f"v-{region.lower()}@example.com", region=region)
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Site", actor=ann, now=world.now)
        a = my2n.create_apartment(s, site=site, name="A", actor=ann, now=world.now)
        b = my2n.create_apartment(s, site=site, name="B", actor=ann, now=world.now)
        my2n.add_device(s, site=site, serial="A-PH", kind="phone", apartment_id=a.id, actor=ann, now=world.now)
        for i in range(3):
            my2n.add_device(s, site=site, serial=f"B-{i}", kind="tablet", apartment_id=b.id, actor=ann, now=world.now)
        return org_id, ann, site.id, a.id, b.id


def test_vouchers_fill_the_credit_pool_and_pay_apartment_years(world: World) -> None:  # R-MY-5 R-MY-6
    org_id, ann, site_id, a, b = _site_with_apartments(world)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        _, apt_codes = my2n.mint_vouchers(s, part_number="9137958", name="Distributor X", years=1, subscriptions=2,
                                          scope="apartment", actor=VENDOR, now=now)
        _, dev_codes = my2n.mint_vouchers(s, part_number="9137958", name="Per device", years=2, subscriptions=2,
                                          scope="device", actor=VENDOR, now=now)
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        my2n.redeem_voucher(s, site=site, code=apt_codes[0], actor=ann, now=now)
        out = my2n.redeem_voucher(s, site=site, code=dev_codes[0], actor=ann, now=now)
        assert out["pool"] == {"apartment_years": 1, "device_years": 2}
        # Apartment A: one apartment-year; paid through a year from now.
        paid = my2n.pay_from_credit(s, site=site, apartment_id=a, actor=ann, now=now)
        assert paid["paid_through"] == now.replace(year=now.year + 1).isoformat()
        assert paid["pool"] == {"apartment_years": 0, "device_years": 2}
        # Apartment B has 3 billable tablets: 2 device-years are not enough.
        err = refused("credit_insufficient", my2n.pay_from_credit, s, site=site, apartment_id=b, actor=ann, now=now)
        assert err.detail["needed_device_years"] == 3
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        my2n.redeem_voucher(s, site=site, code=dev_codes[1], actor=ann, now=now)
        paid = my2n.pay_from_credit(s, site=site, apartment_id=b, actor=ann, now=now)
        assert paid["pool"] == {"apartment_years": 0, "device_years": 1}
        shown = board.dashboard(s, site=site, now=now)
        assert shown["lapsed"] == [] and shown["needing_license"] == 2
        # 30 days before the year ends both show as lapsing soon; at its end they lapse (R-MY-6).
        soon = now.replace(year=now.year + 1) - timedelta(days=30)
        assert board.dashboard(s, site=site, now=soon)["lapsing_soon"] == ["A", "B"]
        assert board.dashboard(s, site=site, now=now.replace(year=now.year + 1))["lapsed"] == ["A", "B"]
        from entitle.ledger import services as ledger
        assert ledger.unbalanced_transactions(s) == [] and ledger.negative_accounts(s) == []


def test_a_voucher_is_used_once_region_bound_and_valid_three_years(world: World) -> None:  # R-MY-5
    org_id, ann, site_id, _a, _b = _site_with_apartments(world)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        _, codes = my2n.mint_vouchers(s, part_number="9137958", name="X", years=1, subscriptions=3,
                                      scope="apartment", actor=VENDOR, now=now)
        _, us_codes = my2n.mint_vouchers(s, part_number="02683-001", name="US", years=1, subscriptions=1,
                                         scope="apartment", actor=VENDOR, now=now)
        refused("voucher_scope_invalid", my2n.mint_vouchers, s, part_number="9137958", name="Y", years=1,
                subscriptions=1, scope="floor", actor=VENDOR, now=now)
    with transaction(world.ctx.sessions) as s:
        my2n.redeem_voucher(s, site=my2n.get_site(s, org_id, site_id), code=codes[0], actor=ann, now=now)
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        refused("key_already_redeemed", my2n.redeem_voucher, s, site=site, code=codes[0], actor=ann, now=now)
        refused("key_wrong_region", my2n.redeem_voucher, s, site=site, code=us_codes[0], actor=ann, now=now)
        three_years = now.replace(year=now.year + 3)
        my2n.redeem_voucher(s, site=site, code=codes[1], actor=ann, now=three_years - timedelta(microseconds=1))
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        refused("voucher_expired", my2n.redeem_voucher, s, site=site, code=codes[2], actor=ann, now=three_years)
        assert my2n.credit_pool(s, site) == {"apartment_years": 2, "device_years": 0}


def test_a_lapsed_apartment_stops_its_paid_devices_but_not_intercoms_or_answering_units(world: World) -> None:
    # R-MY-6: at the paid-through moment (not a microsecond before) the apartment's billable
    # devices stop; intercoms, 2N answering units and devices in local mode keep working.
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Block", actor=ann, now=now)
        apt = my2n.create_apartment(s, site=site, name="A1", actor=ann, now=now)
        my2n.add_device(s, site=site, serial="IC", kind="intercom", actor=ann, now=now)
        for serial, kind, local in (("AU", "answering_unit", False), ("PH", "phone", False), ("TB", "tablet", True)):
            my2n.add_device(s, site=site, serial=serial, kind=kind, apartment_id=apt.id, local_mode=local,
                            actor=ann, now=now)
        apt.paid_through = now + timedelta(days=10)
        site_id, end = site.id, apt.paid_through

    def works(at):  # type: ignore[no-untyped-def]
        with world.ctx.sessions() as s:
            site = my2n.get_site(s, org_id, site_id)
            return {d["serial"]: d["works"] for d in my2n.devices_with_state(s, site=site, now=at)}

    assert works(end - timedelta(microseconds=1)) == {"AU": True, "IC": True, "PH": True, "TB": True}
    assert works(end) == {"AU": True, "IC": True, "PH": False, "TB": True}
