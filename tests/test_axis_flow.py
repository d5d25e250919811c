"""AXIS licensing through the services: register, start, redeem, allocate, compensation (smoke)."""

from __future__ import annotations

from datetime import timedelta

from entitle.actors import operator
from entitle.axis import services as axis
from entitle.db import transaction
from entitle.keys import services as keys
from entitle.ledger import services as ledger

from conftest import World

OP = operator()
P = "axis-camera-station"


def test_register_start_redeem_allocate_fully_licensed(world: World) -> None:  # R-AX-1 R-AX-3 R-AX-5
    org = world.org("Cams")
    codes = world.mint("AXIS-ACS-CORE-1Y", count=1, quantity=10)
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid="ACS-1", name="HQ", product_code=P, actor=OP, now=world.now)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=OP, now=world.now,
                         devices=[axis.NewDevice(f"CAM-{i}", "core") for i in range(8)])
        product = axis.product_by_code(s, P)
        assert axis.status(s, org_id=org, product=product, now=world.now)["state"] == "trial"
        axis.start_subscription(s, org_id=org, product_code=P, actor=OP, now=world.now)
        assert axis.status(s, org_id=org, product=product, now=world.now)["state"] == "in_grace"
        keys.redeem(s, org_id=org, typed_key=codes[0], actor=OP, now=world.now)
        out = axis.allocate(s, org_id=org, product_code=P, actor=OP, now=world.now,
                            lines=[axis.Line("core", 0, 8)])
        assert out["state"] == "fully_licensed"
        st = axis.status(s, org_id=org, product=product, now=world.now)
        assert st["wallet"]["lots"][0]["units"] == 2
        assert ledger.unbalanced_transactions(s) == [] and ledger.negative_accounts(s) == []


def test_allocation_after_grace_is_compensated(world: World) -> None:  # R-AX-7
    org = world.org("Late")
    codes = world.mint("AXIS-ACS-CORE-1Y", count=1, quantity=10)
    start = world.now
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid="ACS-2", name="HQ", product_code=P, actor=OP, now=start)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=OP, now=start,
                         devices=[axis.NewDevice(f"CAM-{i}", "core") for i in range(10)])
        axis.start_subscription(s, org_id=org, product_code=P, actor=OP, now=start)
        keys.redeem(s, org_id=org, typed_key=codes[0], actor=OP, now=start)
        later = start + timedelta(days=100)
        product = axis.product_by_code(s, P)
        assert axis.status(s, org_id=org, product=product, now=later)["state"] == "not_licensed"
        out = axis.allocate(s, org_id=org, product_code=P, actor=OP, now=later, lines=[axis.Line("core", 0, 10)])
        # 10 units x 100 days = 1000 license-days; the year 2026-01-15..2027-01-15 has 365 days:
        # 2 whole units (730) and 270 license-days remain.
        assert out["allocations"][0]["compensation_license_days"] == 1000
        assert out["allocations"][0]["compensation_units"] == 2
        st = axis.status(s, org_id=org, product=product, now=later)
        assert st["state"] == "fully_licensed"
        assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 270}
        assert [lot["units"] for lot in st["wallet"]["lots"]] == [2]
