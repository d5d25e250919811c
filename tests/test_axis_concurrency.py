"""Allocations racing for one wallet (R-AX-5, R-AX-7, R-AX-10, R-CORE-5): threads released
together by a barrier, each in its own session and transaction, as concurrent requests would be.
The organization lock serialises them: together they never take more than the wallet held, the
losers are told how many units are missing, and the ledger stays balanced."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import World
from entitle.actors import operator
from entitle.axis import services as axis
from entitle.axis.models import Allocation
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.history.models import HistoryEntry
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from helpers import wallet_of

OP = operator("axis-race")
P = "axis-camera-station"
S0 = datetime(2026, 3, 1, 9, tzinfo=UTC)  # year 0: 2026-03-01 .. 2027-03-01, 365 days
DAY = timedelta(days=1)


def at_once(world: World, n: int, action: Callable[[Session, int], Any]) -> list[Any]:
    """Run ``action`` in n threads, each in its own transaction, all starting together. Returns
    each thread's result or the EntitleError that refused it."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        try:
            barrier.wait()
            with transaction(world.ctx.sessions) as s:
                results[i] = action(s, i)
        except EntitleError as exc:
            results[i] = exc
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = ("crashed", exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    crashed = [r for r in results if isinstance(r, tuple)]
    assert not crashed, crashed[:3]
    return results


def setup_org(world: World, *, devices: int, units: int, part: str = "AXIS-ACS-CORE-1Y") -> int:
    org = world.org("Race")
    [code] = world.mint(part, quantity=units)
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid=f"ACS-RACE-{org}", name="HQ", product_code=P, actor=OP,
                                      now=S0)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=OP, now=S0,
                         devices=[axis.NewDevice(f"CAM-{i}", "core") for i in range(devices)])
        axis.start_subscription(s, org_id=org, product_code=P, actor=OP, now=S0)
        keys.redeem(s, org_id=org, typed_key=code, actor=OP, now=S0)
    return org


def outcomes(results: list[Any]) -> Counter[str]:
    return Counter("ok" if not isinstance(r, EntitleError) else r.code for r in results)


def assert_ledger_sound(world: World) -> None:
    with world.ctx.sessions() as s:
        assert ledger.unbalanced_transactions(s) == []
        assert ledger.negative_accounts(s) == []
        assert ledger.running_balance_mismatches(s) == []


def allocated_to(world: World, org: int, year: int) -> int:
    with world.ctx.sessions() as s:
        product = axis.product_by_code(s, P)
        return axis.allocated(s, org, product.id).get("core", {}).get(year, 0)


def history_count(world: World, org: int, action: str) -> int:
    with world.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(HistoryEntry)
                            .where(HistoryEntry.org_id == org, HistoryEntry.action == action)) or 0)


def test_parallel_allocations_never_take_more_than_the_wallet_holds(world: World) -> None:  # R-AX-5
    # 10 units; 8 allocations of 3 at once (inside the grace: no compensation). Whatever the
    # order, exactly three fit (10 -> 7 -> 4 -> 1); each of the five others finds 1 unit left.
    org = setup_org(world, devices=24, units=10)
    results = at_once(world, 8, lambda s, i: axis.allocate(
        s, org_id=org, product_code=P, actor=OP, now=S0 + DAY, lines=[axis.Line("core", i % 2, 3)]))
    assert outcomes(results) == {"ok": 3, "insufficient_units": 5}
    for refused in (r for r in results if isinstance(r, EntitleError)):
        assert refused.detail["missing"] == 2
        assert refused.detail["lines"] == [{"license_type": "core", "term_years": 1, "needed": 3, "available": 1,
                                            "missing": 2}]
    assert allocated_to(world, org, 0) + allocated_to(world, org, 1) == 9
    assert wallet_of(world.ctx.engine, org) == {"AXIS-ACS-CORE-1Y": 1}
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.sum(Allocation.units)).where(Allocation.org_id == org)) == 9
    assert history_count(world, org, "axis.allocated") == 3
    assert_ledger_sound(world)


def test_parallel_late_allocations_share_the_compensation_correctly(world: World) -> None:  # R-AX-7 R-AX-5
    # 20 units; 8 allocations of 4 at once on day 100, after the grace: each gives back
    # 4 x 100 = 400 license-days (a unit is 365). In any order the wallet and the kept remainder go
    # 20/0 -> 17/35 -> 14/70 -> 11/105 -> 8/140 -> 5/175 -> 2/210: six fit, the two others find 2 units.
    org = setup_org(world, devices=30, units=20)
    results = at_once(world, 8, lambda s, i: axis.allocate(
        s, org_id=org, product_code=P, actor=OP, now=S0 + 100 * DAY, lines=[axis.Line("core", 0, 4)]))
    assert outcomes(results) == {"ok": 6, "insufficient_units": 2}
    assert all(r.detail["missing"] == 2 for r in results if isinstance(r, EntitleError))
    won = [r["allocations"][0] for r in results if not isinstance(r, EntitleError)]
    assert all(a["compensation_license_days"] == 400 for a in won)
    assert sum(a["compensation_units"] for a in won) == 6
    assert allocated_to(world, org, 0) == 24
    with world.ctx.sessions() as s:
        st = axis.status(s, org_id=org, product=axis.product_by_code(s, P), now=S0 + 100 * DAY)
    assert st["wallet"]["remainder_license_days"] == {"AXIS-ACS-CORE-1Y": 210}
    assert sum(lot["units"] for lot in st["wallet"]["lots"]) == 2
    assert wallet_of(world.ctx.engine, org) == {"AXIS-ACS-CORE-1Y": 2}
    assert_ledger_sound(world)


def test_parallel_expansions_of_one_recorder_never_overdraw(world: World) -> None:  # R-AX-10
    # 5 expansion units; 6 allocations of 2 to the same recorder at once: two fit, 1 unit stays.
    org = setup_org(world, devices=1, units=5, part="AXIS-ACS-CORE-EXP")
    [preloaded] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    with transaction(world.ctx.sessions) as s:
        axis.register_hardware(s, org_id=org, product_code=P, serial="S30-RACE", preloaded_key=preloaded, actor=OP,
                               now=S0)
    results = at_once(world, 6, lambda s, i: axis.allocate_to_hardware(
        s, org_id=org, serial="S30-RACE", units=2, actor=OP, now=S0 + DAY))
    assert outcomes(results) == {"ok": 2, "insufficient_units": 4}
    assert all(r.detail == {"missing": 1, "available": 1, "needed": 2}
               for r in results if isinstance(r, EntitleError))
    with world.ctx.sessions() as s:
        hw = axis.get_hardware(s, org, "S30-RACE")
        assert axis.hardware_licenses(s, hw) == 8 + 4
    assert wallet_of(world.ctx.engine, org) == {"AXIS-ACS-CORE-EXP": 1}
    assert_ledger_sound(world)
